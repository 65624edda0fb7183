//! Disks through the API: one in `vm.create`'s `disks[]`, one cold-plugged with `vm.add-disk`
//! before `vm.boot`; the probe guest's `pci` scenario must find both virtio-blk functions at
//! the slots the VMM assigns (00:01.0, 00:02.0). Hot-plug after boot: tests/hotplug.rs.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

mod api_client;

use api_client::{probe_config, Podvisor, PATIENCE};
use podvisor_tests::probe::{parse_results, require_kvm};

#[test]
fn disks_from_create_and_add_disk_reach_the_guest() {
    if !require_kvm() {
        return;
    }
    let mut vmm = Podvisor::spawn("disks", &[]);
    let (a, b) = (vmm.file("a.img"), vmm.file("b.img"));
    for path in [&a, &b] {
        std::fs::write(path, vec![0u8; 1 << 20]).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&probe_config("pci", "", &vmm.file("console"))).unwrap();
    config["disks"] = serde_json::json!([{"path": a, "id": "root"}]);
    let a1 = vmm.call("PUT", "/api/v1/vm.create", &config.to_string());
    assert_eq!(a1.status, 204, "{a1:?}");
    let body = serde_json::json!({"path": b, "readonly": true}).to_string();
    let added = vmm.call("PUT", "/api/v1/vm.add-disk", &body);
    assert_eq!(added.status, 204, "{added:?}");
    let dup = vmm.call(
        "PUT",
        "/api/v1/vm.add-disk",
        &serde_json::json!({"path": b, "id": "root"}).to_string(),
    );
    assert_eq!(dup.status, 400, "duplicate id: {dup:?}");
    let info = vmm.call("GET", "/api/v1/vm.info", "").json();
    assert_eq!(
        info["config"]["disks"].as_array().map(Vec::len),
        Some(2),
        "{info}"
    );
    assert_eq!(
        vmm.call("PUT", "/api/v1/vm.boot", "").status,
        204,
        "{}",
        vmm.stderr()
    );
    // The pci scenario powers off when done, which ends the process.
    let status = vmm.wait_exit(PATIENCE);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", vmm.stderr());
    let console = std::fs::read_to_string(vmm.file("console")).unwrap_or_default();
    let results = parse_results(&console);
    for slot in ["pci.00:01.0", "pci.00:02.0"] {
        assert_eq!(
            results.get(slot).map(String::as_str),
            Some("1af4:1042"),
            "{console}"
        );
    }
}
