//! The probe's parsers of what the VMM hands to a guest — PVH start info, command line, ACPI
//! tables — kept apart from the bare-metal program (`guest/src/main.rs`) so they can be tested
//! on the host against crafted and hostile inputs (the workspace's `podvisor-tests` crate does). They read guest-physical memory only through
//! [`phys::Memory`] and report errors through [`report::Sink`].
#![no_std]

pub mod acpi;
pub mod agent;
pub mod cmdline;
pub mod fuse;
pub mod hotplug;
pub mod phys;
pub mod report;
pub mod start_info;
