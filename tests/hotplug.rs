//! PCI hot-plug through the API on a running VM.
//!
//! - the host side alone (a guest that ignores hot-plug: the probe's `idle` scenario): a disk
//!   added after boot answers 200 with exactly `{"id", "bdf"}`, shows up in `vm.info`, holds its
//!   file open; removing it asks the guest, and a guest that never releases it gets the VMM to
//!   answer with a timeout error while the disk stays; unknown ids are 404.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

mod api_client;

use std::path::Path;

use api_client::{probe_config, Podvisor};
use podvisor_tests::probe::require_kvm;

/// The files the process holds open whose path is `path`.
fn open_count(pid: u32, path: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target == path)
        .count()
}

#[test]
fn a_disk_added_after_boot_is_on_the_bus_and_an_unanswered_eject_times_out() {
    if !require_kvm() {
        return;
    }
    let vmm = Podvisor::spawn("hotplug-host", &[]);
    let img = vmm.file("c.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let img = img.canonicalize().unwrap();
    let config = probe_config("idle", "probe.secs=120", &vmm.file("console"));
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    let pid = vmm.child.id();
    assert_eq!(open_count(pid, &img), 0);

    let added = vmm.call(
        "PUT",
        "/api/v1/vm.add-disk",
        &serde_json::json!({"path": img, "readonly": true}).to_string(),
    );
    assert_eq!(added.status, 200, "{added:?}");
    let body = added.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["bdf", "id"], "exactly id and bdf: {body}");
    assert_eq!(body["id"], "disk0");
    let bdf = body["bdf"].as_str().unwrap().to_owned();
    assert!(
        bdf.len() == 12 && bdf.starts_with("0000:00:") && bdf.ends_with(".0"),
        "{bdf}"
    );
    assert_eq!(open_count(pid, &img), 1, "the disk's file is open");
    let device = |vmm: &Podvisor| {
        let info = vmm.call("GET", "/api/v1/vm.info", "").json();
        info["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == "disk0")
            .map(|d| d["bdf"].as_str().unwrap().to_owned())
    };
    assert_eq!(device(&vmm).as_deref(), Some(bdf.as_str()));
    let info = vmm.call("GET", "/api/v1/vm.info", "").json();
    assert_eq!(info["config"]["disks"][0]["id"], "disk0", "{info}");

    let dup = vmm.call(
        "PUT",
        "/api/v1/vm.add-disk",
        &serde_json::json!({"path": img, "id": "disk0"}).to_string(),
    );
    assert_eq!(dup.status, 500, "a second disk0: {dup:?}");
    let missing = vmm.call("PUT", "/api/v1/vm.remove-device", r#"{"id":"nope"}"#);
    assert_eq!(missing.status, 404, "{missing:?}");

    // The idle probe never looks at the hot-plug registers, so the eject is never answered.
    let removed = vmm.call("PUT", "/api/v1/vm.remove-device", r#"{"id":"disk0"}"#);
    assert_eq!(removed.status, 500, "{removed:?}");
    let chain: Vec<String> = serde_json::from_slice(&removed.body).unwrap();
    assert!(chain.join(" ").contains("did not release"), "{chain:?}");
    assert_eq!(
        open_count(pid, &img),
        1,
        "the disk stays until the guest lets go"
    );
    assert_eq!(device(&vmm).as_deref(), Some(bdf.as_str()));
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
}
