//! PCI hot-plug through the API on a running VM.
//!
//! - the host side alone (a guest that ignores hot-plug: the probe's `idle` scenario): a disk
//!   added after boot answers 200 with exactly `{"id", "bdf"}`, shows up in `vm.info`, holds its
//!   file open; removing it asks the guest, and a guest that never releases it gets the VMM to
//!   answer with a timeout error while the disk stays; unknown ids are 404;
//! - with the probe's `hotplug` scenario, which drives the hot-plug registers the DSDT's slot
//!   methods use: a disk added after boot is found and the SHA-256 of its first KiBs matches the
//!   host's; removing it is acknowledged and the file is closed; the next disk reuses the freed
//!   slot; a virtio-fs share added after boot serves `in.bin`; 20 add/remove cycles leave the
//!   VMM's file descriptors and memory where they were.
//! - on full-KVM hosts Linux's own ACPI hot-plug would take the probe's place (`/dev/vdX`
//!   appearing and going); under PVM Linux cannot reach init, so that variant is not here.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

mod api_client;

use std::path::Path;
use std::time::{Duration, Instant};

use api_client::{probe_config, Podvisor};
use podvisor_tests::probe::{parse_results, require_kvm};
use podvisor_tests::scratch::{pattern, Scratch};
use podvisor_tests::virtiofsd::Virtiofsd;

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
    // The sandbox wrappers: idempotent removal, one device per add, the same {id, bdf}.
    let gone = vmm.call("PUT", "/api/v1/sandbox.device.remove", r#"{"id":"nope"}"#);
    assert_eq!(gone.status, 204, "{gone:?}");
    let two = serde_json::json!({"disk": {"path": img}, "vsock": {"cid": 3, "socket": "/x"}});
    let refused = vmm.call("PUT", "/api/v1/sandbox.device.add", &two.to_string());
    assert_eq!(refused.status, 400, "{refused:?}");
    let second = vmm.call(
        "PUT",
        "/api/v1/sandbox.device.add",
        &serde_json::json!({"disk": {"path": img, "readonly": true, "id": "img2"}}).to_string(),
    );
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.json()["id"], "img2");
    assert_eq!(open_count(pid, &img), 2);

    // The idle probe never looks at the hot-plug registers, so the eject is never answered.
    let removed = vmm.call("PUT", "/api/v1/vm.remove-device", r#"{"id":"disk0"}"#);
    assert_eq!(removed.status, 500, "{removed:?}");
    let chain: Vec<String> = serde_json::from_slice(&removed.body).unwrap();
    assert!(chain.join(" ").contains("did not release"), "{chain:?}");
    assert_eq!(
        open_count(pid, &img),
        2,
        "the disk stays until the guest lets go"
    );
    assert_eq!(device(&vmm).as_deref(), Some(bdf.as_str()));
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
}

fn sha256_hex(data: &[u8], scratch: &Scratch, name: &str) -> String {
    scratch.sha256(name, data).unwrap()
}

/// `(fd count, VmRSS in KiB)` of a process once connections of finished API calls are closed:
/// the smallest fd count over a few samples.
fn footprint(pid: u32) -> (usize, u64) {
    let mut best = sample(pid);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(50));
        let now = sample(pid);
        best = (best.0.min(now.0), now.1);
    }
    best
}

fn sample(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (fds, rss)
}

/// Waits for the probe's event `n` and returns it.
fn event(vmm: &Podvisor, console: &Path, n: usize) -> String {
    let key = format!("hotplug-{n}");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        // Only whole lines: the console file grows while the probe writes.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        if let Some(v) = parse_results(complete).get(&key) {
            return v.clone();
        }
        assert!(Instant::now() < end, "no {key}\n{text}\n{}", vmm.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn disks_and_shares_come_and_go_while_the_probe_watches() {
    if !require_kvm() {
        return;
    }
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let hash_kib: usize = if pvm { 16 } else { 8192 };
    let scratch = Scratch::new("hotplug", "probe").unwrap();
    let data = pattern(hash_kib << 10, 7);
    let img = scratch.file("disk.img", &data).unwrap();
    let img = img.canonicalize().unwrap();
    let want_disk = sha256_hex(&data, &scratch, "disk.copy");
    let share = scratch.0.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let in_bin = pattern(16 << 10, 9);
    std::fs::write(share.join("in.bin"), &in_bin).unwrap();
    let want_share = sha256_hex(&in_bin, &scratch, "in.copy");
    let daemon = Virtiofsd::start(&scratch.0, &share, "share").unwrap();

    let vmm = Podvisor::spawn("hotplug-probe", &[]);
    let console = vmm.file("console");
    let params = format!("probe.secs=600 probe.hash-kib={hash_kib}");
    let mut config: serde_json::Value =
        serde_json::from_str(&probe_config("hotplug", &params, &console)).unwrap();
    // Shares added later need RAM a vhost-user backend can map.
    config["memory"]["shared"] = serde_json::json!(true);
    let config = config.to_string();
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    let end = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains("hotplug-ready=")
    {
        assert!(Instant::now() < end, "probe not ready\n{}", vmm.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = vmm.child.id();
    let disk_body = serde_json::json!({"path": img, "readonly": true}).to_string();
    let mut n = 0;
    let add_disk = |n: &mut usize| {
        let added = vmm.call("PUT", "/api/v1/vm.add-disk", &disk_body);
        assert_eq!(added.status, 200, "{added:?}\n{}", vmm.stderr());
        let bdf = added.json()["bdf"].as_str().unwrap().to_owned();
        let slot = &bdf[8..10];
        let seen = event(&vmm, &console, *n);
        assert_eq!(
            seen,
            format!("add,{slot},1af4:1042,sha256={want_disk}"),
            "event {n}"
        );
        *n += 1;
        (
            added.json()["id"].as_str().unwrap().to_owned(),
            slot.to_owned(),
        )
    };
    let remove = |n: &mut usize, id: &str, slot: &str| {
        let removed = vmm.call(
            "PUT",
            "/api/v1/vm.remove-device",
            &serde_json::json!({"id": id}).to_string(),
        );
        assert_eq!(removed.status, 204, "{removed:?}\n{}", vmm.stderr());
        assert_eq!(event(&vmm, &console, *n), format!("eject,{slot}"));
        *n += 1;
    };

    let (id, slot) = add_disk(&mut n);
    assert_eq!(open_count(pid, &img), 1);
    remove(&mut n, &id, &slot);
    assert_eq!(
        open_count(pid, &img),
        0,
        "the removed disk's file is closed"
    );
    let again = vmm.call(
        "PUT",
        "/api/v1/vm.remove-device",
        &serde_json::json!({"id": id}).to_string(),
    );
    assert_eq!(again.status, 404, "removing twice: {again:?}");
    let (id, reused) = add_disk(&mut n);
    assert_eq!(reused, slot, "the freed slot is reused");
    remove(&mut n, &id, &slot);

    let fs_body = serde_json::json!({"tag": "late", "socket": daemon.socket()}).to_string();
    let added = vmm.call("PUT", "/api/v1/vm.add-fs", &fs_body);
    assert_eq!(added.status, 200, "{added:?}\n{}", vmm.stderr());
    let body = added.json();
    let fs_slot = body["bdf"].as_str().unwrap()[8..10].to_owned();
    assert_eq!(
        event(&vmm, &console, n),
        format!("add,{fs_slot},1af4:105a,sha256={want_share}")
    );
    n += 1;
    remove(&mut n, body["id"].as_str().unwrap(), &fs_slot);

    let before = footprint(pid);
    for _ in 0..20 {
        let (id, slot) = add_disk(&mut n);
        remove(&mut n, &id, &slot);
    }
    let after = footprint(pid);
    assert!(
        after.0 <= before.0,
        "file descriptors grew from {} to {} over 20 cycles",
        before.0,
        after.0
    );
    assert!(
        after.1 < before.1 + 8 * 1024,
        "RSS grew from {} to {} KiB over 20 cycles",
        before.1,
        after.1
    );
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
}

/// Waits until a console line contains `needle`; returns the console.
fn wait_console(vmm: &Podvisor, console: &Path, needle: &str, patience: Duration) -> String {
    let end = Instant::now() + patience;
    loop {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < end,
            "no {needle:?} on the console\n{}\n{}",
            podvisor_tests::linux::tail(&text, 40),
            vmm.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn linux_sees_a_hot_plugged_disk_appear_and_go() {
    let Some((kit, mode)) = podvisor_tests::linux::prepare().unwrap() else {
        return;
    };
    if mode == podvisor_tests::linux::HostMode::EarlyBootOnly {
        println!(
            "not run: Linux cannot reach init on PVM (the probe's hotplug scenario covers it)"
        );
        return;
    }
    let scratch = Scratch::new("hotplug", "linux").unwrap();
    let data = pattern(1 << 20, 11);
    let img = scratch.file("disk.img", &data).unwrap();
    let want = sha256_hex(&data, &scratch, "disk.copy");
    let vmm = Podvisor::spawn("hotplug-linux", &[]);
    let console = vmm.file("console");
    let config = api_client::linux_config(&kit, "hotplug", "podvisor.secs=600", &console);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    wait_console(&vmm, &console, "hotplug-ready", Duration::from_secs(300));
    let body = serde_json::json!({"path": img, "id": "late"}).to_string();
    let added = vmm.call("PUT", "/api/v1/vm.add-disk", &body);
    assert_eq!(added.status, 200, "{added:?}");
    let text = wait_console(
        &vmm,
        &console,
        &format!("hotplug-add=vda sha256={want}"),
        Duration::from_secs(60),
    );
    assert!(!text.contains("hotplug-gone"), "{text}");
    let removed = vmm.call("PUT", "/api/v1/vm.remove-device", r#"{"id":"late"}"#);
    assert_eq!(removed.status, 204, "{removed:?}\n{}", vmm.stderr());
    wait_console(&vmm, &console, "hotplug-gone=vda", Duration::from_secs(60));
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
}

#[test]
fn a_full_bus_refuses_more_devices_with_a_clear_error() {
    if !require_kvm() {
        return;
    }
    let vmm = Podvisor::spawn("hotplug-full", &[]);
    let img = vmm.file("small.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let config = probe_config("idle", "probe.secs=120", &vmm.file("console"));
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    let body = serde_json::json!({"path": img, "readonly": true}).to_string();
    let mut added = 0;
    let refused = loop {
        let a = vmm.call("PUT", "/api/v1/vm.add-disk", &body);
        if a.status != 200 {
            break a;
        }
        added += 1;
        assert!(added <= 31, "more devices than slots");
    };
    // Slot 0 is the host bridge and the probe config's rng holds one slot.
    assert_eq!(added, 30, "{refused:?}");
    let chain: Vec<String> = serde_json::from_slice(&refused.body).unwrap();
    assert!(chain.join(" ").contains("slots"), "{chain:?}");
    assert_eq!(vmm.call("GET", "/api/v1/vm.info", "").status, 200);
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
}
