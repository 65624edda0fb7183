//! What the vmm crate's KVM tests share.

use std::path::Path;

/// Whether the KVM tests can run: true with /dev/kvm; without it they skip, unless
/// `PODVISOR_REQUIRE_KVM=1` makes that a failure (a skip is never a pass in CI).
pub fn kvm_available() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        std::env::var("PODVISOR_REQUIRE_KVM").as_deref() != Ok("1"),
        "PODVISOR_REQUIRE_KVM=1 but /dev/kvm is missing"
    );
    println!("SKIPPED: no /dev/kvm");
    false
}
