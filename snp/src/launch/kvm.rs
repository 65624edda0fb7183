//! The KVM launch backend: [`LaunchBackend`] on top of the ioctl seam ([`SnpVmIoctls`]).
//!
//! Everything that decides *what* is sent to KVM lives here and is exercised by the recording
//! fake: struct contents and the LAUNCH_UPDATE loop over partial progress. When firmware
//! rejects a CPUID page, KVM copies the corrected table back into the source buffer and fails
//! the call (`amd-memory-encryption.rst`, SNP_LAUNCH_UPDATE); the buffer is the range's own
//! data, so the single retry done by [`super::launch`] issues the corrected table.

use super::kvm_sys::{SnpVmIoctls, SysError, KVM_HC_MAP_GPA_RANGE};
use super::{FinishParams, LaunchBackend, LaunchError, RamSlot};
use crate::page_info::{LaunchDigest, PageType, PAGE_SIZE};
use crate::plan::{LaunchRange, PAGE_SIZE_U64};
use crate::policy::GuestPolicy;
use crate::vp_context::VcpuState;
use kvm_bindings::{
    kvm_create_guest_memfd, kvm_memory_attributes, kvm_sev_init, kvm_sev_snp_launch_finish,
    kvm_sev_snp_launch_start, kvm_sev_snp_launch_update, kvm_userspace_memory_region2,
    KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_MEM_GUEST_MEMFD,
};

/// GHCB protocol version requested from KVM_SEV_INIT2 (SNP needs version 2).
pub const GHCB_VERSION: u16 = 2;

fn to_launch_error(e: SysError) -> LaunchError {
    if e.fw_error != 0 {
        LaunchError::Firmware {
            op: e.op,
            status: e.fw_error,
            detail: format!("errno {}", e.errno),
        }
    } else {
        LaunchError::Sys {
            op: e.op,
            source: std::io::Error::from_raw_os_error(e.errno),
        }
    }
}

/// The KVM SNP launch backend.
pub struct KvmBackend<S: SnpVmIoctls> {
    sys: S,
    /// Enable `KVM_EXIT_SNP_REQ_CERTS` at init (a certificate table is configured).
    req_certs: bool,
}

impl<S: SnpVmIoctls> KvmBackend<S> {
    /// Drive `sys`.
    pub fn new(sys: S) -> Self {
        Self {
            sys,
            req_certs: false,
        }
    }

    /// Also enable the certificate-request exit, right after INIT2 (before the vCPUs).
    pub fn with_req_certs(self) -> Self {
        Self {
            req_certs: true,
            ..self
        }
    }

    /// The seam, for the run loop after launch (or for inspecting a fake).
    pub fn into_inner(self) -> S {
        self.sys
    }

    /// One LAUNCH_UPDATE call sequence for the remaining part described by `upd`, looping
    /// while KVM reports partial progress.
    fn update_loop(
        &mut self,
        upd: &mut kvm_sev_snp_launch_update,
        data: &mut [u8],
    ) -> Result<(), SysError> {
        while upd.len != 0 {
            let before = upd.len;
            self.sys.snp_launch_update(upd, data)?;
            if upd.len >= before {
                return Err(SysError {
                    op: "KVM_SEV_SNP_LAUNCH_UPDATE (no progress)",
                    errno: libc::EIO,
                    fw_error: 0,
                });
            }
            if upd.len != 0 {
                log::debug!(
                    "SNP_LAUNCH_UPDATE partial progress: {} bytes left at gfn {:#x}",
                    upd.len,
                    upd.gfn_start
                );
            }
        }
        Ok(())
    }
}

fn kvm_page_type(t: PageType) -> Result<u8, LaunchError> {
    let v = match t {
        PageType::Normal => kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_NORMAL,
        PageType::Zero => kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_ZERO,
        PageType::Unmeasured => kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_UNMEASURED,
        PageType::Secrets => kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_SECRETS,
        PageType::Cpuid => kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_CPUID,
        PageType::Vmsa => {
            return Err(LaunchError::Refused {
                op: "KVM_SEV_SNP_LAUNCH_UPDATE",
                reason: "VMSA pages are measured by KVM itself at LAUNCH_FINISH".into(),
            })
        }
    };
    Ok(v as u8)
}

impl<S: SnpVmIoctls> LaunchBackend for KvmBackend<S> {
    fn init(&mut self, vmsa_features: u64) -> Result<(), LaunchError> {
        self.sys
            .enable_exit_hypercall(1 << KVM_HC_MAP_GPA_RANGE)
            .map_err(to_launch_error)?;
        let mut init = kvm_sev_init {
            vmsa_features,
            flags: 0,
            ghcb_version: GHCB_VERSION,
            ..Default::default()
        };
        self.sys.sev_init2(&mut init).map_err(to_launch_error)?;
        if self.req_certs {
            self.sys.snp_enable_req_certs().map_err(to_launch_error)?;
        }
        Ok(())
    }

    fn add_ram(&mut self, ram: RamSlot) -> Result<(), LaunchError> {
        let fd = self
            .sys
            .create_guest_memfd(&kvm_create_guest_memfd {
                size: ram.region.size,
                flags: 0,
                ..Default::default()
            })
            .map_err(to_launch_error)?;
        let mut region = kvm_userspace_memory_region2 {
            slot: ram.slot,
            flags: KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: ram.region.gpa,
            memory_size: ram.region.size,
            userspace_addr: 0,
            guest_memfd_offset: 0,
            guest_memfd: fd,
            ..Default::default()
        };
        self.sys
            .set_user_memory_region2(&mut region)
            .map_err(to_launch_error)
    }

    fn set_private(&mut self, gpa: u64, size: u64) -> Result<(), LaunchError> {
        self.sys
            .set_memory_attributes(&kvm_memory_attributes {
                address: gpa,
                size,
                attributes: u64::from(KVM_MEMORY_ATTRIBUTE_PRIVATE),
                flags: 0,
            })
            .map_err(to_launch_error)
    }

    fn create_vcpu(&mut self, index: u32, state: &VcpuState) -> Result<(), LaunchError> {
        self.sys.create_vcpu(index, state).map_err(to_launch_error)
    }

    fn start(&mut self, policy: GuestPolicy) -> Result<(), LaunchError> {
        let mut start = kvm_sev_snp_launch_start {
            policy: policy.0,
            ..Default::default()
        };
        self.sys
            .snp_launch_start(&mut start)
            .map_err(to_launch_error)
    }

    fn update(&mut self, range: &mut LaunchRange) -> Result<(), LaunchError> {
        let op = "KVM_SEV_SNP_LAUNCH_UPDATE";
        if range.gpa % PAGE_SIZE_U64 != 0
            || range.data.is_empty()
            || range.data.len() % PAGE_SIZE != 0
        {
            return Err(LaunchError::Refused {
                op,
                reason: format!(
                    "range at {:#x} of {} bytes is not whole pages",
                    range.gpa,
                    range.data.len()
                ),
            });
        }
        let mut upd = kvm_sev_snp_launch_update {
            gfn_start: range.gpa / PAGE_SIZE_U64,
            uaddr: 0,
            len: range.data.len() as u64,
            type_: kvm_page_type(range.page_type)?,
            ..Default::default()
        };
        self.update_loop(&mut upd, &mut range.data)
            .map_err(to_launch_error)
    }

    fn finish(&mut self, params: &FinishParams) -> Result<Option<LaunchDigest>, LaunchError> {
        let mut finish = kvm_sev_snp_launch_finish {
            host_data: params.host_data.0,
            ..Default::default()
        };
        let (block, auth) = match &params.id {
            Some((block, auth)) => {
                finish.id_block_en = 1;
                finish.auth_key_en = u8::from(auth.author_key_en);
                (Some(block.to_bytes()), Some(auth.to_bytes()))
            }
            None => (None, None),
        };
        self.sys
            .snp_launch_finish(&mut finish, block.as_ref(), auth.as_deref())
            .map_err(to_launch_error)?;
        Ok(None)
    }
}
