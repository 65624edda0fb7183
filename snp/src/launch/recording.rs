//! A recording fake of the ioctl seam: it keeps every call with the exact bytes of the uAPI
//! struct KVM would receive, and can play KVM's partial progress and the firmware's CPUID
//! correction, so tests check the launch sequence byte for byte without SNP hardware.
//!
//! The byte encodings follow the Linux uAPI headers (`include/uapi/linux/kvm.h`); the tests
//! assert every offset against the `kvm-bindings` definitions.

use super::kvm_sys::{SnpVmIoctls, SysError};
use crate::id_block::{ID_AUTH_SIZE, ID_BLOCK_SIZE};
use crate::vp_context::VcpuState;
use kvm_bindings::{
    kvm_create_guest_memfd, kvm_memory_attributes, kvm_sev_init, kvm_sev_snp_launch_finish,
    kvm_sev_snp_launch_start, kvm_sev_snp_launch_update, kvm_userspace_memory_region2,
};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Ioctl or command name.
    pub op: &'static str,
    /// The struct bytes as KVM would read them (pointers as the seam sees them).
    pub bytes: Vec<u8>,
}

/// Fault injection and KVM behaviour to play.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Process at most this many pages per LAUNCH_UPDATE call (0 = all).
    pub pages_per_update: u64,
    /// Reject the first CPUID LAUNCH_UPDATE, writing this byte over the table's first byte as
    /// the firmware "correction".
    pub reject_cpuid_once: Option<u8>,
    /// Fail this op with the given firmware status.
    pub fail: Option<(&'static str, u32)>,
    /// LAUNCH_UPDATE returns success without progress (a misbehaving kernel).
    pub stall_updates: bool,
}

/// The recording fake.
#[derive(Debug, Default)]
pub struct RecordingIoctls {
    /// Calls in order.
    pub calls: Vec<Call>,
    /// Register state per created vCPU.
    pub vcpu_states: Vec<VcpuState>,
    /// Page data as seen by each successful LAUNCH_UPDATE call: (gfn, type, bytes).
    pub updated: Vec<(u64, u8, Vec<u8>)>,
    script: Script,
    next_fd: u32,
    cpuid_rejected: bool,
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

/// `struct kvm_sev_init` (48 bytes).
pub fn encode_sev_init(s: &kvm_sev_init) -> Vec<u8> {
    let mut b = vec![0u8; 48];
    put(&mut b, 0, &s.vmsa_features.to_le_bytes());
    put(&mut b, 8, &s.flags.to_le_bytes());
    put(&mut b, 12, &s.ghcb_version.to_le_bytes());
    b
}

/// `struct kvm_create_guest_memfd` (64 bytes).
pub fn encode_guest_memfd(s: &kvm_create_guest_memfd) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    put(&mut b, 0, &s.size.to_le_bytes());
    put(&mut b, 8, &s.flags.to_le_bytes());
    b
}

/// `struct kvm_userspace_memory_region2` (160 bytes).
pub fn encode_region2(s: &kvm_userspace_memory_region2) -> Vec<u8> {
    let mut b = vec![0u8; 160];
    put(&mut b, 0, &s.slot.to_le_bytes());
    put(&mut b, 4, &s.flags.to_le_bytes());
    put(&mut b, 8, &s.guest_phys_addr.to_le_bytes());
    put(&mut b, 16, &s.memory_size.to_le_bytes());
    put(&mut b, 24, &s.userspace_addr.to_le_bytes());
    put(&mut b, 32, &s.guest_memfd_offset.to_le_bytes());
    put(&mut b, 40, &s.guest_memfd.to_le_bytes());
    b
}

/// `struct kvm_memory_attributes` (32 bytes).
pub fn encode_mem_attrs(s: &kvm_memory_attributes) -> Vec<u8> {
    let mut b = vec![0u8; 32];
    put(&mut b, 0, &s.address.to_le_bytes());
    put(&mut b, 8, &s.size.to_le_bytes());
    put(&mut b, 16, &s.attributes.to_le_bytes());
    put(&mut b, 24, &s.flags.to_le_bytes());
    b
}

/// `struct kvm_sev_snp_launch_start` (64 bytes).
pub fn encode_launch_start(s: &kvm_sev_snp_launch_start) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    put(&mut b, 0, &s.policy.to_le_bytes());
    put(&mut b, 8, &s.gosvw);
    put(&mut b, 24, &s.flags.to_le_bytes());
    b
}

/// `struct kvm_sev_snp_launch_update` (64 bytes).
pub fn encode_launch_update(s: &kvm_sev_snp_launch_update) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    put(&mut b, 0, &s.gfn_start.to_le_bytes());
    put(&mut b, 8, &s.uaddr.to_le_bytes());
    put(&mut b, 16, &s.len.to_le_bytes());
    b[24] = s.type_;
    put(&mut b, 26, &s.flags.to_le_bytes());
    b
}

/// `struct kvm_sev_snp_launch_finish` (88 bytes).
pub fn encode_launch_finish(s: &kvm_sev_snp_launch_finish) -> Vec<u8> {
    let mut b = vec![0u8; 88];
    put(&mut b, 0, &s.id_block_uaddr.to_le_bytes());
    put(&mut b, 8, &s.id_auth_uaddr.to_le_bytes());
    b[16] = s.id_block_en;
    b[17] = s.auth_key_en;
    b[18] = s.vcek_disabled;
    put(&mut b, 19, &s.host_data);
    put(&mut b, 54, &s.flags.to_le_bytes());
    b
}

impl RecordingIoctls {
    /// A fake that plays `script`.
    pub fn new(script: Script) -> Self {
        Self {
            script,
            next_fd: 100,
            ..Default::default()
        }
    }

    fn record(&mut self, op: &'static str, bytes: Vec<u8>) -> Result<(), SysError> {
        self.calls.push(Call { op, bytes });
        match self.script.fail {
            Some((fail_op, status)) if fail_op == op => Err(SysError {
                op,
                errno: libc::EIO,
                fw_error: status,
            }),
            _ => Ok(()),
        }
    }

    /// The op names, in order.
    pub fn ops(&self) -> Vec<&'static str> {
        self.calls.iter().map(|c| c.op).collect()
    }
}

impl SnpVmIoctls for RecordingIoctls {
    fn enable_exit_hypercall(&mut self, hypercalls: u64) -> Result<(), SysError> {
        self.record(
            "KVM_ENABLE_CAP(EXIT_HYPERCALL)",
            hypercalls.to_le_bytes().to_vec(),
        )
    }

    fn sev_init2(&mut self, init: &mut kvm_sev_init) -> Result<(), SysError> {
        self.record("KVM_SEV_INIT2", encode_sev_init(init))
    }

    fn snp_enable_req_certs(&mut self) -> Result<(), SysError> {
        self.record("KVM_SEV_SNP_ENABLE_REQ_CERTS", Vec::new())
    }

    fn create_guest_memfd(&mut self, req: &kvm_create_guest_memfd) -> Result<u32, SysError> {
        self.record("KVM_CREATE_GUEST_MEMFD", encode_guest_memfd(req))?;
        self.next_fd += 1;
        Ok(self.next_fd)
    }

    fn set_user_memory_region2(
        &mut self,
        region: &mut kvm_userspace_memory_region2,
    ) -> Result<(), SysError> {
        self.record("KVM_SET_USER_MEMORY_REGION2", encode_region2(region))
    }

    fn set_memory_attributes(&mut self, attrs: &kvm_memory_attributes) -> Result<(), SysError> {
        self.record("KVM_SET_MEMORY_ATTRIBUTES", encode_mem_attrs(attrs))
    }

    fn create_vcpu(&mut self, index: u32, state: &VcpuState) -> Result<(), SysError> {
        self.record("KVM_CREATE_VCPU", index.to_le_bytes().to_vec())?;
        self.vcpu_states.push(*state);
        Ok(())
    }

    fn snp_launch_start(&mut self, start: &mut kvm_sev_snp_launch_start) -> Result<(), SysError> {
        self.record("KVM_SEV_SNP_LAUNCH_START", encode_launch_start(start))
    }

    fn snp_launch_update(
        &mut self,
        update: &mut kvm_sev_snp_launch_update,
        source: &mut [u8],
    ) -> Result<(), SysError> {
        let op = "KVM_SEV_SNP_LAUNCH_UPDATE";
        self.record(op, encode_launch_update(update))?;
        let (Ok(off), Ok(len)) = (usize::try_from(update.uaddr), usize::try_from(update.len))
        else {
            return Err(SysError {
                op,
                errno: libc::EINVAL,
                fw_error: 0,
            });
        };
        let Some(chunk) = off
            .checked_add(len)
            .and_then(|end| source.get_mut(off..end))
        else {
            return Err(SysError {
                op,
                errno: libc::EFAULT,
                fw_error: 0,
            });
        };
        if update.type_ == kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_CPUID as u8 && !self.cpuid_rejected {
            if let Some(fix) = self.script.reject_cpuid_once {
                self.cpuid_rejected = true;
                if let Some(b) = chunk.first_mut() {
                    *b = fix;
                }
                return Err(SysError {
                    op,
                    errno: libc::EIO,
                    fw_error: super::fw_status::INVALID_PARAM,
                });
            }
        }
        if self.script.stall_updates {
            return Ok(());
        }
        let pages = update.len / 4096;
        let done = match self.script.pages_per_update {
            0 => pages,
            n => n.min(pages),
        };
        let done_bytes = done * 4096;
        self.updated.push((
            update.gfn_start,
            update.type_,
            chunk[..done_bytes as usize].to_vec(),
        ));
        update.gfn_start += done;
        update.uaddr += done_bytes;
        update.len -= done_bytes;
        Ok(())
    }

    fn snp_launch_finish(
        &mut self,
        finish: &mut kvm_sev_snp_launch_finish,
        id_block: Option<&[u8; ID_BLOCK_SIZE]>,
        id_auth: Option<&[u8; ID_AUTH_SIZE]>,
    ) -> Result<(), SysError> {
        let mut bytes = encode_launch_finish(finish);
        if let Some(b) = id_block {
            bytes.extend_from_slice(b);
        }
        if let Some(a) = id_auth {
            bytes.extend_from_slice(a);
        }
        self.record("KVM_SEV_SNP_LAUNCH_FINISH", bytes)
    }
}

#[cfg(test)]
pub(crate) mod tests;
