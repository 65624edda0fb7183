//! The VMM's descriptor ceiling (`RLIMIT_NOFILE`, `vmm::fd_limit`): it is in force, soft and
//! hard, while the guest runs — the computed budget by default, `--rlimit-nofile N` when
//! given — and running into it costs only the connection that wanted one more descriptor:
//! hybrid-vsock clients beyond it are closed while the guest's echo keeps serving, API
//! clients beyond it get a 503 while the API and its VM keep answering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: test file.

mod api_client;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use api_client::{probe_config, read_answer, request_bytes, Podvisor};
use podvisor_tests::probe::{self, ProbeError, ProbeRun, ProbeVm, EXIT_POWER_OFF};
use podvisor_tests::scratch::Scratch;
use podvisor_tests::vmm_process;
use vmm::config::{vsock::parse_vsock, VmConfig};
use vmm::fd_limit::FdBudget;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

/// `Max open files` of `pid`: (soft, hard).
fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut words = line
        .split_whitespace()
        .skip(3)
        .map(|w| w.parse::<u64>().unwrap());
    (words.next().unwrap(), words.next().unwrap())
}

fn pid_of(socket: &Path) -> u32 {
    vmm_process::pid_serving(socket).unwrap_or_else(|| panic!("no podvisor process for {socket:?}"))
}

/// The probe's `vsock-echo` in the background, with `extra` VMM arguments.
struct EchoVm {
    socket: std::path::PathBuf,
    thread: Option<JoinHandle<Result<ProbeRun, ProbeError>>>,
}

impl EchoVm {
    fn start(socket: &Path, extra: &[&str]) -> Self {
        let mut vm = ProbeVm::new("vsock-echo")
            .memory_mib(128)
            .arg("--vsock")
            .arg(&format!("cid=3,socket={}", socket.display()))
            .timeout(Duration::from_secs(600));
        for a in extra {
            vm = vm.arg(a);
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

    /// Dials guest port 1024; the stream after `OK`, or `None` if the VMM closed it.
    fn dial(&self, port: u32) -> Option<UnixStream> {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        // The VMM may close a client it cannot serve before its line is written: then the
        // read below ends at once.
        let _ = s.write_all(format!("CONNECT {port}\n").as_bytes());
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match s.read(&mut byte) {
                Ok(0) | Err(_) => return None,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
            }
        }
        assert!(line.starts_with(b"OK "), "{line:?}");
        Some(s)
    }

    /// Dials until the guest listens (its driver may still be coming up).
    fn dial_when_ready(&self) -> UnixStream {
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(s) = self.dial(1024) {
                return s;
            }
            assert!(Instant::now() < end, "the guest never accepted");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(mut self) -> ProbeRun {
        let _ = self.dial(1025);
        let run = self.thread.take().unwrap().join().unwrap();
        run.unwrap_or_else(|e| panic!("{e}"))
    }
}

fn echo_once(s: &mut UnixStream, what: &[u8]) {
    s.write_all(what).unwrap();
    let mut back = vec![0u8; what.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, what);
}

#[test]
fn the_computed_or_given_limit_is_in_force_while_the_guest_runs() {
    if !probe::require_kvm() {
        return;
    }
    let dir = Scratch::new("fd-limit", "applied").unwrap();
    let (_, host_hard) = nofile(std::process::id());

    // Default: the budget of this configuration (one vCPU, a vsock device).
    let socket = dir.0.join("a.sock");
    let vm = EchoVm::start(&socket, &[]);
    let mut config = VmConfig::new("/probe".into());
    config.vsock = Some(parse_vsock(&format!("cid=3,socket={}", socket.display())).unwrap());
    let budget = FdBudget::for_vm(&config).total().min(host_hard);
    let mut s = vm.dial_when_ready();
    echo_once(&mut s, b"computed");
    assert_eq!(nofile(pid_of(&socket)), (budget, budget));
    drop(s);
    let run = vm.stop();
    assert_eq!(run.exit_code(), Some(EXIT_POWER_OFF), "{}", run.describe());

    // Given: exactly that.
    let socket = dir.0.join("b.sock");
    let vm = EchoVm::start(&socket, &["--rlimit-nofile", "200"]);
    let mut s = vm.dial_when_ready();
    echo_once(&mut s, b"given");
    assert_eq!(nofile(pid_of(&socket)), (200, 200));
    drop(s);
    let run = vm.stop();
    assert_eq!(run.exit_code(), Some(EXIT_POWER_OFF), "{}", run.describe());

    // Nonsense, or more than the host allows, is refused before anything runs.
    for bad in ["0", "lots", &(host_hard.saturating_add(1)).to_string()] {
        if bad == "0" || bad == "lots" || host_hard < u64::MAX {
            let out = std::process::Command::new(PODVISOR)
                .args(ProbeVm::new("boot").arg("--rlimit-nofile").arg(bad).args())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        }
    }
}

#[test]
fn vsock_clients_beyond_the_limit_are_closed_and_the_guest_keeps_serving() {
    if !probe::require_kvm() {
        return;
    }
    let dir = Scratch::new("fd-limit", "vsock").unwrap();
    let socket = dir.0.join("v.sock");
    // An idle VM with an active vsock device holds about 35 descriptors.
    let vm = EchoVm::start(&socket, &["--rlimit-nofile", "64"]);
    let mut first = vm.dial_when_ready();
    echo_once(&mut first, b"before");
    let mut held = Vec::new();
    let refused = loop {
        let dialled = Instant::now();
        match vm.dial(1024) {
            Some(s) => held.push(s),
            None => {
                // Closed at once from the muxer's reserved descriptor, not left in the
                // backlog until the client's 60 s read timeout.
                assert!(dialled.elapsed() < Duration::from_secs(30), "left waiting");
                break held.len();
            }
        }
        assert!(held.len() < 64, "64 connections beyond a limit of 64");
    };
    println!("{refused} connections held when the next was closed");
    assert!(refused > 0);
    // The connections already open still echo; so do new ones once descriptors are free.
    echo_once(&mut first, b"during");
    echo_once(held.last_mut().unwrap(), b"the last one");
    drop(held);
    let end = Instant::now() + Duration::from_secs(60);
    let mut again = loop {
        if let Some(s) = vm.dial(1024) {
            break s;
        }
        assert!(
            Instant::now() < end,
            "no connection after the others closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    echo_once(&mut again, b"after");
    drop((first, again));
    let run = vm.stop();
    assert_eq!(run.exit_code(), Some(EXIT_POWER_OFF), "{}", run.describe());
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

/// Sends `vm.info` on `s` and reads the answer.
fn info(s: &mut UnixStream) -> std::io::Result<api_client::Answer> {
    // A client refused for want of descriptors may be answered and closed before its request
    // is written; the answer is still there to read.
    let _ = s.write_all(&request_bytes("GET", "/api/v1/vm.info", b""));
    read_answer(s)
}

#[test]
fn api_clients_beyond_the_limit_get_503_and_the_api_and_vm_carry_on() {
    if !probe::require_kvm() {
        return;
    }
    let vmm = Podvisor::spawn("fd-limit", &["--rlimit-nofile", "64"]);
    let serial = vmm.file("serial");
    let config = probe_config("idle", "probe.secs=600", &serial);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    assert_eq!(vmm.state(), "Running");

    let mut held = Vec::new();
    let refusal = loop {
        let mut s = UnixStream::connect(&vmm.socket).unwrap();
        let a = info(&mut s).unwrap_or_else(|e| panic!("{e}\n{}", vmm.stderr()));
        if a.status == 503 {
            break a;
        }
        assert_eq!(a.status, 200, "{a:?}");
        held.push(s);
        assert!(held.len() < 64, "64 clients beyond a limit of 64");
    };
    println!("{} clients held when the next got 503", held.len());
    let why: Vec<String> = serde_json::from_slice(&refusal.body).unwrap();
    assert!(why[0].contains("file descriptors"), "{why:?}");
    // The clients already in keep being served.
    assert_eq!(info(held.last_mut().unwrap()).unwrap().status, 200);
    drop(held);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = UnixStream::connect(&vmm.socket).unwrap();
        if matches!(info(&mut s).map(|a| a.status), Ok(200)) {
            break;
        }
        assert!(Instant::now() < end, "the API never recovered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(vmm.state(), "Running");
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
    let mut vmm = vmm;
    assert!(vmm.wait_exit(Duration::from_secs(60)).is_some());
    assert!(!vmm.stderr().contains("panicked"), "{}", vmm.stderr());
}
