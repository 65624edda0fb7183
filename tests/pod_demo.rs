//! The pod demo end to end (the sequence `scripts/demo` runs after setup and build):
//! `scripts/lib/pod_demo.py` drives this build's `podvisor --api-socket` through
//! `sandbox.create` (disk, vsock agent channel, virtio-fs share served by virtiofsd), `sandbox.start` waiting for the probe's `agent` scenario, requests over the
//! hybrid-vsock socket checked against the host, and `sandbox.stop`. The script exits non-zero
//! on any wrong answer, so the demo cannot rot silently.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use podvisor_tests::linux::{self, HostMode};
use podvisor_tests::probe::{probe_path, require_kvm};

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

/// The virtiofsd that scripts/setup installs, if this build can use it.
/// The virtiofsd scripts/setup installs; the demo's share needs it.
fn virtiofsd() -> PathBuf {
    let bin = podvisor_tests::virtiofsd::binary();
    assert!(
        bin.exists(),
        "{} missing: scripts/setup installs virtiofsd",
        bin.display()
    );
    bin
}

#[test]
fn the_pod_demo_answers_through_the_api_and_the_probe_agent() {
    if !require_kvm() {
        return;
    }
    let probe = probe_path();
    run_demo("probe", &[OsStr::new("--probe"), probe.as_os_str()]);
}

/// On full-KVM hosts the demo's default agent: the Linux guest kit's /init.
#[test]
fn the_pod_demo_answers_through_the_api_and_the_linux_agent() {
    let Some((kit, mode)) = linux::prepare().unwrap_or_else(|e| panic!("{e}")) else {
        return;
    };
    if mode == HostMode::EarlyBootOnly {
        println!("not run: Linux cannot reach init on PVM (the probe's agent runs instead)");
        return;
    }
    run_demo(
        "linux",
        &[
            OsStr::new("--linux-kernel"),
            kit.vmlinux.as_os_str(),
            OsStr::new("--linux-initramfs"),
            kit.initramfs.as_os_str(),
        ],
    );
}

fn run_demo(name: &str, guest: &[&OsStr]) {
    let work =
        std::env::temp_dir().join(format!("podvisor-pod-demo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/pod_demo.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg("--podvisor")
        .arg(PODVISOR)
        .args(guest)
        .arg("--work")
        .arg(&work)
        .args(["--disk-kib", "64"]);
    cmd.arg("--virtiofsd").arg(virtiofsd());
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = std::fs::read_to_string(work.join("console.log")).unwrap_or_default();
    let vmm_log = std::fs::read_to_string(work.join("podvisor.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&work);
    let context = format!(
        "{stdout}\n--- stderr ---\n{stderr}\n--- console ---\n{console}\n--- podvisor ---\n{vmm_log}"
    );
    assert!(out.status.success(), "{context}");
    assert!(stdout.contains("< ok hello, pod"), "{context}");
    assert!(
        stdout.contains("agent ready on vsock port 1024"),
        "{context}"
    );
    assert!(
        stdout.contains("sandbox.stop: VM ended (api_stop)"),
        "{context}"
    );
    assert!(stdout.contains("> read hello.txt"), "{context}");
}
