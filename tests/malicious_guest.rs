//! The probe as a malicious guest (`hostile` scenario): it drives a virtio-blk queue, then a
//! virtio-rng queue, by hand
//! with a descriptor loop, buffers outside RAM, a 4 GiB length, a read-only status byte, an
//! available index far ahead, a notification storm (also for queues that do not exist), writes
//! all over the configuration structures and its BAR moved over guest RAM. The VMM survives
//! each case (the device reads properly after a reset), the other disk is untouched and
//! answers, the VM powers off cleanly, and the fixture's memory watch holds the VMM's own
//! memory under its bound throughout.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

use std::process::Command;

use podvisor_tests::probe::{self, ProbeVm, EXIT_POWER_OFF};
use podvisor_tests::scratch::{pattern, Scratch};

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");
const CASES: [&str; 8] = [
    "descriptor-loop",
    "outside-ram",
    "huge-length",
    "read-only-status",
    "index-jump",
    "notify-storm",
    "config-writes",
    "bar-over-ram",
];

/// Checks a finished `hostile` run: every case survived, the untouched disk answers.
fn assert_survived(r: &probe::ProbeRun, scratch: &Scratch, other_data: &[u8]) {
    assert_eq!(r.exit_code(), Some(EXIT_POWER_OFF), "{}", r.describe());
    assert!(r.errors().is_empty(), "{}", r.describe());
    for case in CASES {
        assert_eq!(
            r.result(&format!("hostile-{case}")).as_deref(),
            Some("survived"),
            "{case}\n{}",
            r.describe()
        );
    }
    let first = scratch.file("other.sector0", &other_data[..512]).unwrap();
    let out = Command::new("sha256sum").arg(&first).output().unwrap();
    let want = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        r.result("hostile-other-disk-sha256").as_deref(),
        want.split_whitespace().next(),
        "{}",
        r.describe()
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn a_hostile_guest_cannot_hurt_the_vmm_or_the_other_devices() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("hostile", "blk").unwrap();
    let target = scratch.file("target.img", &pattern(1 << 20, 3)).unwrap();
    let other_data = pattern(1 << 20, 4);
    let other = scratch.file("other.img", &other_data).unwrap();
    let r = ProbeVm::new("hostile")
        .arg("--disk")
        .arg(&format!("path={}", target.display()))
        .arg("--disk")
        .arg(&format!("path={},readonly=on", other.display()))
        .run(PODVISOR)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_survived(&r, &scratch, &other_data);
}

#[test]
fn a_hostile_guest_on_the_entropy_device_gets_nowhere_either() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("hostile", "rng").unwrap();
    let other_data = pattern(1 << 20, 5);
    let other = scratch.file("other.img", &other_data).unwrap();
    let r = ProbeVm::new("hostile")
        .param("probe.hostile-device", "rng")
        .arg("--disk")
        .arg(&format!("path={},readonly=on", other.display()))
        .arg("--rng")
        .arg("src=/dev/urandom")
        .run(PODVISOR)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_survived(&r, &scratch, &other_data);
}
