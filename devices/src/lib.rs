//! Device models and their host backends.
//!
//! Sits below `vmm` in the data flow: the VMM's vCPU threads dispatch port and MMIO exits to the
//! [`bus::Bus`], which hands them to the device that owns the address. Devices never import
//! `vmm` or `snp`; they talk back to the VMM only through the handles they were built with
//! (event fds, interrupt lines, channels).

pub mod bus;
