//! virtio-blk and virtio-vsock driven by Linux's own drivers (the guest kit's /init, see
//! `scripts/kit/init`), as a pod's agent and container images use them:
//! - `dd` reads a host-prepared pattern from `/dev/vda` and hashes it, a write to a read-only
//!   `/dev/vdb` is refused and leaves the file untouched, and a copy from `/dev/vdb` onto
//!   `/dev/vda` with `fsync` lands in the host file;
//! - Debian's `socat` echoes guest port 1024 through the hybrid Unix socket, says `probe-hello`
//!   to host port 2000 (`PATH_2000`), and powers the guest off once port 1025 is dialled.
//!
//! Linux reaches its /init only on full-KVM hosts; on PVM hosts it dies in early boot (see
//! `tests/linux_boot.rs`) and the probe guest's scenarios (`tests/virtio_blk.rs`,
//! `tests/virtio_vsock.rs`) drive the same devices instead, so these tests say so and end.
// Helpers outside #[test] functions fail the test by panicking, as the tests themselves do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use podvisor_tests::linux::{self, ConsoleVm, HostMode, Kit, Wait};
use podvisor_tests::scratch::{pattern, Scratch};

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");
const MIB: usize = 1 << 20;
/// MiB `dd` moves in each direction.
const BLK_MIB: usize = 8;

/// The kit and a full-KVM host, or `None` (with the reason printed) where Linux cannot reach
/// init.
fn full_kvm_kit(test: &str) -> Option<Kit> {
    let (kit, mode) = linux::prepare().unwrap_or_else(|e| panic!("{e}"))?;
    println!("{test}: mode: {mode}; kit {}", kit.dir.display());
    if mode == HostMode::EarlyBootOnly {
        println!(
            "{test}: not run: Linux cannot reach init on PVM (the probe guest drives this device)"
        );
        return None;
    }
    Some(kit)
}

/// SHA-256 as lowercase hex, computed by coreutils' `sha256sum` (as the guest's busybox does).
fn sha256_hex(path: &Path) -> String {
    podvisor_tests::scratch::sha256_file(path).unwrap()
}

fn linux_args(kit: &Kit, init: &str, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--kernel".into(),
        kit.vmlinux.display().to_string(),
        "--initramfs".into(),
        kit.initramfs.display().to_string(),
        "--cmdline".into(),
        format!("console=ttyS0 loglevel=4 podvisor.init={init} podvisor.blk-mib={BLK_MIB}"),
        "--cpus".into(),
        "2".into(),
        "--memory".into(),
        "512M".into(),
        "--serial".into(),
        "stdout".into(),
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs the kit with `init` until it powers off; returns its console.
fn run_to_power_off(kit: &Kit, init: &str, extra: &[String]) -> String {
    let mut vm = ConsoleVm::spawn(Path::new(PODVISOR), &linux_args(kit, init, extra)).unwrap();
    let status = vm.wait_exit(Duration::from_secs(300)).unwrap();
    let log = vm.console();
    let context = format!(
        "console (last lines):\n{}\npodvisor stderr:\n{}",
        linux::tail(&log, 40),
        linux::tail(&vm.stderr(), 20)
    );
    let status = status.unwrap_or_else(|| panic!("the guest did not power off\n{context}"));
    assert_eq!(status.code(), Some(0), "exit status\n{context}");
    assert_eq!(
        linux::init_value(&log, "failed").as_deref(),
        Some("0"),
        "module loading\n{context}"
    );
    log
}

#[test]
fn linux_dd_reads_writes_and_respects_read_only() {
    let Some(kit) = full_kvm_kit("blk") else {
        return;
    };
    let scratch = Scratch::new("linux", "blk").unwrap();
    let source = pattern(2 * BLK_MIB * MIB, 0x5eed);
    let src = scratch.file("src.img", &source).unwrap();
    let prefix = scratch
        .file("src-prefix", &source[..BLK_MIB * MIB])
        .unwrap();
    let want = sha256_hex(&prefix);

    // Read: the pattern disk is /dev/vda, a read-only copy of it /dev/vdb.
    let ro = scratch.file("ro.img", &source).unwrap();
    let log = run_to_power_off(
        &kit,
        "blk-read",
        &[
            "--disk".into(),
            format!("path={}", src.display()),
            "--disk".into(),
            format!("path={},readonly=on", ro.display()),
        ],
    );
    assert_eq!(
        linux::init_value(&log, "blk-read-sha256").as_deref(),
        Some(want.as_str()),
        "{}",
        linux::tail(&log, 30)
    );
    assert_eq!(
        linux::init_value(&log, "rowrite").as_deref(),
        Some("refused"),
        "{}",
        linux::tail(&log, 30)
    );
    assert!(
        std::fs::read(&ro).unwrap() == source,
        "the read-only disk's file changed"
    );

    // Write: /dev/vda is an empty file, the pattern arrives from the read-only /dev/vdb.
    let target = scratch
        .file("target.img", &vec![0u8; 2 * BLK_MIB * MIB])
        .unwrap();
    let log = run_to_power_off(
        &kit,
        "blk-write",
        &[
            "--disk".into(),
            format!("path={}", target.display()),
            "--disk".into(),
            format!("path={},readonly=on", src.display()),
        ],
    );
    assert_eq!(
        linux::init_value(&log, "blk-write-sha256").as_deref(),
        Some(want.as_str()),
        "{}",
        linux::tail(&log, 30)
    );
    let written = std::fs::read(&target).unwrap();
    assert!(
        written[..BLK_MIB * MIB] == source[..BLK_MIB * MIB],
        "the host file does not hold what the guest wrote and flushed"
    );
    assert!(
        written[BLK_MIB * MIB..].iter().all(|&b| b == 0),
        "the guest wrote past what it was asked to"
    );
}

fn context(vm: &ConsoleVm) -> String {
    format!(
        "console (last lines):\n{}\npodvisor stderr:\n{}",
        linux::tail(&vm.console(), 40),
        linux::tail(&vm.stderr(), 20)
    )
}

#[test]
fn linux_socat_echoes_through_the_hybrid_vsock() {
    let Some(kit) = full_kvm_kit("vsock") else {
        return;
    };
    let scratch = Scratch::new("linux", "vsock").unwrap();
    let socket = scratch.0.join("vsock.sock");
    let hello = UnixListener::bind(format!("{}_2000", socket.display())).unwrap();
    let hello = std::thread::spawn(move || {
        let (mut stream, _) = hello.accept().unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    });
    let args = linux_args(
        &kit,
        "vsock-echo",
        &[
            "--vsock".into(),
            format!("cid=3,socket={}", socket.display()),
        ],
    );
    let mut vm = ConsoleVm::spawn(Path::new(PODVISOR), &args).unwrap();
    let seen = vm.wait_for(Duration::from_secs(300), |log| {
        log.contains("PODVISOR-INIT: vsock-listening")
    });
    assert_eq!(
        seen,
        Wait::Seen,
        "the guest never listened\n{}",
        context(&vm)
    );
    assert_eq!(
        linux::init_value(&vm.console(), "vsock-hello").as_deref(),
        Some("sent"),
        "{}",
        context(&vm)
    );
    assert_eq!(hello.join().unwrap().trim_end(), "probe-hello");

    let data = pattern(4 * MIB, 0xec40);
    let stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    writer.write_all(b"CONNECT 1024\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("OK "), "CONNECT answered {line:?}");
    let sender = {
        let data = data.clone();
        std::thread::spawn(move || writer.write_all(&data).unwrap())
    };
    let mut echoed = vec![0u8; data.len()];
    reader.read_exact(&mut echoed).unwrap();
    sender.join().unwrap();
    assert!(echoed == data, "the echo differs from what was sent");

    let mut stop = UnixStream::connect(&socket).unwrap();
    stop.write_all(b"CONNECT 1025\n").unwrap();
    let mut line = String::new();
    BufReader::new(&stop).read_line(&mut line).unwrap();
    assert!(line.starts_with("OK "), "CONNECT 1025 answered {line:?}");
    drop(stop);
    let status = vm.wait_exit(Duration::from_secs(120)).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit after port 1025\n{}",
        context(&vm)
    );
}
