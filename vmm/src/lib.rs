//! The control plane and the VM itself.
//!
//! Takes a validated configuration (from the CLI or the API), builds guest memory, vCPUs and
//! devices on KVM, loads the guest, runs it and reports how it ended. Data flows one way:
//! `api-server → vmm → {devices, snp}`.
//!
//! ```text
//! VmConfig ──validate──► Vm::build: KVM VM + irqchip + PIT ─► guest RAM (layout, e820)
//!                                   ─► ACPI tables ─► kernel/initramfs/cmdline (boot)
//!                                   ─► port bus: COM1, boot marker, ACPI PM, i8042
//!                                   ─► vCPUs (cpu: CPUID, MSRs, FPU, LAPIC; regs on vCPU 0)
//!          Vm::run: vcpuN threads ──exits──► control loop ──► ExitReason
//! ```
//!
//! Contracts other programs rely on:
//! * process exit statuses ([`exit`]): 0 power-off, 1 internal error, 2 invalid
//!   configuration, 3 reboot, 4 triple fault;
//! * the `boot-timing …` line printed at exit ([`clock`]);
//! * the guest-physical memory map ([`layout`]).

pub mod acpi;
pub mod api;
pub mod boot;
pub mod clock;
pub mod confidential_vm;
pub mod config;
pub mod console;
pub mod cpu;
pub mod exit;
pub mod fd_limit;
pub mod hotplug;
pub mod landlock;
pub mod layout;
pub mod memory;
pub mod pci_bus;
pub mod pci_devices;
pub mod seccomp;
pub mod signals;
pub mod snp_certs;
pub mod snp_launch;
pub mod snp_memory;
#[cfg(test)]
mod test_scratch;
pub mod vcpu;
pub mod vm;
