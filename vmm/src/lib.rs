//! The control plane and the VM itself.
//!
//! Takes a validated configuration (from the CLI or the API), builds guest memory, vCPUs and
//! devices on KVM, loads the guest, runs it and reports how it ended. Data flows one way:
//! `api-server → vmm → {devices, snp}`.

pub mod acpi;
pub mod boot;
pub mod clock;
pub mod config;
pub mod cpu;
pub mod exit;
pub mod layout;
pub mod memory;
pub mod vcpu;
pub mod vm;
