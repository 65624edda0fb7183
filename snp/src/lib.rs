//! Pure AMD SEV-SNP logic: IGVM → launch plan → expected measurement, and the launch backends.
//!
//! Nothing here touches KVM except the one backend module that wraps the SNP ioctls, so the
//! whole launch can be computed and checked on hosts without SNP hardware.

pub mod certs;
pub mod exits;
pub mod ghcb;
pub mod hex;
pub mod id_block;
#[cfg(any(test, feature = "test-utils"))]
pub mod igvm_fixtures;
pub mod igvm_plan;
pub mod launch;
pub mod ovmf;
pub mod page_info;
pub mod page_state;
pub mod plan;
pub mod policy;
pub mod report;
pub mod vmsa;
pub mod vp_context;
