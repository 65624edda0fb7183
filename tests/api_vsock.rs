//! The pod flow over the API with the probe guest as the agent (`vsock-echo` on port 1024):
//! `sandbox.create` with a vsock device, `sandbox.start` waiting for the agent (boot and ready
//! times reported), a request to the agent through the hybrid-vsock socket, `sandbox.stop`,
//! and `sandbox.wait` reporting `api_stop`.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

mod api_client;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use api_client::{probe_config, Podvisor, PATIENCE};
use podvisor_tests::probe::require_kvm;

const AGENT_PORT: u32 = 1024;

#[test]
fn sandbox_start_waits_for_the_agent_and_the_agent_answers() {
    if !require_kvm() {
        return;
    }
    let vmm = Podvisor::spawn("pod", &[]);
    let vsock = vmm.file("vsock.sock");
    // The agent refuses connections for a while after boot, so the wait is exercised.
    let mut vm: serde_json::Value = serde_json::from_str(&probe_config(
        "vsock-echo",
        "probe.vsock-listen-delay-ms=300 probe.secs=300",
        &vmm.file("console"),
    ))
    .unwrap();
    vm["vsock"] = serde_json::json!({"cid": 3, "socket": vsock});
    let spec = serde_json::json!({
        "sandbox_id": "pod-vsock",
        "vm": vm,
        "agent_vsock_port": AGENT_PORT,
    });
    let a = vmm.call("PUT", "/api/v1/sandbox.create", &spec.to_string());
    assert_eq!(a.status, 204, "{a:?}");
    let start =
        serde_json::json!({"wait_for_agent": true, "timeout_ms": PATIENCE.as_millis() as u64});
    let a = vmm.call("PUT", "/api/v1/sandbox.start", &start.to_string());
    assert_eq!(a.status, 200, "{a:?}\n{}", vmm.stderr());
    let times = a.json();
    let (boot, ready) = (times["boot_ms"].as_u64(), times["ready_ms"].as_u64());
    assert!(boot.is_some() && ready >= boot, "{times}");
    println!("boot {boot:?} ms, agent ready {ready:?} ms");

    // A request to the agent, as the shim would send it.
    let mut s = UnixStream::connect(&vsock).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut ok = String::new();
    reader.read_line(&mut ok).unwrap();
    assert!(ok.starts_with("OK "), "{ok:?}");
    s.write_all(b"ping from the host").unwrap();
    let mut echo = [0u8; 18];
    reader.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping from the host");

    assert_eq!(vmm.call("PUT", "/api/v1/sandbox.stop", "").status, 204);
    let a = vmm.call("GET", "/api/v1/sandbox.wait?timeout_ms=60000", "");
    assert_eq!(a.json()["reason"], "api_stop", "{a:?}");
    let status = vmm.call("GET", "/api/v1/sandbox.status", "").json();
    assert_eq!(status["boot"]["ready_ms"], times["ready_ms"], "{status}");
}

#[test]
fn sandbox_start_times_out_when_no_agent_listens() {
    if !require_kvm() {
        return;
    }
    let vmm = Podvisor::spawn("pod-silent", &[]);
    let mut vm: serde_json::Value = serde_json::from_str(&probe_config(
        "idle",
        "probe.secs=300",
        &vmm.file("console"),
    ))
    .unwrap();
    vm["vsock"] = serde_json::json!({"cid": 3, "socket": vmm.file("vsock.sock")});
    let spec = serde_json::json!({"sandbox_id": "pod-silent", "vm": vm, "agent_vsock_port": 1024});
    assert_eq!(
        vmm.call("PUT", "/api/v1/sandbox.create", &spec.to_string())
            .status,
        204
    );
    let a = vmm.call(
        "PUT",
        "/api/v1/sandbox.start",
        r#"{"wait_for_agent":true,"timeout_ms":1500}"#,
    );
    assert_eq!(a.status, 504, "{a:?}");
    assert_eq!(a.json()["code"], "TIMEOUT");
    // The VM keeps running; the shim decides what to do.
    let status = vmm.call("GET", "/api/v1/sandbox.status", "").json();
    assert_eq!(status["state"], "running", "{status}");
}
