//! The KVM ioctl seam of the SNP launch: a small trait ([`SnpVmIoctls`]) with the one real
//! implementation ([`KvmSnpVm`]) — the only code in the crate that issues ioctls.
//!
//! The uAPI (Linux 6.11+, `Documentation/virt/kvm/x86/amd-memory-encryption.rst`;
//! `Documentation/virt/kvm/api.rst` for guest_memfd, KVM_SET_USER_MEMORY_REGION2 and
//! KVM_SET_MEMORY_ATTRIBUTES) is used through `kvm-ioctls` 0.25 and the structs of
//! `kvm-bindings` 0.14, which define every SNP launch structure.
//!
//! Pointers: the SNP commands carry user addresses (`kvm_sev_cmd.data`, the LAUNCH_UPDATE source,
//! the ID block and auth). The seam keeps them out of the caller's hands: LAUNCH_UPDATE's
//! `uaddr` is an *offset into the source slice* on both sides of the trait, and
//! [`KvmSnpVm`] translates it to and from a real address around the ioctl, so the caller (and
//! the recording fake) see deterministic values.
#![allow(unsafe_code)] // Reason: guest_memfd ownership and KVM_SET_USER_MEMORY_REGION2.

use crate::vp_context::VcpuState;
use kvm_bindings::CpuId;
use kvm_bindings::{
    kvm_create_guest_memfd, kvm_enable_cap, kvm_memory_attributes, kvm_sev_cmd, kvm_sev_init,
    kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start, kvm_sev_snp_launch_update,
    kvm_userspace_memory_region2, kvm_xcrs, KVM_CAP_EXIT_HYPERCALL, KVM_CAP_VM_TYPES,
    KVM_X86_SNP_VM,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// `KVM_HC_MAP_GPA_RANGE` (Linux `include/uapi/linux/kvm_para.h`; not in kvm-bindings).
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// Path of the SEV firmware device.
pub const SEV_DEVICE: &str = "/dev/sev";

/// A failed ioctl: errno and, for SEV commands, the firmware status KVM reported.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{op}: errno {errno}{}", if *fw_error != 0 { format!(", firmware status {fw_error:#x}") } else { String::new() })]
pub struct SysError {
    /// The ioctl or command.
    pub op: &'static str,
    /// errno (positive).
    pub errno: i32,
    /// `kvm_sev_cmd.error`, 0 when the call did not reach firmware.
    pub fw_error: u32,
}

impl SysError {
    fn from_kvm(op: &'static str, e: &kvm_ioctls::Error) -> Self {
        Self {
            op,
            errno: e.errno(),
            fw_error: 0,
        }
    }
}

/// The ioctls of an SNP launch, on one VM.
pub trait SnpVmIoctls {
    /// KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL) with the bitmap of hypercalls to forward.
    fn enable_exit_hypercall(&mut self, hypercalls: u64) -> Result<(), SysError>;
    /// KVM_MEMORY_ENCRYPT_OP(KVM_SEV_INIT2).
    fn sev_init2(&mut self, init: &mut kvm_sev_init) -> Result<(), SysError>;
    /// KVM_CREATE_GUEST_MEMFD; returns the new fd's number (owned by the implementation).
    fn create_guest_memfd(&mut self, req: &kvm_create_guest_memfd) -> Result<u32, SysError>;
    /// KVM_SET_USER_MEMORY_REGION2. `userspace_addr` is filled in by the implementation with
    /// the shared backing it owns for the slot.
    fn set_user_memory_region2(
        &mut self,
        region: &mut kvm_userspace_memory_region2,
    ) -> Result<(), SysError>;
    /// KVM_SET_MEMORY_ATTRIBUTES.
    fn set_memory_attributes(&mut self, attrs: &kvm_memory_attributes) -> Result<(), SysError>;
    /// KVM_CREATE_VCPU followed by KVM_SET_SREGS/REGS/FPU/XCRS with `state`.
    fn create_vcpu(&mut self, index: u32, state: &VcpuState) -> Result<(), SysError>;
    /// KVM_MEMORY_ENCRYPT_OP(KVM_SEV_SNP_ENABLE_REQ_CERTS) (see [`super::req_certs`]):
    /// after INIT2, before any vCPU.
    fn snp_enable_req_certs(&mut self) -> Result<(), SysError>;
    /// KVM_MEMORY_ENCRYPT_OP(KVM_SEV_SNP_LAUNCH_START).
    fn snp_launch_start(&mut self, start: &mut kvm_sev_snp_launch_start) -> Result<(), SysError>;
    /// KVM_MEMORY_ENCRYPT_OP(KVM_SEV_SNP_LAUNCH_UPDATE). `update.uaddr` is an offset into
    /// `source` on entry and on return; `gfn_start`, `uaddr` and `len` describe what is left.
    fn snp_launch_update(
        &mut self,
        update: &mut kvm_sev_snp_launch_update,
        source: &mut [u8],
    ) -> Result<(), SysError>;
    /// KVM_MEMORY_ENCRYPT_OP(KVM_SEV_SNP_LAUNCH_FINISH). The ID block/auth addresses are
    /// filled in from the slices.
    fn snp_launch_finish(
        &mut self,
        finish: &mut kvm_sev_snp_launch_finish,
        id_block: Option<&[u8; crate::id_block::ID_BLOCK_SIZE]>,
        id_auth: Option<&[u8; crate::id_block::ID_AUTH_SIZE]>,
    ) -> Result<(), SysError>;
}

/// What is missing for SNP on this host, or `None` when /dev/sev exists and KVM offers
/// `KVM_X86_SNP_VM`. Checked before anything is created.
pub fn snp_unavailable_reason() -> Option<String> {
    let mut missing = Vec::new();
    if !std::path::Path::new(SEV_DEVICE).exists() {
        missing.push(format!("{SEV_DEVICE} is missing (no SEV firmware driver)"));
    }
    match Kvm::new() {
        Ok(kvm) => {
            let types = kvm.check_extension_raw(libc::c_ulong::from(KVM_CAP_VM_TYPES));
            if types < 0 || types & (1 << KVM_X86_SNP_VM) == 0 {
                missing.push(format!(
                    "KVM does not offer VM type KVM_X86_SNP_VM ({KVM_X86_SNP_VM}; \
                     KVM_CAP_VM_TYPES = {types:#x})"
                ));
            }
        }
        Err(e) => missing.push(format!("/dev/kvm cannot be opened: {e}")),
    }
    if missing.is_empty() {
        None
    } else {
        Some(missing.join("; "))
    }
}

/// A real SNP VM. Field order is drop order: vCPUs and the VM go before the guest_memfds and
/// the shared backing they reference.
pub struct KvmSnpVm {
    vcpus: Vec<VcpuFd>,
    vm: VmFd,
    /// guest_memfds with the memory slot each backs.
    memfds: Vec<(u32, OwnedFd)>,
    /// The shared (userspace) backing of each RAM slot, with its guest address.
    backing: Vec<(u64, MmapRegion<()>)>,
    sev: File,
    cpuid: Option<VcpuCpuid>,
    kvm: Kvm,
}

/// The CPUID a vCPU gets at creation, by index (set before the launch seals its state).
pub type VcpuCpuid = Box<dyn Fn(u32) -> CpuId + Send>;

/// What a finished launch hands to the run loop: the VM, its vCPUs (state sealed by
/// SNP_LAUNCH_FINISH), guest RAM's shared view for devices, and the guest_memfds that back its
/// private pages. Field order is drop order, as in [`KvmSnpVm`]: whoever keeps these must drop
/// the vCPUs and the VM before `memory`.
pub struct LaunchedVm {
    pub vcpus: Vec<VcpuFd>,
    pub vm: VmFd,
    pub kvm: Kvm,
    /// `(slot, guest_memfd)`, for conversions (`fallocate` punch-hole on a page made shared).
    pub guest_memfds: Vec<(u32, File)>,
    /// The shared backing of every RAM slot: what devices may read and write.
    pub memory: GuestMemoryMmap,
}

impl KvmSnpVm {
    /// Open /dev/sev and /dev/kvm and create a `KVM_X86_SNP_VM`.
    pub fn create() -> Result<Self, crate::launch::LaunchError> {
        if let Some(reason) = snp_unavailable_reason() {
            return Err(crate::launch::LaunchError::Unavailable(reason));
        }
        let sys = |op, e: std::io::Error| crate::launch::LaunchError::Sys { op, source: e };
        let sev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(SEV_DEVICE)
            .map_err(|e| sys("open /dev/sev", e))?;
        let kvm = Kvm::new().map_err(|e| sys("open /dev/kvm", e.into()))?;
        let vm = kvm
            .create_vm_with_type(u64::from(KVM_X86_SNP_VM))
            .map_err(|e| sys("KVM_CREATE_VM(KVM_X86_SNP_VM)", e.into()))?;
        Ok(Self {
            vcpus: Vec::new(),
            vm,
            memfds: Vec::new(),
            backing: Vec::new(),
            sev,
            cpuid: None,
            kvm,
        })
    }

    /// The KVM system fd (supported CPUID, MSR lists).
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The CPUID every vCPU gets when the launch creates it (KVM_SET_CPUID2 before its
    /// registers), by vCPU index.
    pub fn set_vcpu_cpuid(&mut self, cpuid: VcpuCpuid) {
        self.cpuid = Some(cpuid);
    }

    /// Takes the launched VM apart for the run loop.
    pub fn into_parts(self) -> Result<LaunchedVm, crate::launch::LaunchError> {
        let sys = |op, e: std::io::Error| crate::launch::LaunchError::Sys { op, source: e };
        let regions = self
            .backing
            .into_iter()
            .map(|(gpa, map)| {
                GuestRegionMmap::new(map, GuestAddress(gpa)).ok_or_else(|| {
                    sys(
                        "guest RAM view",
                        std::io::Error::other(format!("region at {gpa:#x} overflows")),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let memory = GuestMemoryMmap::from_regions(regions)
            .map_err(|e| sys("guest RAM view", std::io::Error::other(e.to_string())))?;
        let guest_memfds = self
            .memfds
            .into_iter()
            .map(|(slot, fd)| (slot, File::from(fd)))
            .collect();
        Ok(LaunchedVm {
            vcpus: self.vcpus,
            vm: self.vm,
            kvm: self.kvm,
            guest_memfds,
            memory,
        })
    }

    /// The vCPU fds, for the run loop after the launch.
    pub fn vcpus(&self) -> &[VcpuFd] {
        &self.vcpus
    }

    /// The VM fd, for the run loop after the launch.
    pub fn vm(&self) -> &VmFd {
        &self.vm
    }

    fn sev_cmd(&self, op: &'static str, id: u32, data: u64) -> Result<(), SysError> {
        let mut cmd = kvm_sev_cmd {
            id,
            data,
            sev_fd: self.sev.as_raw_fd() as u32,
            ..Default::default()
        };
        // `data` points at a live, correctly sized command struct owned by the caller for the
        // duration of this call (every caller passes `&mut T as *mut T as u64`).
        self.vm.encrypt_op_sev(&mut cmd).map_err(|e| SysError {
            op,
            errno: e.errno(),
            fw_error: cmd.error,
        })
    }
}

impl SnpVmIoctls for KvmSnpVm {
    fn enable_exit_hypercall(&mut self, hypercalls: u64) -> Result<(), SysError> {
        let mut cap = kvm_enable_cap {
            cap: KVM_CAP_EXIT_HYPERCALL,
            ..Default::default()
        };
        cap.args[0] = hypercalls;
        self.vm
            .enable_cap(&cap)
            .map_err(|e| SysError::from_kvm("KVM_ENABLE_CAP(EXIT_HYPERCALL)", &e))
    }

    fn sev_init2(&mut self, init: &mut kvm_sev_init) -> Result<(), SysError> {
        let ptr = init as *mut kvm_sev_init as u64;
        self.sev_cmd("KVM_SEV_INIT2", kvm_bindings::sev_cmd_id_KVM_SEV_INIT2, ptr)
    }

    fn snp_enable_req_certs(&mut self) -> Result<(), SysError> {
        let op = "KVM_SEV_SNP_ENABLE_REQ_CERTS";
        if !super::req_certs::kernel_supports_req_certs(&self.kvm) {
            return Err(SysError {
                op,
                errno: libc::ENOTSUP,
                fw_error: 0,
            });
        }
        let mut cmd = super::req_certs::enable_req_certs_cmd(self.sev.as_raw_fd() as u32);
        self.vm.encrypt_op_sev(&mut cmd).map_err(|e| SysError {
            op,
            errno: e.errno(),
            fw_error: cmd.error,
        })
    }

    fn create_guest_memfd(&mut self, req: &kvm_create_guest_memfd) -> Result<u32, SysError> {
        let fd = self
            .vm
            .create_guest_memfd(*req)
            .map_err(|e| SysError::from_kvm("KVM_CREATE_GUEST_MEMFD", &e))?;
        // SAFETY: KVM_CREATE_GUEST_MEMFD just returned `fd` as a new descriptor that nothing
        // else owns; wrapping it transfers ownership so it is closed exactly once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let number = owned.as_raw_fd() as u32;
        // The slot is known once the region is registered (set_user_memory_region2).
        self.memfds.push((u32::MAX, owned));
        Ok(number)
    }

    fn set_user_memory_region2(
        &mut self,
        region: &mut kvm_userspace_memory_region2,
    ) -> Result<(), SysError> {
        let op = "KVM_SET_USER_MEMORY_REGION2";
        let size = usize::try_from(region.memory_size).map_err(|_| SysError {
            op,
            errno: libc::EINVAL,
            fw_error: 0,
        })?;
        let map = MmapRegion::<()>::new(size).map_err(|_| SysError {
            op,
            errno: libc::ENOMEM,
            fw_error: 0,
        })?;
        region.userspace_addr = map.as_ptr() as u64;
        self.backing.push((region.guest_phys_addr, map));
        if let Some(entry) = self
            .memfds
            .iter_mut()
            .find(|(_, fd)| fd.as_raw_fd() as u32 == region.guest_memfd)
        {
            entry.0 = region.slot;
        }
        // SAFETY: `userspace_addr` is the start of an anonymous mapping of exactly
        // `memory_size` bytes that `self.backing` owns; fields drop in declaration order, so
        // the VM (and with it the slot) is gone before the mapping is unmapped. The guest_memfd
        // in the region was created by this VM and is owned by `self.memfds`.
        unsafe { self.vm.set_user_memory_region2(*region) }.map_err(|e| SysError::from_kvm(op, &e))
    }

    fn set_memory_attributes(&mut self, attrs: &kvm_memory_attributes) -> Result<(), SysError> {
        self.vm
            .set_memory_attributes(*attrs)
            .map_err(|e| SysError::from_kvm("KVM_SET_MEMORY_ATTRIBUTES", &e))
    }

    fn create_vcpu(&mut self, index: u32, state: &VcpuState) -> Result<(), SysError> {
        let vcpu = self
            .vm
            .create_vcpu(u64::from(index))
            .map_err(|e| SysError::from_kvm("KVM_CREATE_VCPU", &e))?;
        if let Some(cpuid) = &self.cpuid {
            vcpu.set_cpuid2(&cpuid(index))
                .map_err(|e| SysError::from_kvm("KVM_SET_CPUID2", &e))?;
        }
        // Keep what the VMM and KVM own (APIC base, CR8, CR2, pending interrupts).
        let mut sregs = vcpu
            .get_sregs()
            .map_err(|e| SysError::from_kvm("KVM_GET_SREGS", &e))?;
        let s = &state.sregs;
        sregs.cs = s.cs;
        sregs.ds = s.ds;
        sregs.es = s.es;
        sregs.fs = s.fs;
        sregs.gs = s.gs;
        sregs.ss = s.ss;
        sregs.tr = s.tr;
        sregs.ldt = s.ldt;
        sregs.gdt = s.gdt;
        sregs.idt = s.idt;
        sregs.cr0 = s.cr0;
        sregs.cr3 = s.cr3;
        sregs.cr4 = s.cr4;
        sregs.efer = s.efer;
        vcpu.set_sregs(&sregs)
            .map_err(|e| SysError::from_kvm("KVM_SET_SREGS", &e))?;
        vcpu.set_regs(&state.regs)
            .map_err(|e| SysError::from_kvm("KVM_SET_REGS", &e))?;
        vcpu.set_fpu(&state.fpu)
            .map_err(|e| SysError::from_kvm("KVM_SET_FPU", &e))?;
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = state.xcr0;
        vcpu.set_xcrs(&xcrs)
            .map_err(|e| SysError::from_kvm("KVM_SET_XCRS", &e))?;
        self.vcpus.push(vcpu);
        Ok(())
    }

    fn snp_launch_start(&mut self, start: &mut kvm_sev_snp_launch_start) -> Result<(), SysError> {
        let ptr = start as *mut kvm_sev_snp_launch_start as u64;
        self.sev_cmd(
            "KVM_SEV_SNP_LAUNCH_START",
            kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START,
            ptr,
        )
    }

    fn snp_launch_update(
        &mut self,
        update: &mut kvm_sev_snp_launch_update,
        source: &mut [u8],
    ) -> Result<(), SysError> {
        let op = "KVM_SEV_SNP_LAUNCH_UPDATE";
        let einval = SysError {
            op,
            errno: libc::EINVAL,
            fw_error: 0,
        };
        let offset = usize::try_from(update.uaddr).map_err(|_| einval.clone())?;
        let len = usize::try_from(update.len).map_err(|_| einval.clone())?;
        if offset.checked_add(len).is_none_or(|end| end > source.len()) {
            return Err(einval);
        }
        let base = source.as_mut_ptr() as u64;
        update.uaddr = base + offset as u64;
        let ptr = update as *mut kvm_sev_snp_launch_update as u64;
        // The kernel reads (and, for a rejected CPUID page, writes) `len` bytes at `uaddr`,
        // inside `source`, which is borrowed mutably for the whole call.
        let result = self.sev_cmd(op, kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE, ptr);
        update.uaddr = update.uaddr.wrapping_sub(base);
        result
    }

    fn snp_launch_finish(
        &mut self,
        finish: &mut kvm_sev_snp_launch_finish,
        id_block: Option<&[u8; crate::id_block::ID_BLOCK_SIZE]>,
        id_auth: Option<&[u8; crate::id_block::ID_AUTH_SIZE]>,
    ) -> Result<(), SysError> {
        finish.id_block_uaddr = id_block.map_or(0, |b| b.as_ptr() as u64);
        finish.id_auth_uaddr = id_auth.map_or(0, |b| b.as_ptr() as u64);
        let ptr = finish as *mut kvm_sev_snp_launch_finish as u64;
        // The ID block and auth slices are borrowed for the whole call; KVM only reads them.
        self.sev_cmd(
            "KVM_SEV_SNP_LAUNCH_FINISH",
            kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH,
            ptr,
        )
    }
}
