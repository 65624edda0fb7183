//! `KVM_SEV_SNP_ENABLE_REQ_CERTS`: asks KVM to stop a vCPU with `KVM_EXIT_SNP_REQ_CERTS`
//! whenever the guest's extended guest request wants the host's certificate chain, so the VMM
//! can answer from its configured certificate table (`crate::certs`). Neither the command,
//! the device attribute that announces it nor the exit are in kvm-bindings yet; the values
//! are those of Linux's `arch/x86/include/uapi/asm/kvm.h` and `amd-memory-encryption.rst`.
//!
//! Order: after KVM_SEV_INIT2 (the VM must be an SNP VM) and before the first vCPU exists.
//! The command carries no data. A kernel without it is refused before anything is created
//! ([`kernel_supports_req_certs`]), so the configuration error names the missing feature
//! instead of a bare errno.
#![allow(unsafe_code)] // Reason: KVM_HAS_DEVICE_ATTR on the /dev/kvm fd.

use kvm_bindings::kvm_sev_cmd;
use kvm_ioctls::Kvm;
use std::os::fd::AsRawFd;

/// `sev_cmd_id` of KVM_SEV_SNP_ENABLE_REQ_CERTS.
pub const KVM_SEV_SNP_ENABLE_REQ_CERTS: u32 = 103;
/// Attribute of group `KVM_X86_GRP_SEV` present when the kernel knows the command.
pub const KVM_X86_SEV_SNP_REQ_CERTS: u64 = 2;
/// `KVM_HAS_DEVICE_ATTR` = `_IOW(KVMIO, 0xe3, struct kvm_device_attr)`.
pub const KVM_HAS_DEVICE_ATTR: u64 = (1 << 30)
    | ((std::mem::size_of::<kvm_bindings::kvm_device_attr>() as u64) << 16)
    | (0xAE << 8)
    | 0xE3;

/// The `KVM_MEMORY_ENCRYPT_OP` argument enabling the exit on the VM whose SEV firmware
/// device is `sev_fd`.
pub fn enable_req_certs_cmd(sev_fd: u32) -> kvm_sev_cmd {
    kvm_sev_cmd {
        id: KVM_SEV_SNP_ENABLE_REQ_CERTS,
        data: 0,
        error: 0,
        sev_fd,
        ..Default::default()
    }
}

/// The `KVM_HAS_DEVICE_ATTR` argument asking for the command.
pub fn req_certs_attr() -> kvm_bindings::kvm_device_attr {
    kvm_bindings::kvm_device_attr {
        flags: 0,
        group: kvm_bindings::KVM_X86_GRP_SEV,
        attr: KVM_X86_SEV_SNP_REQ_CERTS,
        addr: 0,
    }
}

/// True if this kernel offers `KVM_SEV_SNP_ENABLE_REQ_CERTS` (asked on `/dev/kvm`).
pub fn kernel_supports_req_certs(kvm: &Kvm) -> bool {
    let attr = req_certs_attr();
    // SAFETY: KVM_HAS_DEVICE_ATTR reads one `kvm_device_attr`, which lives on this stack
    // frame for the whole call; the fd is the open /dev/kvm `kvm` owns.
    let ret = unsafe {
        libc::ioctl(
            kvm.as_raw_fd(),
            KVM_HAS_DEVICE_ATTR as _,
            &attr as *const kvm_bindings::kvm_device_attr,
        )
    };
    ret == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_command_and_the_attribute_query_are_encoded_as_the_kernel_expects() {
        let cmd = enable_req_certs_cmd(7);
        assert_eq!((cmd.id, cmd.data, cmd.error, cmd.sev_fd), (103, 0, 0, 7));
        assert_eq!(std::mem::size_of_val(&cmd), 24);
        // _IOW(0xAE, 0xE3, 24 bytes), as Linux defines KVM_HAS_DEVICE_ATTR.
        assert_eq!(KVM_HAS_DEVICE_ATTR, 0x4018_AEE3);
        let attr = req_certs_attr();
        assert_eq!((attr.flags, attr.group, attr.attr, attr.addr), (0, 1, 2, 0));
    }

    #[test]
    fn a_host_without_snp_does_not_offer_the_command() {
        if crate::launch::kvm_sys::snp_unavailable_reason().is_none() {
            return; // An SNP host may offer it either way.
        }
        if let Ok(kvm) = Kvm::new() {
            assert!(!kernel_supports_req_certs(&kvm));
        }
    }
}
