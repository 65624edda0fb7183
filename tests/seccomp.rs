//! System-call filters per thread role, seen from outside the process.
//!
//! - the probe's device scenarios (`poweroff`, `blk-read`, `vsock-echo`, `rng`) pass with
//!   `--seccomp true` (also the default): no thread needs a call its role leaves out;
//! - while a VM runs with a disk, vsock and rng, every thread of `podvisor run` and of the
//!   API mode shows `Seccomp: 2` (filter mode) and `NoNewPrivs: 1` in /proc, and vCPU, device
//!   and console threads carry their own filter on top of the one they inherited;
//! - `--seccomp log` installs the same filters (a forbidden call is then logged and let through,
//!   see the unit tests); with `--seccomp false` no thread has a filter (so the check can fail).
//!
//! That a forbidden call in each role ends the process is shown by the unit tests in
//! `vmm/src/seccomp/tests.rs`, which confine forked children to each role.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: test file.

mod api_client;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use podvisor_tests::probe::{self, ProbeRun, ProbeVm, EXIT_POWER_OFF};
use podvisor_tests::scratch::{pattern, Scratch};

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");
const PATIENCE: Duration = Duration::from_secs(120);
const AGENT_PORT: u32 = 1024;

fn run_clean(vm: ProbeVm) -> ProbeRun {
    let run = vm.run(PODVISOR).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.exit_code(), Some(EXIT_POWER_OFF), "{}", run.describe());
    assert!(run.errors().is_empty(), "{}", run.describe());
    run
}

#[test]
fn device_scenarios_pass_with_filters_on() {
    if !probe::require_kvm() {
        return;
    }
    run_clean(ProbeVm::new("poweroff").arg("--seccomp").arg("true"));
    let r = run_clean(ProbeVm::new("boot").cpus(2).arg("--seccomp").arg("true"));
    assert_eq!(r.result_u64("cpus"), Some(2), "{}", r.describe());

    let r = run_clean(
        ProbeVm::new("rng")
            .arg("--seccomp")
            .arg("true")
            .arg("--rng")
            .arg("src=/dev/urandom"),
    );
    assert_eq!(
        r.result("rng-differ").as_deref(),
        Some("1"),
        "{}",
        r.describe()
    );

    let scratch = Scratch::new("seccomp", "blk").unwrap();
    let kib = 64;
    let bytes = pattern(kib * 1024 + (1 << 20), 7);
    let disk = scratch.file("disk.img", &bytes).unwrap();
    let r = run_clean(
        ProbeVm::new("blk-read")
            .param("probe.blk-kib", kib)
            .arg("--seccomp")
            .arg("true")
            .arg("--disk")
            .arg(&format!("path={}", disk.display())),
    );
    assert!(r.result("blk-read-sha256").is_some(), "{}", r.describe());

    // vsock: the guest echoes on port 1024 and ends on a connection to port 1025.
    let socket = scratch.path().join("vsock.sock");
    let vm = ProbeVm::new("vsock-echo")
        .memory_mib(256)
        .timeout(Duration::from_secs(300))
        .arg("--seccomp")
        .arg("true")
        .arg("--vsock")
        .arg(&format!("cid=3,socket={}", socket.display()));
    let guest = std::thread::spawn(move || vm.run(PODVISOR));
    let mut s = dial(&socket, AGENT_PORT);
    s.write_all(b"through the filters").unwrap();
    let mut back = [0u8; 19];
    std::io::Read::read_exact(&mut s, &mut back).unwrap();
    assert_eq!(&back, b"through the filters");
    drop(s);
    let _ = dial(&socket, 1025);
    let r = guest.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.exit_code(), Some(EXIT_POWER_OFF), "{}", r.describe());
}

/// Connects to guest port `port` through the hybrid vsock socket, retrying until the VMM
/// and the guest listen; returns the stream after the `OK` line.
fn dial(socket: &Path, port: u32) -> UnixStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(mut s) = UnixStream::connect(socket) {
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            if s.write_all(format!("CONNECT {port}\n").as_bytes()).is_ok() {
                let mut line = String::new();
                let mut reader = BufReader::new(s.try_clone().unwrap());
                if reader.read_line(&mut line).is_ok() && line.starts_with("OK ") {
                    return s;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "guest port {port} never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request line to the probe's agent; returns the answer line.
fn agent(socket: &Path, request: &str) -> String {
    let mut s = dial(socket, AGENT_PORT);
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// Per thread of `pid`: name → the `Seccomp`, `Seccomp_filters` and `NoNewPrivs` fields.
#[derive(Debug)]
struct ThreadState {
    name: String,
    seccomp: String,
    filters: u32,
    no_new_privs: String,
}

fn threads(pid: u32) -> Vec<ThreadState> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        let fields: BTreeMap<&str, &str> = status
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k, v.trim()))
            .collect();
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        out.push(ThreadState {
            name: comm.trim().to_owned(),
            seccomp: fields.get("Seccomp").copied().unwrap_or("?").to_owned(),
            filters: fields
                .get("Seccomp_filters")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            no_new_privs: fields.get("NoNewPrivs").copied().unwrap_or("?").to_owned(),
        });
    }
    out
}

/// Every thread is filtered; each name in `expected` is present (a trailing `*` matches a
/// prefix); the threads named in `stacked` carry a filter of their own on top of the
/// inherited one.
fn assert_all_filtered(pid: u32, expected: &[&str], stacked: &[&str]) {
    let threads = threads(pid);
    let matches = |pat: &str, name: &str| match pat.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pat,
    };
    for pat in expected {
        assert!(
            threads.iter().any(|t| matches(pat, &t.name)),
            "no thread {pat}: {threads:#?}"
        );
    }
    // KVM's own worker (`kvm-nx-lpage-recovery`) is a kernel thread in the process's task
    // list; it runs no code of ours.
    let threads: Vec<_> = threads
        .into_iter()
        .filter(|t| !t.name.starts_with("kvm-"))
        .collect();
    for t in &threads {
        assert_eq!(t.seccomp, "2", "{t:?} is not filtered: {threads:#?}");
        assert_eq!(t.no_new_privs, "1", "{t:?}");
        assert!(t.filters >= 1, "{t:?}");
        if stacked.iter().any(|pat| matches(pat, &t.name)) {
            assert!(t.filters >= 2, "{t:?} has no filter of its own");
        }
    }
    println!("{threads:#?}");
}

fn assert_none_filtered(pid: u32) {
    let threads = threads(pid);
    assert!(threads.len() >= 3, "{threads:#?}");
    for t in threads.iter().filter(|t| !t.name.starts_with("kvm-")) {
        assert_eq!(t.seccomp, "0", "{t:?}");
    }
}

/// `podvisor run` of the probe's agent with a disk, vsock and rng, stdin on the console.
struct AgentRun {
    child: Child,
    socket: PathBuf,
    _scratch: Scratch,
}

impl AgentRun {
    fn start(tag: &str, seccomp: &str) -> Self {
        let scratch = Scratch::new("seccomp", tag).unwrap();
        let disk = scratch.file("disk.img", &pattern(1 << 20, 3)).unwrap();
        let socket = scratch.path().join("vsock.sock");
        let args = ProbeVm::new("agent")
            .param("probe.secs", 600)
            .arg("--seccomp")
            .arg(seccomp)
            .arg("--disk")
            .arg(&format!("path={}", disk.display()))
            .arg("--vsock")
            .arg(&format!("cid=3,socket={}", socket.display()))
            .arg("--rng")
            .arg("src=/dev/urandom")
            .args();
        let child = Command::new(PODVISOR)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            socket,
            _scratch: scratch,
        }
    }

    /// Activates the disk (a hash through the agent) and the vsock device.
    fn exercise(&self) {
        let answer = agent(&self.socket, "disk-sha256 16K");
        assert!(answer.starts_with("ok "), "{answer:?}");
    }

    fn power_off(mut self) {
        assert_eq!(agent(&self.socket, "poweroff"), "ok bye");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(status.signal(), None, "{status:?}");
                assert_eq!(status.code(), Some(EXIT_POWER_OFF), "{status:?}");
                return;
            }
            assert!(Instant::now() < deadline, "no exit after poweroff");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_thread_of_a_running_vm_is_filtered() {
    if !probe::require_kvm() {
        return;
    }
    let run = AgentRun::start("run", "true");
    run.exercise();
    assert_all_filtered(
        run.child.id(),
        &[
            "podvisor",
            "vmm",
            "vmm-spawner",
            "vcpu0",
            "signals",
            "console-in",
            "blk-*",
            "vsock-*",
        ],
        &["vcpu*", "blk-*", "vsock-*", "console-in"],
    );
    run.power_off();
}

#[test]
fn seccomp_false_installs_no_filter() {
    if !probe::require_kvm() {
        return;
    }
    let run = AgentRun::start("off", "false");
    run.exercise();
    assert_none_filtered(run.child.id());
    run.power_off();
}

#[test]
fn seccomp_log_installs_the_same_filters() {
    if !probe::require_kvm() {
        return;
    }
    let run = AgentRun::start("log", "log");
    run.exercise();
    assert_all_filtered(
        run.child.id(),
        &["podvisor", "vmm", "vcpu0", "blk-*", "vsock-*"],
        &["vcpu*", "blk-*", "vsock-*"],
    );
    run.power_off();
}

#[test]
fn api_mode_threads_are_filtered() {
    if !probe::require_kvm() {
        return;
    }
    let vmm = api_client::Podvisor::spawn("seccomp", &[]);
    let vsock = vmm.file("vsock.sock");
    let disk = vmm.file("disk.img");
    std::fs::write(&disk, pattern(1 << 20, 5)).unwrap();
    let mut vm: serde_json::Value = serde_json::from_str(&api_client::probe_config(
        "agent",
        "probe.secs=600",
        &vmm.file("console"),
    ))
    .unwrap();
    vm["vsock"] = serde_json::json!({"cid": 3, "socket": vsock});
    vm["disks"] = serde_json::json!([{"path": disk}]);
    let spec = serde_json::json!({
        "sandbox_id": "seccomp",
        "vm": vm,
        "agent_vsock_port": AGENT_PORT,
    });
    let a = vmm.call("PUT", "/api/v1/sandbox.create", &spec.to_string());
    assert_eq!(a.status, 204, "{a:?}");
    let start =
        serde_json::json!({"wait_for_agent": true, "timeout_ms": PATIENCE.as_millis() as u64});
    let a = vmm.call("PUT", "/api/v1/sandbox.start", &start.to_string());
    assert_eq!(a.status, 200, "{a:?}\n{}", vmm.stderr());
    let answer = agent(&vsock, "disk-sha256 16K");
    assert!(answer.starts_with("ok "), "{answer:?}");
    assert_all_filtered(
        vmm.child.id(),
        &[
            "podvisor",
            "vmm",
            "vm",
            "api",
            "signals",
            "vmm-spawner",
            "vcpu0",
            "blk-*",
            "vsock-*",
        ],
        &["vcpu*", "blk-*", "vsock-*"],
    );
    assert_eq!(vmm.call("PUT", "/api/v1/sandbox.stop", "").status, 204);
    let a = vmm.call("GET", "/api/v1/sandbox.wait?timeout_ms=60000", "");
    assert_eq!(a.json()["reason"], "api_stop", "{a:?}\n{}", vmm.stderr());
}
