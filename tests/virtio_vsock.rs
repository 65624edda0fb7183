//! virtio-vsock end to end with the hybrid Unix-socket backend: the probe guest plays the pod
//! agent (`vsock-echo`: echoes port 1024, connects out to host port 2000, ends on a connection
//! to port 1025) and the host talks to it through `--vsock cid=3,socket=PATH`.
//!
//! - host→guest echo of 16 MiB (`PODVISOR_VSOCK_ECHO_MIB` to change) with a checksum, the
//!   first bytes sent right behind the `CONNECT` line; the guest's `probe-hello` reaches
//!   `PATH_2000`; 64 connections echo at once; a storm of 2,000 CONNECT/RST cycles to a port
//!   nobody listens on leaves the VMM's file descriptors and RSS flat;
//! - a client that dials before the guest listens is closed with no text, and the same dial
//!   succeeds once the guest listens;
//! - host peers that vanish mid-stream (closing while they write, or without reading the
//!   echo) cost the VMM nothing: the next connection echoes intact and no descriptor leaks;
//! - bad `--vsock` values are refused with exit status 2.
// Helpers outside #[test] functions fail the test by panicking, as the tests themselves do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use podvisor_tests::probe::{self, ProbeError, ProbeRun, ProbeVm, EXIT_INVALID_CONFIG};
use podvisor_tests::scratch::{pattern, Scratch};
use podvisor_tests::vmm_process;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");
const MIB: usize = 1 << 20;
const FIRST_HOST_PORT: u64 = 1 << 30;

/// The probe running `vsock-echo` in the background.
struct EchoVm {
    socket: PathBuf,
    thread: Option<JoinHandle<Result<ProbeRun, ProbeError>>>,
}

impl EchoVm {
    fn start(socket: &Path, params: &[(&str, u64)]) -> Self {
        let mut vm = ProbeVm::new("vsock-echo")
            .memory_mib(256)
            .arg("--vsock")
            .arg(&format!("cid=3,socket={}", socket.display()))
            .timeout(Duration::from_secs(600));
        for (k, v) in params {
            vm = vm.param(k, v);
        }
        let thread = std::thread::spawn(move || vm.run(PODVISOR));
        let end = Instant::now() + Duration::from_secs(60);
        while !socket.exists() {
            assert!(Instant::now() < end, "the VMM never created {socket:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            socket: socket.to_owned(),
            thread: Some(thread),
        }
    }

    /// Dials `port`; returns the stream after `OK <host port>`, or `None` if the VMM closed
    /// it with no text.
    fn dial(&self, port: u32, early: &[u8]) -> Option<(UnixStream, u64)> {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut msg = format!("CONNECT {port}\n").into_bytes();
        msg.extend_from_slice(early);
        s.write_all(&msg).unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match s.read(&mut byte) {
                Ok(0) | Err(_) => {
                    assert!(line.is_empty(), "closed after {line:?}");
                    return None;
                }
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
            }
            assert!(line.len() < 32, "no OK line: {line:?}");
        }
        let text = String::from_utf8(line).unwrap();
        let host_port = text
            .strip_prefix("OK ")
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("bad reply {text:?}"));
        assert!(host_port >= FIRST_HOST_PORT, "host port {host_port}");
        Some((s, host_port))
    }

    /// Asks the guest to end and waits for the VMM to exit.
    fn stop(mut self) -> ProbeRun {
        let _ = self.dial(1025, b"");
        let run = self.thread.take().unwrap().join().unwrap();
        run.unwrap_or_else(|e| panic!("{e}"))
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Sends `data` through the echo (writer on its own thread) and returns what came back.
fn echo(stream: UnixStream, data: Vec<u8>, early: usize) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let total = data.len();
    let w = std::thread::spawn(move || {
        for chunk in data[early..].chunks(64 * 1024) {
            writer.write_all(chunk).unwrap();
        }
    });
    let mut reader = stream;
    let mut back = vec![0u8; total];
    reader.read_exact(&mut back).unwrap();
    w.join().unwrap();
    back
}

fn pid_of(socket: &Path) -> u32 {
    vmm_process::pid_serving(socket).unwrap_or_else(|| panic!("no podvisor process for {socket:?}"))
}

fn fds(pid: u32) -> usize {
    vmm_process::open_fds(pid)
}

fn rss_kib(pid: u32) -> u64 {
    vmm_process::rss_kib(pid).unwrap_or_else(|| panic!("no status for pid {pid}"))
}

#[test]
fn echo_hello_concurrency_and_redial_storm() {
    if !probe::require_kvm() {
        return;
    }
    let dir = Scratch::new("vsock", "echo").unwrap();
    let socket = dir.0.join("vsock.sock");
    // The guest's own connection goes to PATH_2000.
    let hello = UnixListener::bind(format!("{}_2000", socket.display())).unwrap();
    let hello_thread = std::thread::spawn(move || {
        let (s, _) = hello.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut got = Vec::new();
        let _ = BufReader::new(s).read_to_end(&mut got);
        got
    });
    let vm = EchoVm::start(&socket, &[]);

    // 16 MiB through one connection, its first bytes glued to the CONNECT line.
    let mib: usize = std::env::var("PODVISOR_VSOCK_ECHO_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let data = pattern(mib * MIB, 7);
    let early = 1000.min(data.len());
    let end = Instant::now() + Duration::from_secs(120);
    let (stream, port1) = loop {
        // The guest may still be bringing its driver up: retry until it listens.
        if let Some(c) = vm.dial(1024, &data[..early]) {
            break c;
        }
        assert!(Instant::now() < end, "the guest never accepted");
        std::thread::sleep(Duration::from_millis(100));
    };
    let started = Instant::now();
    let back = echo(stream, data.clone(), early);
    println!(
        "echoed {mib} MiB in {:?} (host port {port1})",
        started.elapsed()
    );
    assert_eq!(fnv(&back), fnv(&data), "echoed bytes differ");
    assert!(back == data);

    // 64 connections at once.
    let conns: Vec<_> = (0..64)
        .map(|i| {
            let (s, port) = vm.dial(1024, b"").expect("refused");
            (i, s, port)
        })
        .collect();
    let mut ports: Vec<u64> = conns.iter().map(|c| c.2).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 64, "host ports are unique");
    let workers: Vec<_> = conns
        .into_iter()
        .map(|(i, s, _)| std::thread::spawn(move || (i, echo(s, pattern(4096, i), 0))))
        .collect();
    for w in workers {
        let (i, back) = w.join().unwrap();
        assert_eq!(back, pattern(4096, i), "connection {i}");
    }

    // Redial storm against a port nobody listens on: every dial is closed without text.
    let pid = pid_of(&socket);
    let storm = |n: usize| {
        for _ in 0..n {
            assert!(vm.dial(1026, b"").is_none());
        }
    };
    storm(200);
    std::thread::sleep(Duration::from_millis(200));
    let (fds0, rss0) = (fds(pid), rss_kib(pid));
    let started = Instant::now();
    storm(2000);
    let storm_time = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let (fds1, rss1) = (fds(pid), rss_kib(pid));
    println!("storm: 2000 cycles in {storm_time:?}; fds {fds0}→{fds1}, RSS {rss0}→{rss1} KiB");
    assert!(fds1 <= fds0, "file descriptors grew from {fds0} to {fds1}");
    assert!(rss1 <= rss0 + 1024, "RSS grew from {rss0} to {rss1} KiB");

    let run = vm.stop();
    let got = hello_thread.join().unwrap();
    assert_eq!(got, b"probe-hello", "{}", run.describe());
    assert_eq!(
        run.exit_code(),
        Some(probe::EXIT_POWER_OFF),
        "{}",
        run.describe()
    );
    assert_eq!(
        run.result("vsock-end").as_deref(),
        Some("stop"),
        "{}",
        run.describe()
    );
    assert_eq!(
        run.result("vsock-cid").as_deref(),
        Some("3"),
        "{}",
        run.describe()
    );
    assert_eq!(
        run.result("vsock-hello").as_deref(),
        Some("sent"),
        "{}",
        run.describe()
    );
    assert_eq!(
        run.result_u64("vsock-echo-bytes"),
        Some((mib * MIB + 64 * 4096) as u64),
        "{}",
        run.describe()
    );
}

#[test]
fn dial_before_the_guest_listens_is_closed_then_succeeds() {
    if !probe::require_kvm() {
        return;
    }
    let dir = Scratch::new("vsock", "early").unwrap();
    let socket = dir.0.join("vsock.sock");
    // No PATH_2000: the guest's own connection is refused.
    let vm = EchoVm::start(&socket, &[("probe.vsock-listen-delay-ms", 3000)]);
    let mut closed = 0;
    let end = Instant::now() + Duration::from_secs(180);
    let mut stream = loop {
        match vm.dial(1024, b"ping") {
            Some((s, _)) => break s,
            None => closed += 1,
        }
        assert!(Instant::now() < end, "the guest never accepted");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(closed > 0, "the first dial should have been refused");
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    drop(stream);
    let run = vm.stop();
    assert_eq!(
        run.result("vsock-hello").as_deref(),
        Some("refused"),
        "{}",
        run.describe()
    );
    assert_eq!(
        run.result("vsock-end").as_deref(),
        Some("stop"),
        "{}",
        run.describe()
    );
}

#[test]
fn host_peers_vanishing_mid_stream_leave_the_next_connection_intact() {
    if !probe::require_kvm() {
        return;
    }
    let dir = Scratch::new("vsock", "vanish").unwrap();
    let socket = dir.0.join("vsock.sock");
    let vm = EchoVm::start(&socket, &[]);
    let end = Instant::now() + Duration::from_secs(120);
    let (first, _) = loop {
        if let Some(c) = vm.dial(1024, b"") {
            break c;
        }
        assert!(Instant::now() < end, "the guest never accepted");
        std::thread::sleep(Duration::from_millis(100));
    };
    let pid = pid_of(&socket);
    // Settle the first connection (and whatever it allocates) before counting descriptors.
    assert_eq!(echo(first, pattern(4096, 1), 0), pattern(4096, 1));
    let fds_before = fds(pid);
    for round in 0..8u64 {
        let (mut s, _) = vm.dial(1024, b"").expect("refused");
        let data = pattern(256 * 1024, round);
        if round % 2 == 0 {
            // Writes half, reads a little of the echo, and is gone.
            s.write_all(&data[..data.len() / 2]).unwrap();
            let mut some = [0u8; 1024];
            s.read_exact(&mut some).unwrap();
            assert_eq!(some[..], data[..1024]);
        } else {
            // Writes everything and is gone without reading a byte.
            s.write_all(&data).unwrap();
        }
        drop(s);
    }
    let data = pattern(MIB, 99);
    let (s, _) = vm
        .dial(1024, b"")
        .expect("refused after the vanished peers");
    assert!(
        echo(s, data.clone(), 0) == data,
        "the next echo is corrupted"
    );
    // The VMM closes its side of each vanished peer once the guest has answered the reset.
    let end = Instant::now() + Duration::from_secs(30);
    while fds(pid) > fds_before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        fds(pid) <= fds_before,
        "descriptors grew from {fds_before} to {}",
        fds(pid)
    );
    let run = vm.stop();
    assert_eq!(
        run.exit_code(),
        Some(probe::EXIT_POWER_OFF),
        "{}",
        run.describe()
    );
    assert!(run.errors().is_empty(), "{}", run.describe());
}

#[test]
fn bad_vsock_values_are_refused() {
    for bad in ["cid=2,socket=/tmp/x", "socket=/tmp/x", "cid=3"] {
        let out = std::process::Command::new(PODVISOR)
            .args(["run", "--kernel", "/nonexistent", "--vsock", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG), "{bad}");
    }
}
