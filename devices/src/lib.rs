//! Device models and their host backends.
//!
//! Sits below `vmm` in the data flow: the VMM's vCPU threads dispatch port and MMIO exits to the
//! [`bus::Bus`], which hands them to the device that owns the address. Devices never import
//! `vmm` or `snp`; they talk back to the VMM only through the handles they were built with
//! (event fds, interrupt lines, channels).

pub mod bus;
pub mod dma;
pub mod legacy;
pub mod pci;
pub mod virtio;
pub mod worker_thread;

use std::sync::Arc;

/// A request from the guest to end its run, raised by the device it used (ACPI sleep or reset
/// register, keyboard-controller reset). The VMM decides what it means for the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRequest {
    PowerOff,
    Reset,
}

/// Called from a vCPU thread, inside the device's register write, so it must not block: the
/// VMM records the request and kicks the vCPUs out of `KVM_RUN`.
pub type GuestRequestHandler = Arc<dyn Fn(GuestRequest) + Send + Sync>;
