//! `--landlock`: the running VM's threads may open only its configured files and the paths of
//! `--landlock-rules`.
//!
//! - `podvisor run --landlock` with a disk: the probe reads it as without Landlock (the VM's
//!   own files are allowed) and the run ends cleanly;
//! - API mode with `--landlock --landlock-rules path=DIR,access=r`: a disk hot-plugged from DIR
//!   after boot is accepted, one from anywhere else is refused with the kernel's "permission
//!   denied", and the VM keeps running.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

mod api_client;

use api_client::{probe_config, Podvisor};
use podvisor_tests::probe::{self, ProbeVm, EXIT_POWER_OFF};
use podvisor_tests::scratch::{pattern, Scratch};

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

#[test]
fn a_confined_vm_still_reads_its_disk() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("landlock", "run").unwrap();
    let data = pattern(64 << 10, 5);
    let disk = scratch.file("disk.img", &data).unwrap();
    let r = ProbeVm::new("blk-read")
        .param("probe.blk-kib", 16)
        .arg("--landlock")
        .arg("--disk")
        .arg(&format!("path={}", disk.display()))
        .run(PODVISOR)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.exit_code(), Some(EXIT_POWER_OFF), "{}", r.describe());
    assert!(r.errors().is_empty(), "{}", r.describe());
    assert!(r.result("blk-read-sha256").is_some(), "{}", r.describe());
    assert!(r.stderr.contains("Landlock"), "{}", r.describe());
}

#[test]
fn a_disk_outside_the_rules_cannot_be_hot_plugged() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("landlock", "api").unwrap();
    let allowed = scratch.0.join("images");
    std::fs::create_dir_all(&allowed).unwrap();
    let inside = allowed.join("in.img");
    std::fs::write(&inside, vec![0u8; 1 << 20]).unwrap();
    let outside = scratch.file("out.img", &vec![0u8; 1 << 20]).unwrap();
    let rule = format!("path={},access=r", allowed.display());
    let vmm = Podvisor::spawn("landlock", &["--landlock", "--landlock-rules", &rule]);
    let config = probe_config("idle", "probe.secs=120", &vmm.file("console"));
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    let booted = vmm.call("PUT", "/api/v1/vm.boot", "");
    assert_eq!(booted.status, 204, "{booted:?}\n{}", vmm.stderr());
    let ok = vmm.call(
        "PUT",
        "/api/v1/vm.add-disk",
        &serde_json::json!({"path": inside, "readonly": true}).to_string(),
    );
    assert_eq!(ok.status, 200, "{ok:?}\n{}", vmm.stderr());
    let refused = vmm.call(
        "PUT",
        "/api/v1/vm.add-disk",
        &serde_json::json!({"path": outside, "readonly": true}).to_string(),
    );
    assert_ne!(refused.status, 200, "{refused:?}");
    let chain: Vec<String> = serde_json::from_slice(&refused.body).unwrap();
    assert!(
        chain.join(" ").to_lowercase().contains("permission denied"),
        "{chain:?}"
    );
    assert_eq!(vmm.call("GET", "/api/v1/vm.info", "").status, 200);
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
}
