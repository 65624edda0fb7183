//! Pure AMD SEV-SNP logic: IGVM → launch plan → expected measurement, and the launch backends.
//!
//! Nothing here touches KVM except the one backend module that wraps the SNP ioctls, so the
//! whole launch can be computed and checked on hosts without SNP hardware.

pub mod hex;
pub mod page_info;
pub mod vmsa;
