//! Hostile clients against the real binary (no KVM needed: nothing here boots): malformed
//! JSON, wrong types, a huge body, unknown paths, wrong methods, clients that stall mid-request
//! or hang up; every one gets a 4xx (or is dropped) and the server keeps serving.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

mod api_client;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use api_client::{read_answer, Podvisor};

#[test]
fn bad_requests_get_4xx_and_the_server_keeps_serving() {
    let vmm = Podvisor::spawn("hostile", &[]);
    let cases: &[(&str, &str, &str, u16)] = &[
        ("PUT", "/api/v1/vm.create", "{", 400),
        ("PUT", "/api/v1/vm.create", "null", 400),
        (
            "PUT",
            "/api/v1/vm.create",
            r#"{"cpus":{"boot_vcpus":[]}}"#,
            400,
        ),
        (
            "PUT",
            "/api/v1/vm.create",
            r#"{"memory":{"size":"1G"}}"#,
            400,
        ),
        ("PUT", "/api/v1/vm.remove-device", r#"{"nope":1}"#, 400),
        ("PUT", "/api/v1/sandbox.start", "[", 400),
        ("GET", "/api/v1/sandbox.events?since=-1", "", 400),
        ("GET", "/api/v1/vm.nothing", "", 404),
        ("GET", "/../../etc/passwd", "", 404),
        ("POST", "/api/v1/vm.boot", "", 405),
        ("GET", "/api/v1/vmm.shutdown", "", 405),
        ("PUT", "/api/v1/vm.boot", "", 500),
    ];
    for (method, path, body, status) in cases {
        let a = vmm.call(method, path, body);
        assert_eq!(a.status, *status, "{method} {path} {body:?}: {a:?}");
        assert!(!a.body.is_empty(), "{method} {path}: no error body");
    }
    assert_eq!(vmm.call("GET", "/api/v1/vmm.ping", "").status, 200);
}

#[test]
fn huge_bodies_and_stalled_clients_do_not_hurt_others() {
    let vmm = Podvisor::spawn("hostile-slow", &[]);
    let mut huge = UnixStream::connect(&vmm.socket).unwrap();
    huge.write_all(b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 1073741824\r\n\r\n{")
        .unwrap();
    assert_eq!(read_answer(&mut huge).unwrap().status, 413);

    // Stalled: half a request line; half a body; an open idle connection; a hang-up.
    let mut stalled = Vec::new();
    for bytes in [
        &b"GET /api/v1/vmm.pi"[..],
        &b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pay"[..],
        &b""[..],
    ] {
        let mut s = UnixStream::connect(&vmm.socket).unwrap();
        s.write_all(bytes).unwrap();
        stalled.push(s);
    }
    drop(UnixStream::connect(&vmm.socket).unwrap());
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(vmm.call("GET", "/api/v1/vmm.ping", "").status, 200);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    drop(stalled);
    assert_eq!(vmm.call("GET", "/api/v1/vmm.ping", "").status, 200);
}

#[test]
fn cli_spellings_and_version() {
    let out = std::process::Command::new(api_client::PODVISOR)
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("podvisor v"), "{text}");
    let out = std::process::Command::new(api_client::PODVISOR)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(api_client::PODVISOR)
        .args(["--api-socket", "fd=1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout is not a socket to adopt"
    );
    let out = std::process::Command::new(api_client::PODVISOR)
        .args(["--api-socket", "/tmp/x.sock", "--seccomp", "maybe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Repeated -v and --seccomp log are accepted.
    let vmm = Podvisor::spawn("hostile-bare", &["-vv", "--seccomp", "log"]);
    assert_eq!(vmm.call("GET", "/api/v1/vmm.ping", "").status, 200);
}
