//! The `vcpu` role: the `vcpuN` threads.
//!
//! A vCPU runs `KVM_RUN` and handles its exits on the spot: port and MMIO accesses reach the
//! device buses, so the thread also does what a guest register write may cause there —
//! MSI-X routing and irqfds (`KVM_SET_GSI_ROUTING`, `KVM_IRQFD`), BAR moves
//! (`KVM_IOEVENTFD`), hot-unplug (the guest's eject releases irqfds and ioeventfds),
//! device activation (a worker's eventfds and epoll, handed to the
//! `vmm-spawner` thread over a channel), device reset (stopping a worker), serial output,
//! virtio-fs activation (vhost-user messages to the backend), and SEV-SNP page conversions (`KVM_SET_MEMORY_ATTRIBUTES` and a guest_memfd hole punch).
//! The last vCPU to let go of the devices may also tear them down (closing sockets and
//! removing the vsock listener's socket file). Only those ioctls are allowed: a vCPU cannot
//! create VMs, vCPUs or memory slots.

use seccompiler::BackendError;
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr};

use super::Rules;

mod kvm_ioctl {
    use kvm_bindings::{
        kvm_ioeventfd, kvm_irq_routing, kvm_irqfd, kvm_memory_attributes, kvm_msi, kvm_regs,
        kvm_sregs, KVMIO,
    };

    use super::*;

    ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
    ioctl_iow_nr!(KVM_IRQFD, KVMIO, 0x76, kvm_irqfd);
    ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_ioeventfd);
    ioctl_iow_nr!(KVM_SET_GSI_ROUTING, KVMIO, 0x6a, kvm_irq_routing);
    ioctl_iow_nr!(KVM_SIGNAL_MSI, KVMIO, 0xa5, kvm_msi);
    ioctl_iow_nr!(
        KVM_SET_MEMORY_ATTRIBUTES,
        KVMIO,
        0xd2,
        kvm_memory_attributes
    );
}

/// The ioctl requests a vCPU thread may issue.
pub(super) fn ioctls() -> Vec<u64> {
    use kvm_ioctl::*;
    vec![
        KVM_RUN(),
        KVM_GET_REGS(),
        KVM_GET_SREGS(),
        KVM_IRQFD(),
        KVM_IOEVENTFD(),
        KVM_SET_GSI_ROUTING(),
        KVM_SIGNAL_MSI(),
        KVM_SET_MEMORY_ATTRIBUTES(),
        libc::FIONBIO,
    ]
}

pub(super) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::default();
    r.allow(&[
        // Device activation and reset.
        libc::SYS_eventfd2,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_read,
        // virtio-fs activation and reset: vhost-user messages to the backend, some carrying
        // descriptors (guest memory, eventfds).
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        // SEV-SNP: free the private backing of a page converted to shared.
        libc::SYS_fallocate,
        // Device teardown.
        libc::SYS_shutdown,
        libc::SYS_unlink,
    ]);
    r.allow_arg(libc::SYS_ioctl, 1, &ioctls())?;
    Ok(r)
}
