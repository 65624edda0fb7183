//! Fixtures shared by the integration tests: locating the binaries and guests, running a VM
//! and reading its console.

pub mod linux;
pub mod overhead;
pub mod probe;
pub mod scratch;
pub mod virtiofsd;
pub mod vmm_process;
