//! The `sandbox.*` layer against the real binary and the probe guest: create, start, status,
//! wait (long-poll) with the exit reason for a guest power-off and for `sandbox.stop`,
//! idempotent stop and shutdown, the event ring and the `--event-monitor` file.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

mod api_client;

use std::time::Duration;

use api_client::{call_at, Podvisor, PATIENCE};
use podvisor_tests::probe::require_kvm;

fn spec(vmm: &Podvisor, scenario: &str, params: &str) -> String {
    let vm: serde_json::Value = serde_json::from_str(&api_client::probe_config(
        scenario,
        params,
        &vmm.file("console"),
    ))
    .unwrap();
    serde_json::json!({
        "sandbox_id": "pod-1234",
        "annotations": {"io.kubernetes.cri.sandbox-name": "demo"},
        "vm": vm,
        "agent_vsock_port": 1024,
        "lifecycle": {"exit_on_vm_end": false},
    })
    .to_string()
}

#[test]
fn wait_reports_a_guest_power_off() {
    if !require_kvm() {
        return;
    }
    let mut vmm = Podvisor::spawn("sb-poweroff", &[]);
    let a = vmm.call(
        "PUT",
        "/api/v1/sandbox.create",
        &spec(&vmm, "idle", "probe.secs=1"),
    );
    assert_eq!(a.status, 204, "{a:?}");
    let status = vmm.call("GET", "/api/v1/sandbox.status", "").json();
    assert_eq!(status["state"], "created", "{status}");
    let a = vmm.call("PUT", "/api/v1/sandbox.start", "{}");
    assert_eq!(a.status, 200, "{a:?}\n{}", vmm.stderr());
    assert!(a.json()["boot_ms"].is_u64(), "{a:?}");
    let a = vmm.call(
        "GET",
        &format!("/api/v1/sandbox.wait?timeout_ms={}", PATIENCE.as_millis()),
        "",
    );
    assert_eq!(a.status, 200, "{a:?}\n{}", vmm.stderr());
    let exit = a.json();
    assert_eq!(exit["reason"], "poweroff", "{exit}");
    assert_eq!(exit["exit_status"], 0);
    // The process stays (lifecycle.exit_on_vm_end = false) and still answers.
    let status = vmm.call("GET", "/api/v1/sandbox.status", "").json();
    assert_eq!(status["state"], "stopped", "{status}");
    assert_eq!(status["sandbox_id"], "pod-1234");
    let timeline = &status["timeline"];
    let first = timeline["first_instruction_us"].as_u64().unwrap_or(0);
    let exit = timeline["exit_us"].as_u64().unwrap_or(0);
    assert!(first > 0 && exit > first, "{timeline}");
    // The probe marks entering Rust (0x01) and starting its scenario (0x02).
    let markers: Vec<u64> = timeline["markers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m[0].as_u64())
        .collect();
    assert!(markers.starts_with(&[1, 2]), "{timeline}");
    let events = vmm.call("GET", "/api/v1/sandbox.events?since=0", "").json();
    let names: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(
        names.contains(&"booted") && names.contains(&"exited"),
        "{names:?}"
    );
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
    assert_eq!(
        vmm.wait_exit(Duration::from_secs(3)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn wait_reports_stop_and_stop_is_idempotent() {
    if !require_kvm() {
        return;
    }
    let monitor = std::env::temp_dir().join(format!("podvisor-monitor-{}", std::process::id()));
    let _ = std::fs::remove_file(&monitor);
    let monitor_arg = format!("path={}", monitor.display());
    let mut vmm = Podvisor::spawn("sb-stop", &["--event-monitor", &monitor_arg]);
    let a = vmm.call(
        "PUT",
        "/api/v1/sandbox.create",
        &spec(&vmm, "idle", "probe.secs=300"),
    );
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(vmm.call("PUT", "/api/v1/sandbox.start", "").status, 200);
    let a = vmm.call("PUT", "/api/v1/sandbox.start", "");
    assert_eq!(a.status, 409, "second start: {a:?}");
    assert_eq!(a.json()["code"], "INVALID_STATE");

    let socket = vmm.socket.clone();
    let waiter = std::thread::spawn(move || {
        call_at(&socket, "GET", "/api/v1/sandbox.wait?timeout_ms=60000", "").unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "wait returned while the VM runs");
    let metrics = vmm.call("GET", "/api/v1/sandbox.metrics", "").json();
    assert_eq!(metrics["memory_bytes"], 128u64 << 20, "{metrics}");
    assert_eq!(vmm.call("PUT", "/api/v1/sandbox.stop", "").status, 204);
    let a = waiter.join().unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["reason"], "api_stop");
    assert_eq!(vmm.call("PUT", "/api/v1/sandbox.stop", "").status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/sandbox.shutdown", "").status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/sandbox.shutdown", "").status, 204);
    let a = vmm.call("GET", "/api/v1/sandbox.status", "");
    assert_eq!(a.status, 404);
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
    assert!(vmm.wait_exit(Duration::from_secs(3)).is_some());
    let lines = std::fs::read_to_string(&monitor).unwrap_or_default();
    let _ = std::fs::remove_file(&monitor);
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(
        events.iter().any(|e| e["event"] == "exited"
            && e["detail"].as_str().unwrap_or("").starts_with("api_stop")),
        "{lines}"
    );
}

#[test]
fn platform_and_ping_answer_without_a_sandbox() {
    let vmm = Podvisor::spawn("sb-platform", &[]);
    let p = vmm.call("GET", "/api/v1/sandbox.platform", "").json();
    assert_eq!(p["os"], "linux");
    assert_eq!(p["kvm"], std::path::Path::new("/dev/kvm").exists());
    let ping = vmm.call("GET", "/api/v1/sandbox.ping", "").json();
    assert_eq!(ping["pid"], vmm.child.id());
    let a = vmm.call("GET", "/api/v1/sandbox.wait?timeout_ms=10", "");
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["code"], "NOT_FOUND");
    let a = vmm.call(
        "PUT",
        "/api/v1/sandbox.create",
        r#"{"sandbox_id":"bad/id"}"#,
    );
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["code"], "INVALID_ARGUMENT");
}
