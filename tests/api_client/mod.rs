//! A spawned `podvisor --api-socket` process and a minimal HTTP/1.1 client for it, shared by
//! the `api_*` tests. Requests are written by hand so tests control the bytes on the wire.
#![allow(dead_code)] // reason: each test file uses a different subset.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

/// Generous bound on anything a loaded 2-core PVM host does in "a moment".
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The bytes of one request with a Content-Length body.
pub fn request_bytes(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads one Content-Length-framed response.
pub fn read_answer(stream: &mut UnixStream) -> std::io::Result<Answer> {
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Answer {
        status,
        headers: head,
        body,
    })
}

/// One request on a fresh connection.
pub fn call_at(socket: &Path, method: &str, path: &str, body: &str) -> std::io::Result<Answer> {
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(&request_bytes(method, path, body.as_bytes()))?;
    read_answer(&mut stream)
}

/// A running `podvisor --api-socket`; killed on drop if still alive.
pub struct Podvisor {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Time from spawn to the first answered `vmm.ping`.
    pub ready_after: Duration,
}

impl Podvisor {
    /// Spawns the VMM and polls `vmm.ping` until it answers, as Kata does.
    pub fn spawn(tag: &str, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("podvisor-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("api.sock");
        let started = Instant::now();
        let child = Command::new(PODVISOR)
            .arg("--api-socket")
            .arg(format!("path={}", socket.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut vmm = Self {
            child,
            dir,
            socket,
            ready_after: Duration::ZERO,
        };
        loop {
            if let Ok(a) = call_at(&vmm.socket, "GET", "/api/v1/vmm.ping", "") {
                assert_eq!(a.status, 200, "{a:?}");
                vmm.ready_after = started.elapsed();
                return vmm;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "no ping answer after {PATIENCE:?}\n{}",
                vmm.stderr()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn call(&self, method: &str, path: &str, body: &str) -> Answer {
        call_at(&self.socket, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.stderr()))
    }

    /// `vm.info`'s state.
    pub fn state(&self) -> String {
        let a = self.call("GET", "/api/v1/vm.info", "");
        a.json()["state"].as_str().unwrap_or("").to_owned()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Names of the process's threads.
    pub fn thread_names(&self) -> Vec<String> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let Ok(dir) = std::fs::read_dir(tasks) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
            .map(|s| s.trim().to_owned())
            .collect()
    }
}

impl Drop for Podvisor {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `vm.create` body booting the probe guest's `scenario` with `params`, serial to `serial`.
pub fn probe_config(scenario: &str, params: &str, serial: &Path) -> String {
    let probe = podvisor_tests::probe::probe_path();
    serde_json::json!({
        "payload": {
            "kernel": probe,
            "cmdline": format!("console=ttyS0 probe.run={scenario} {params}"),
        },
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": 128u64 << 20},
        "serial": {"mode": "File", "file": serial},
        "console": {"mode": "Off"},
        "rng": {"src": "/dev/urandom"},
    })
    .to_string()
}

/// A `vm.create` body booting the Linux guest kit (2 vCPUs, 512 MiB) with `init` as the kit's
/// `/init` action (`podvisor.init=`) and `params` after it, console to `serial`.
pub fn linux_config(
    kit: &podvisor_tests::linux::Kit,
    init: &str,
    params: &str,
    serial: &Path,
) -> String {
    serde_json::json!({
        "payload": {
            "kernel": kit.vmlinux,
            "initramfs": kit.initramfs,
            "cmdline": format!("console=ttyS0 loglevel=4 podvisor.init={init} {params}"),
        },
        "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
        "memory": {"size": 512u64 << 20},
        "serial": {"mode": "File", "file": serial},
        "console": {"mode": "Off"},
    })
    .to_string()
}
