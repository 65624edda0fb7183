//! Spec-driven requests (tests/api_spec_fuzz.py, bounded examples generated from
//! docs/api.yaml) against the real binary: every answer arrives, has a documented status and
//! a JSON body, bad bodies never get a 5xx, and the server still answers afterwards. Needs
//! python3 with PyYAML; without them the test says SKIPPED.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

mod api_client;

use std::process::Command;
use std::time::Duration;

use api_client::Podvisor;

#[test]
fn spec_driven_requests_find_no_undocumented_status_and_no_hang() {
    let has_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_yaml {
        println!("SKIPPED: python3 with PyYAML is not installed");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let mut vmm = Podvisor::spawn("spec-fuzz", &[]);
    for seed in ["1", "2"] {
        let out = Command::new("python3")
            .arg(format!("{root}/tests/api_spec_fuzz.py"))
            .arg("--socket")
            .arg(&vmm.socket)
            .args(["--spec", &format!("{root}/docs/api.yaml")])
            .args(["--examples", "20", "--seed", seed])
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        println!("{report}");
        // The script ends with vmm.shutdown: the first run ends the process, so the second
        // starts a fresh one.
        assert!(out.status.success(), "{report}\n{}", vmm.stderr());
        assert_eq!(
            vmm.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()),
            Some(0),
            "vmm.shutdown did not end the process"
        );
        vmm = Podvisor::spawn(&format!("spec-fuzz-{seed}"), &[]);
    }
    assert_eq!(vmm.call("GET", "/api/v1/vmm.ping", "").status, 200);
}
