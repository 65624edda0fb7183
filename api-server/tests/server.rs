#![allow(clippy::unwrap_used, clippy::panic)] // reason: test helpers; a failed unwrap is the test failure.

//! The HTTP server over a real Unix socket with an in-process fake VMM: routing, error
//! bodies, limits, hostile clients, and reads answered while a slow command is in flight.
//!
//! Requests are written by hand on a `UnixStream` so the tests control exactly what goes on
//! the wire (split writes, truncated headers, oversized bodies).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_server::{ApiServer, VmmInfo};
use vmm::api::config::ApiVmConfig;
use vmm::api::state::ExitInfo;
use vmm::api::VmState;
use vmm::api::{ApiError, Backend, ErrorCode, Reply, Request, Response, SharedState, Snapshot};

/// How long the fake takes to "boot": long enough that a read waiting behind it would show.
const FAKE_BOOT: Duration = Duration::from_millis(1500);

/// A VMM stand-in: executes commands on its own thread (like the `vmm` thread), publishing
/// state changes to the shared snapshot.
struct FakeVmm {
    shared: Arc<SharedState>,
    seen: Arc<Mutex<Vec<&'static str>>>,
}

impl Backend for FakeVmm {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot()
    }

    fn submit(&self, request: Request, reply: Reply) {
        let shared = self.shared.clone();
        let seen = self.seen.clone();
        std::thread::spawn(move || {
            seen.lock().unwrap().push(request.name());
            let result = match request {
                Request::VmCreate(config) => {
                    let config = Arc::new(*config);
                    shared.update(|s| {
                        s.state = Some(VmState::Created);
                        s.config = Some(config);
                    });
                    Ok(Response::Empty)
                }
                Request::VmBoot => {
                    std::thread::sleep(FAKE_BOOT);
                    shared.update(|s| s.state = Some(VmState::Running));
                    Ok(Response::Empty)
                }
                Request::SandboxCreate(spec) => {
                    let record = vmm::api::sandbox::SandboxRecord {
                        id: spec.sandbox_id,
                        annotations: spec.annotations,
                        agent_vsock_port: spec.agent_vsock_port,
                        exit_on_vm_end: false,
                        created_at_ms: 1,
                    };
                    shared.update(|s| {
                        s.state = Some(VmState::Created);
                        s.sandbox = Some(Arc::new(record));
                    });
                    Ok(Response::Empty)
                }
                Request::SandboxStop => {
                    std::thread::sleep(Duration::from_millis(300));
                    let exit = ExitInfo::from_reason(&vmm::exit::ExitReason::HostStop);
                    shared.update(|s| {
                        s.state = Some(VmState::Shutdown);
                        s.exit = Some(exit);
                    });
                    Ok(Response::Empty)
                }
                Request::VmPause => Err(ApiError::new(ErrorCode::Unsupported, "vm.pause: no")),
                _ => Ok(Response::Empty),
            };
            reply(result);
        });
    }

    fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }
}

struct Server {
    socket: PathBuf,
    server: Option<ApiServer>,
    shared: Arc<SharedState>,
    seen: Arc<Mutex<Vec<&'static str>>>,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(tag: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("podvisor-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("api.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let shared = SharedState::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let backend = Arc::new(FakeVmm {
        shared: shared.clone(),
        seen: seen.clone(),
    });
    let info = VmmInfo {
        build_version: "test".into(),
        version: "0.0.0".into(),
        pid: std::process::id(),
        features: vec!["kvm".into()],
    };
    let server = ApiServer::start(listener, backend, info).unwrap();
    Server {
        socket,
        server: Some(server),
        shared,
        seen,
        _dir: TempDir(dir),
    }
}

/// A parsed answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Reads one response (Content-Length framed) from `stream`.
fn read_answer(stream: &mut UnixStream) -> Answer {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "connection closed mid-headers: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    Answer {
        status,
        headers: head,
        body,
    }
}

fn request_bytes(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

impl Server {
    fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).unwrap()
    }

    fn call(&self, method: &str, path: &str, body: &str) -> Answer {
        let mut stream = self.connect();
        stream
            .write_all(&request_bytes(method, path, body.as_bytes()))
            .unwrap();
        read_answer(&mut stream)
    }

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(Duration::from_secs(2)).unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn ping_reports_the_build() {
    let s = start("ping");
    let a = s.call("GET", "/api/v1/vmm.ping", "");
    assert_eq!(a.status, 200, "{a:?}");
    let v = a.json();
    assert_eq!(v["pid"], std::process::id());
    assert_eq!(v["version"], "0.0.0");
    assert_eq!(v["features"][0], "kvm");
    assert!(v["build_version"].is_string());
    assert!(a.headers.to_ascii_lowercase().contains("application/json"));
}

#[test]
fn unknown_paths_and_wrong_methods_are_refused_with_bodies() {
    let s = start("routing");
    for path in ["/api/v1/vm.nope", "/", "/api/v2/vmm.ping", "/api/v1/"] {
        let a = s.call("GET", path, "");
        assert_eq!(a.status, 404, "{path}: {a:?}");
        let body: Vec<String> = serde_json::from_slice(&a.body).unwrap();
        assert!(!body.is_empty());
    }
    let a = s.call("PUT", "/api/v1/vmm.ping", "");
    assert_eq!(a.status, 405, "{a:?}");
    assert!(a.headers.contains("allow: GET"), "{}", a.headers);
    let a = s.call("GET", "/api/v1/vm.boot", "");
    assert_eq!(a.status, 405);
    let a = s.call("DELETE", "/api/v1/sandbox.status", "");
    assert_eq!(a.status, 405);
    assert!(a.json()["code"].is_string(), "{a:?}");
    assert!(s.seen.lock().unwrap().is_empty(), "nothing reaches the VMM");
}

#[test]
fn bad_bodies_get_400_and_the_server_keeps_serving() {
    let s = start("badbody");
    for body in [
        "{",
        "",
        "[1,2]",
        r#"{"cpus":{"boot_vcpus":"two"}}"#,
        r#"{"memory":{"size":-5}}"#,
        "\u{0}\u{1}binary",
    ] {
        let a = s.call("PUT", "/api/v1/vm.create", body);
        assert_eq!(a.status, 400, "{body:?}: {a:?}");
        let chain: Vec<String> = serde_json::from_slice(&a.body).unwrap();
        assert!(chain[0].contains("vm.create"), "{chain:?}");
    }
    let a = s.call("PUT", "/api/v1/sandbox.create", "{nope");
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["code"], "INVALID_ARGUMENT");
    let a = s.call("GET", "/api/v1/sandbox.wait?timeout_ms=abc", "");
    assert_eq!(a.status, 400, "{a:?}");
    assert!(s.seen.lock().unwrap().is_empty());
    assert_eq!(s.call("GET", "/api/v1/vmm.ping", "").status, 200);
}

#[test]
fn unknown_keys_and_nulls_are_ignored() {
    let s = start("lenient");
    let body = r#"{"payload":{"kernel":"/k","firmware":null,"future":1},"cpus":null,
                   "memory":{"size":268435456,"mergeable":false},"whatever":{"x":[1]}}"#;
    let a = s.call("PUT", "/api/v1/vm.create", body);
    assert_eq!(a.status, 204, "{a:?}");
    let config: Arc<ApiVmConfig> = s.shared.snapshot().config.clone().unwrap();
    assert_eq!(config.memory.size, 256 << 20);
    let a = s.call("GET", "/api/v1/vm.info", "");
    assert_eq!(a.status, 200, "{a:?}");
    let v = a.json();
    assert_eq!(v["state"], "Created");
    assert_eq!(v["config"]["payload"]["kernel"], "/k");
    assert_eq!(v["memory_actual_size"], 256u64 << 20);
}

#[test]
fn huge_bodies_get_413() {
    let s = start("huge");
    // Declared too large: refused before reading.
    let mut stream = s.connect();
    stream
        .write_all(
            b"PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_answer(&mut stream).status, 413);
    // Chunked, no length: refused once the limit is crossed.
    let mut stream = s.connect();
    stream
        .write_all(
            b"PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..40 {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        // The server may answer and close once the limit is crossed.
        if stream.write_all(&framed).is_err() {
            break;
        }
    }
    let status = Some(read_answer(&mut stream).status);
    assert_eq!(status, Some(413));
    assert_eq!(s.call("GET", "/api/v1/vmm.ping", "").status, 200);
}

#[test]
fn requests_split_across_writes_and_keep_alive_work() {
    let s = start("split");
    let mut stream = s.connect();
    let bytes = request_bytes("GET", "/api/v1/vmm.ping", b"");
    for piece in bytes.chunks(3) {
        stream.write_all(piece).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(read_answer(&mut stream).status, 200);
    // Same connection, two more requests back to back (pipelined).
    let mut two = request_bytes("GET", "/api/v1/vmm.ping", b"");
    two.extend(request_bytes("GET", "/api/v1/vm.counters", b""));
    stream.write_all(&two).unwrap();
    assert_eq!(read_answer(&mut stream).status, 200);
    assert_eq!(read_answer(&mut stream).status, 200);
}

#[test]
fn a_slow_client_holding_a_connection_does_not_block_others() {
    let s = start("slow");
    let mut idle = s.connect();
    idle.write_all(b"GET /api/v1/vmm.ping HTTP/1.1\r\nHo")
        .unwrap();
    let mut half_body = s.connect();
    half_body
        .write_all(b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"pay")
        .unwrap();
    for _ in 0..5 {
        assert_eq!(s.call("GET", "/api/v1/vmm.ping", "").status, 200);
    }
    drop(idle);
    drop(half_body);
}

/// Reads never wait for a command: pings during a (fake) 1.5 s boot must each answer in a
/// small fraction of it. The bound is deliberately loose (a quarter of the boot) for a loaded
/// 2-core host; what it proves is that no ping waited for the boot to finish.
#[test]
fn reads_answer_while_a_command_is_in_flight() {
    let s = start("concurrent");
    assert_eq!(
        s.call("PUT", "/api/v1/vm.create", r#"{"payload":{"kernel":"/k"}}"#)
            .status,
        204
    );
    let socket = s.socket.clone();
    let boot = std::thread::spawn(move || {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream
            .write_all(&request_bytes("PUT", "/api/v1/vm.boot", b""))
            .unwrap();
        let started = Instant::now();
        (read_answer(&mut stream).status, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut worst = Duration::ZERO;
    let mut states = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let a = s.call("GET", "/api/v1/vm.info", "");
        worst = worst.max(started.elapsed());
        states.push(a.json()["state"].as_str().unwrap_or("").to_owned());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, boot_took) = boot.join().unwrap();
    assert_eq!(status, 204);
    assert!(boot_took >= FAKE_BOOT - Duration::from_millis(200));
    assert!(
        worst < FAKE_BOOT / 4,
        "a read took {worst:?} during the boot"
    );
    assert!(states.iter().all(|st| st == "Created"), "{states:?}");
    assert_eq!(
        s.call("GET", "/api/v1/vm.info", "").json()["state"],
        "Running"
    );
}

#[test]
fn sandbox_wait_long_polls_until_the_vm_stops() {
    let s = start("wait");
    let a = s.call("GET", "/api/v1/sandbox.wait?timeout_ms=10", "");
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(a.json()["code"], "NOT_FOUND");
    let a = s.call("PUT", "/api/v1/sandbox.create", r#"{"sandbox_id":"pod"}"#);
    assert_eq!(a.status, 204, "{a:?}");
    let a = s.call("GET", "/api/v1/sandbox.wait?timeout_ms=50", "");
    assert_eq!(a.status, 504);
    assert_eq!(a.json()["code"], "TIMEOUT");
    let socket = s.socket.clone();
    let waiter = std::thread::spawn(move || {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream
            .write_all(&request_bytes(
                "GET",
                "/api/v1/sandbox.wait?timeout_ms=20000",
                b"",
            ))
            .unwrap();
        read_answer(&mut stream)
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.call("PUT", "/api/v1/sandbox.stop", "").status, 204);
    let a = waiter.join().unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["reason"], "api_stop");
    let status = s.call("GET", "/api/v1/sandbox.status", "").json();
    assert_eq!(status["state"], "stopped");
    assert_eq!(status["sandbox_id"], "pod");
}

#[test]
fn sandbox_events_page_and_long_poll() {
    let s = start("events");
    let a = s.call("GET", "/api/v1/sandbox.events", "");
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["events"].as_array().map(Vec::len), Some(0));
    let shared = s.shared.clone();
    let pusher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        shared.push_event(vmm::api::events::Event {
            seq: 0,
            timestamp_ms: 0,
            source: "vm",
            event: "booted",
            detail: None,
        });
    });
    let started = Instant::now();
    let a = s.call("GET", "/api/v1/sandbox.events?since=0&timeout_ms=20000", "");
    pusher.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let v = a.json();
    assert_eq!(v["events"][0]["event"], "booted", "{v}");
    assert_eq!(v["next"], 1);
    let a = s.call("GET", "/api/v1/sandbox.events?since=1&timeout_ms=30", "");
    assert_eq!(a.json()["events"].as_array().map(Vec::len), Some(0));
}

#[test]
fn unbuilt_features_and_vmm_errors_are_clear() {
    let s = start("unbuilt");
    for name in [
        "vm.add-net",
        "vm.add-device",
        "vm.resize",
        "vm.snapshot",
        "vm.restore",
    ] {
        let a = s.call("PUT", &format!("/api/v1/{name}"), "{}");
        assert_eq!(a.status, 501, "{name}");
        let chain: Vec<String> = serde_json::from_slice(&a.body).unwrap();
        assert!(chain[0].starts_with(name), "{chain:?}");
    }
    let a = s.call("PUT", "/api/v1/vm.pause", "");
    assert_eq!(a.status, 501);
    let a = s.call("GET", "/api/v1/vm.info", "");
    assert_eq!(a.status, 500, "no VM yet: {a:?}");
    let a = s.call("GET", "/api/v1/sandbox.platform", "");
    assert_eq!(a.json()["os"], "linux");
}

#[test]
fn stop_flushes_the_reply_in_flight_then_closes() {
    let mut s = start("stop");
    let mut stream = s.connect();
    stream
        .write_all(&request_bytes("PUT", "/api/v1/vmm.shutdown", b""))
        .unwrap();
    // Wait until the fake has executed the command, then stop the server at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.seen.lock().unwrap().contains(&"vmm.shutdown") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    s.stop();
    assert_eq!(read_answer(&mut stream).status, 204);
    assert!(
        UnixStream::connect(&s.socket).is_err() || {
            // The socket file may remain; nobody answers on it.
            let mut c = UnixStream::connect(&s.socket).unwrap();
            c.write_all(&request_bytes("GET", "/api/v1/vmm.ping", b""))
                .ok();
            let mut buf = [0u8; 1];
            c.set_read_timeout(Some(Duration::from_secs(2))).ok();
            !matches!(c.read(&mut buf), Ok(n) if n > 0)
        }
    );
}
