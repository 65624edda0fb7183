//! The probe as a malicious guest (`hostile` scenario): it drives a virtio-blk queue, a
//! virtio-rng queue, the virtio-vsock queues and a virtio-fs share's queues (served by a real
//! virtiofsd) by hand
//! with a descriptor loop, buffers outside RAM, a 4 GiB length, a read-only status byte, an
//! available index far ahead, a notification storm (also for queues that do not exist), writes
//! all over the configuration structures and its BAR moved over guest RAM. The VMM survives
//! each case (the device reads properly after a reset), the other disk is untouched and
//! answers, the VM powers off cleanly, and the fixture's memory watch holds the VMM's own
//! memory under its bound throughout. vsock also gets malformed packets (short and split
//! headers, 4 GiB payloads, unknown operations, types and CIDs), rx buffers outside RAM, in a
//! loop or read-only, junk on the event queue and a burst of requests nobody reads the answers
//! to; the device still refuses a connection properly after each. virtio-fs gets lying FUSE
//! headers, an unknown opcode, a request with no reply buffer and junk on the hiprio queue;
//! its queues are virtiofsd's, which may give the share up, so there the other disk answering
//! after each case and a clean power-off are what must hold.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

use podvisor_tests::probe::{self, ProbeVm, EXIT_POWER_OFF};
use podvisor_tests::scratch::{pattern, Scratch};
use podvisor_tests::virtiofsd::Virtiofsd;

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

const VSOCK_CASES: [&str; 11] = [
    "vsock-short-header",
    "vsock-split-header",
    "vsock-huge-payload",
    "vsock-bad-op",
    "vsock-bad-type",
    "vsock-bad-cid",
    "vsock-rx-outside-ram",
    "vsock-rx-loop",
    "vsock-rx-read-only",
    "vsock-event-junk",
    "vsock-request-burst",
];
const FS_CASES: [&str; 4] = [
    "fs-lying-length",
    "fs-unknown-opcode",
    "fs-no-reply-buffer",
    "fs-hiprio-junk",
];

/// Checks a finished `hostile` run: every case survived, the untouched disk answers.
fn assert_survived(r: &probe::ProbeRun, scratch: &Scratch, other_data: &[u8]) {
    assert_survived_with(r, scratch, other_data, &[]);
}

fn assert_survived_with(r: &probe::ProbeRun, scratch: &Scratch, other_data: &[u8], extra: &[&str]) {
    assert_eq!(r.exit_code(), Some(EXIT_POWER_OFF), "{}", r.describe());
    assert!(r.errors().is_empty(), "{}", r.describe());
    for case in CASES.iter().chain(extra) {
        assert_eq!(
            r.result(&format!("hostile-{case}")).as_deref(),
            Some("survived"),
            "{case}\n{}",
            r.describe()
        );
    }
    let want = scratch.sha256("other.sector0", &other_data[..512]).unwrap();
    assert_eq!(
        r.result("hostile-other-disk-sha256").as_deref(),
        Some(want.as_str()),
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

#[test]
fn a_hostile_guest_on_the_vsock_queues_gets_nowhere() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("hostile", "vsock").unwrap();
    let other_data = pattern(1 << 20, 6);
    let other = scratch.file("other.img", &other_data).unwrap();
    let socket = scratch.0.join("v.sock");
    let r = ProbeVm::new("hostile")
        .param("probe.hostile-device", "vsock")
        .arg("--disk")
        .arg(&format!("path={},readonly=on", other.display()))
        .arg("--vsock")
        .arg(&format!("cid=3,socket={}", socket.display()))
        .run(PODVISOR)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_survived_with(&r, &scratch, &other_data, &VSOCK_CASES);
}

#[test]
fn a_hostile_guest_on_the_virtio_fs_queues_leaves_the_vmm_and_other_devices_alone() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("hostile", "fs").unwrap();
    let other_data = pattern(1 << 20, 7);
    let other = scratch.file("other.img", &other_data).unwrap();
    let shared = scratch.0.join("shared");
    std::fs::create_dir(&shared).unwrap();
    let daemon = Virtiofsd::start(&scratch.0, &shared, "fs").unwrap_or_else(|e| panic!("{e}"));
    let r = ProbeVm::new("hostile")
        .param("probe.hostile-device", "fs")
        .arg("--disk")
        .arg(&format!("path={},readonly=on", other.display()))
        .arg("--fs")
        .arg(&format!("tag=hostile,socket={}", daemon.socket().display()))
        .run(PODVISOR)
        .unwrap_or_else(|e| panic!("{e}"));
    // What virtiofsd made of it (it may have given the share up): for the record.
    let log = std::fs::read_to_string(scratch.0.join("fs.log")).unwrap_or_default();
    println!("virtiofsd:\n{}", podvisor_tests::linux::tail(&log, 10));
    assert_survived_with(&r, &scratch, &other_data, &FS_CASES);
    drop(daemon);
}
