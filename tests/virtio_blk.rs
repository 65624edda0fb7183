//! virtio-blk end to end: the probe guest drives disks through the PCI root bus, the
//! virtio-pci transport and the file backend, and the host checks the files.
//!
//! - `blk-write` writes pseudo-random data and flushes; its SHA-256 must equal the host file's
//!   first bytes, and nothing past them changes;
//! - `blk-read` hashes the first bytes of a host-prepared pattern; a second, read-only disk
//!   refuses a write and its file stays as it was; the two disks sit in slots 1 and 2;
//! - a disk whose file lives on a full filesystem answers the write with an I/O error, the
//!   device keeps serving requests and the VM powers off normally;
//! - bad `--disk` values are refused with exit status 2 before anything runs;
//! - `blk-bench` (what `scripts/bench/blk` runs) moves its range in 1 MiB requests, reports
//!   every figure, and its writes land exactly on that range.
//!
//! The amount moved is 8 MiB on hosts with hardware virtualization. Under PVM (`kvm_pvm`: KVM
//! without hardware virtualization) the probe executes its own code very slowly (measured here:
//! milliseconds per SHA-256 block), so hashing 8 MiB inside the guest would take many minutes;
//! there the scenarios move 64 KiB, which still spans several requests and queue wrap-arounds.
// Test helpers outside #[test] functions fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use podvisor_tests::probe::{self, ProbeRun, ProbeVm, EXIT_INVALID_CONFIG, EXIT_POWER_OFF};
use podvisor_tests::scratch::Scratch;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");
const MIB: usize = 1 << 20;

/// Bytes the scenarios move on this host (see the module docs).
fn transfer_bytes() -> usize {
    let kib = if Path::new("/sys/module/kvm_pvm").exists() {
        64
    } else {
        8 * 1024
    };
    println!("moving {kib} KiB through the guest");
    kib * 1024
}

/// SHA-256 as lowercase hex, computed by coreutils' `sha256sum` (an implementation
/// independent of the probe's).
fn sha256_hex(data: &[u8], scratch: &Scratch) -> String {
    scratch.sha256("to-hash", data).unwrap()
}

fn run(vm: ProbeVm) -> ProbeRun {
    vm.run(PODVISOR).unwrap_or_else(|e| panic!("{e}"))
}

fn disk_arg(path: &Path, extra: &str) -> String {
    format!("path={}{extra}", path.display())
}

fn assert_clean(run: &ProbeRun) {
    assert_eq!(run.exit_code(), Some(EXIT_POWER_OFF), "{}", run.describe());
    assert!(
        run.errors().is_empty(),
        "{:?}\n{}",
        run.errors(),
        run.describe()
    );
}

#[test]
fn blk_write_lands_in_the_host_file() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("blk", "write").unwrap();
    let n = transfer_bytes();
    let disk = scratch.file("disk.img", &vec![0x5a; n + 4 * MIB]).unwrap();
    let r = run(ProbeVm::new("blk-write")
        .param("probe.blk-seed", 7)
        .param("probe.blk-kib", n / 1024)
        .arg("--disk")
        .arg(&disk_arg(&disk, ",queue_size=256")));
    assert_clean(&r);
    let file = std::fs::read(&disk).unwrap();
    assert_eq!(file.len(), n + 4 * MIB, "the file keeps its size");
    let want = sha256_hex(&file[..n], &scratch);
    assert_eq!(
        r.result("blk-write-sha256").as_deref(),
        Some(want.as_str()),
        "{}",
        r.describe()
    );
    assert!(file[..n].iter().any(|&b| b != 0x5a), "nothing was written");
    assert!(
        file[n..].iter().all(|&b| b == 0x5a),
        "bytes past the data changed"
    );
    assert_eq!(
        r.result_u64("blk-capacity-sectors"),
        Some(((n + 4 * MIB) / 512) as u64)
    );
    assert_eq!(r.result("blk0-bdf").as_deref(), Some("00:01.0"));
}

#[test]
fn blk_read_hashes_the_host_pattern_and_a_read_only_disk_refuses_writes() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("blk", "read").unwrap();
    let n = transfer_bytes();
    let pattern: Vec<u8> = (0..n + MIB)
        .map(|i| ((i * 13 + i / 4096) % 251) as u8)
        .collect();
    let disk0 = scratch.file("pattern.img", &pattern).unwrap();
    let ro_bytes = vec![0xc3u8; MIB];
    let disk1 = scratch.file("ro.img", &ro_bytes).unwrap();
    let r = run(ProbeVm::new("blk-read")
        .param("probe.blk-kib", n / 1024)
        .arg("--disk")
        .arg(&disk_arg(&disk0, ",num_queues=2"))
        .arg("--disk")
        .arg(&disk_arg(&disk1, ",readonly=on,id=ro")));
    assert_clean(&r);
    let want = sha256_hex(&pattern[..n], &scratch);
    assert_eq!(
        r.result("blk-read-sha256").as_deref(),
        Some(want.as_str()),
        "{}",
        r.describe()
    );
    assert_eq!(r.result_u64("blk-disks"), Some(2), "{}", r.describe());
    assert_eq!(r.result("blk0-bdf").as_deref(), Some("00:01.0"));
    assert_eq!(r.result("blk1-bdf").as_deref(), Some("00:02.0"));
    assert_eq!(r.result_u64("blk1-readonly"), Some(1), "{}", r.describe());
    assert_eq!(
        r.result("rowrite").as_deref(),
        Some("refused"),
        "{}",
        r.describe()
    );
    assert_eq!(
        std::fs::read(&disk1).unwrap(),
        ro_bytes,
        "the read-only file changed"
    );
    assert_eq!(
        std::fs::read(&disk0).unwrap(),
        pattern,
        "reading changed the file"
    );
}

/// A 16 KiB tmpfs, unmounted when dropped (also when the test fails half-way).
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    /// Mounts it at `dir`; `None` (with the reason printed) if this host cannot.
    fn mount(dir: &Path) -> Option<Self> {
        match Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k", "podvisor-full"])
            .arg(dir)
            .output()
        {
            Ok(out) if out.status.success() => Some(Self(dir.to_owned())),
            Ok(out) => {
                println!(
                    "SKIPPED: cannot mount a small tmpfs: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_host_filesystem_fails_the_write_and_the_vm_carries_on() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("blk", "full").unwrap();
    let mnt = scratch.0.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let Some(tmpfs) = SmallTmpfs::mount(&mnt) else {
        return;
    };
    // A sparse 16 MiB image on a 16 KiB filesystem: writes past its first pages get ENOSPC.
    let n = transfer_bytes();
    let disk = mnt.join("sparse.img");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(16 * MIB as u64).unwrap();
    drop(f);
    let r = run(ProbeVm::new("blk-write")
        .param("probe.blk-kib", n / 1024)
        .arg("--disk")
        .arg(&disk_arg(&disk, "")));
    drop(tmpfs);
    assert_eq!(r.exit_code(), Some(EXIT_POWER_OFF), "{}", r.describe());
    assert_eq!(
        r.result("blk-write").as_deref(),
        Some("ioerr"),
        "{}",
        r.describe()
    );
    let failed_at = r.result_u64("blk-write-failed-at").unwrap_or(u64::MAX);
    assert!(failed_at < n as u64, "{}", r.describe());
    assert_eq!(r.result_u64("blk-alive"), Some(1), "{}", r.describe());
    assert!(r.result("blk-write-sha256").is_none());
}

#[test]
fn blk_bench_writes_its_range_in_large_requests_and_reports_every_figure() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("blk", "bench").unwrap();
    let disk = scratch.file("disk.img", &vec![0x5a; 3 * MIB]).unwrap();
    let r = run(ProbeVm::new("blk-bench")
        .param("probe.blk-kib", 2048)
        .param("probe.blk-seq-kib", 1024)
        .param("probe.blk-ops", 32)
        .param("probe.blk-qd", 8)
        .arg("--disk")
        .arg(&disk_arg(&disk, ",queue_size=256")));
    assert_clean(&r);
    assert_eq!(
        r.result_u64("bench-seq-kib"),
        Some(1024),
        "{}",
        r.describe()
    );
    for key in [
        "bench-seq-write-ns",
        "bench-seq-read-ns",
        "bench-rand-qd1-ns",
        "bench-rand-qd-ns",
    ] {
        assert!(
            r.result_u64(key).is_some_and(|ns| ns > 0),
            "{key}: {}",
            r.describe()
        );
    }
    let depth = r.result_u64("bench-qd").unwrap_or(0);
    assert!((1..=8).contains(&depth), "depth {depth}");
    // The probe writes its request buffer over the first 2 MiB and nothing else. The buffer
    // holds zeros: the probe never writes it, and the VMM hands the guest zeroed RAM.
    let file = std::fs::read(&disk).unwrap();
    assert!(
        file[..2 * MIB].iter().all(|&b| b == 0),
        "the range was not written"
    );
    assert!(
        file[2 * MIB..].iter().all(|&b| b == 0x5a),
        "bytes past the range changed"
    );

    let bad = run(ProbeVm::new("blk-bench")
        .param("probe.blk-kib", 2048)
        .param("probe.blk-seq-kib", 48)
        .arg("--disk")
        .arg(&disk_arg(&disk, "")));
    assert!(
        bad.errors().iter().any(|e| e.contains("blk-seq-kib")),
        "a request size that does not divide the range was accepted: {}",
        bad.describe()
    );
}

#[test]
fn bad_disk_options_are_refused_before_the_vm_starts() {
    let scratch = Scratch::new("blk", "cli").unwrap();
    let small = scratch.file("small.img", &[0u8; 100]).unwrap();
    let good = scratch.file("good.img", &[0u8; 4096]).unwrap();
    let kernel = probe::probe_path();
    for disk in [
        "path=/nonexistent/disk.img".to_owned(),
        disk_arg(&small, ""),
        disk_arg(&good, ",queue_size=100"),
        disk_arg(&good, ",num_queues=0"),
        disk_arg(&good, ",readonly=maybe"),
        disk_arg(&good, ",vhost_user=on"),
        "readonly=on".to_owned(),
    ] {
        let out = Command::new(PODVISOR)
            .arg("run")
            .arg("--kernel")
            .arg(&kernel)
            .args(["--serial", "off", "--disk", &disk])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_INVALID_CONFIG),
            "--disk {disk}: {stderr}"
        );
        assert!(stderr.contains("disk"), "--disk {disk}: {stderr}");
    }
    // Two disks with the same id.
    let out = Command::new(PODVISOR)
        .arg("run")
        .arg("--kernel")
        .arg(&kernel)
        .args(["--serial", "off"])
        .args([
            "--disk",
            &disk_arg(&good, ",id=a"),
            "--disk",
            &disk_arg(&good, ",id=a"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG));
}
