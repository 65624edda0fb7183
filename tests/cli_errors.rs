//! `podvisor run` refuses bad input with one clear line on stderr and the documented exit
//! status (2 for configuration, 1 for host problems), never a panic.
// Test helpers outside #[test] functions: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::panic)]

use podvisor_tests::scratch::ScratchFile;
use std::path::Path;
use std::process::{Command, Output};

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

fn scratch(name: &str) -> ScratchFile {
    ScratchFile::new("cli", name)
}

/// A file that passes the format check: a minimal ELF header, nothing loadable after it.
fn elf_like(name: &str, len: usize) -> ScratchFile {
    let path = scratch(name);
    let mut bytes = vec![0u8; len.max(4)];
    bytes[..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(PODVISOR)
        .arg("run")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Status `code`, exactly one line on stderr that contains every word of `mentions`.
fn assert_refused(out: &Output, code: i32, mentions: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    for word in mentions {
        assert!(
            lines[0].contains(word),
            "{word:?} missing from {:?}",
            lines[0]
        );
    }
}

fn kvm_available() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        std::env::var("PODVISOR_REQUIRE_KVM").as_deref() != Ok("1"),
        "PODVISOR_REQUIRE_KVM=1 but /dev/kvm is missing"
    );
    println!("SKIPPED: no /dev/kvm");
    false
}

#[test]
fn missing_kernel() {
    let out = run(&["--kernel", "/nonexistent/vmlinuz"]);
    assert_refused(&out, 2, &["kernel", "/nonexistent/vmlinuz"]);
}

#[test]
fn no_kernel_argument() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--kernel"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn kernel_that_is_a_directory() {
    let dir = std::env::temp_dir();
    let out = run(&["--kernel", dir.to_str().unwrap()]);
    assert_refused(&out, 2, &["kernel", "not a regular file"]);
}

#[test]
fn kernel_of_unknown_format() {
    let path = scratch("garbage-kernel");
    std::fs::write(&path, b"#!/bin/sh\necho this is not a kernel\n".repeat(100)).unwrap();
    let out = run(&["--kernel", path.to_str().unwrap()]);
    assert_refused(&out, 2, &["neither an ELF image nor a bzImage"]);
}

#[test]
fn truncated_elf_kernel() {
    if !kvm_available() {
        return;
    }
    let path = elf_like("truncated-elf", 40);
    let out = run(&["--kernel", path.to_str().unwrap(), "--memory", "64M"]);
    assert_refused(&out, 2, &["corrupt", "truncated-elf"]);
}

#[test]
fn initramfs_larger_than_ram() {
    let kernel = elf_like("kernel-for-initramfs", 4096);
    let initramfs = scratch("huge-initramfs");
    let file = std::fs::File::create(&initramfs).unwrap();
    file.set_len(32 << 20).unwrap();
    let out = run(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--initramfs",
        initramfs.to_str().unwrap(),
        "--memory",
        "16M",
    ]);
    assert_refused(&out, 2, &["initramfs", "more than"]);
}

#[test]
fn missing_initramfs() {
    let kernel = elf_like("kernel-for-missing-initramfs", 4096);
    let out = run(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--initramfs",
        "/nonexistent/initrd.img",
    ]);
    assert_refused(&out, 2, &["initramfs", "/nonexistent/initrd.img"]);
}

#[test]
fn memory_too_small() {
    let kernel = elf_like("kernel-small-mem", 4096);
    let out = run(&["--kernel", kernel.to_str().unwrap(), "--memory", "1M"]);
    assert_refused(&out, 2, &["below the minimum"]);
}

#[test]
fn memory_larger_than_the_host() {
    let kernel = elf_like("kernel-big-mem", 4096);
    let out = run(&["--kernel", kernel.to_str().unwrap(), "--memory", "size=64T"]);
    assert_refused(&out, 2, &["exceeds the host"]);
}

#[test]
fn memory_size_that_does_not_parse() {
    let kernel = elf_like("kernel-bad-mem", 4096);
    let out = run(&["--kernel", kernel.to_str().unwrap(), "--memory", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid size"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn zero_vcpus() {
    let kernel = elf_like("kernel-zero-cpus", 4096);
    let out = run(&["--kernel", kernel.to_str().unwrap(), "--cpus", "0"]);
    assert_refused(&out, 2, &["at least 1"]);
}

#[test]
fn too_many_vcpus() {
    let kernel = elf_like("kernel-many-cpus", 4096);
    let out = run(&["--kernel", kernel.to_str().unwrap(), "--cpus", "boot=4096"]);
    assert_refused(&out, 2, &["4096 vCPUs", "at most"]);
}

#[test]
fn unknown_serial_mode() {
    let kernel = elf_like("kernel-serial", 4096);
    let out = run(&["--kernel", kernel.to_str().unwrap(), "--serial", "pty"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid serial setting"));
}

#[test]
fn serial_file_that_cannot_be_created() {
    let kernel = elf_like("kernel-serial-file", 4096);
    let out = run(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--serial",
        "file=/nonexistent/dir/console.log",
    ]);
    assert_refused(
        &out,
        2,
        &["serial output file", "/nonexistent/dir/console.log"],
    );
}

#[test]
fn no_kvm_device() {
    // Hide /dev/kvm in a private mount namespace; needs root and util-linux `unshare`.
    let kernel = elf_like("kernel-no-kvm", 4096);
    let script = format!(
        "mount -t tmpfs none /dev && exec {PODVISOR} run --kernel {} --memory 64M",
        kernel.display()
    );
    let out = match Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("RUST_LOG", "warn")
        .output()
    {
        Ok(out) if out.status.code() != Some(127) => out,
        _ => {
            println!("SKIPPED: cannot hide /dev/kvm (unshare unavailable)");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unshare:") || stderr.contains("mount:") {
        println!("SKIPPED: cannot hide /dev/kvm: {stderr}");
        return;
    }
    assert_refused(&out, 1, &["/dev/kvm"]);
}

/// Not an error, but the other way a run ends from the command line: SIGTERM stops the VM,
/// the timing line is printed and the status is 0.
#[test]
fn sigterm_stops_a_running_guest() {
    if !kvm_available() {
        return;
    }
    let probe = podvisor_tests::probe::probe_path();
    let child = Command::new(PODVISOR)
        .args(["run", "--kernel", probe.to_str().unwrap()])
        .args([
            "--cmdline",
            "probe.run=idle probe.secs=300",
            "--memory",
            "64M",
        ])
        .args(["--serial", "off"])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    // The shell's builtin `kill`, so no procps binary is needed.
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let signalled = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    // The guest would idle for 300 s; ending well before that means the signal stopped it.
    assert!(
        signalled.elapsed() < std::time::Duration::from_secs(120),
        "the VM ran on after SIGTERM"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("boot-timing first-instruction-us="),
        "{stderr}"
    );
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = Command::new(PODVISOR)
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "0  the guest powered off, or SIGINT/SIGTERM stopped it",
        "1  VMM internal error",
        "2  invalid configuration",
        "3  the guest requested a reboot",
        "4  a vCPU triple-faulted",
        "boot-timing first-instruction-us=",
    ] {
        assert!(help.contains(line), "{line:?} missing from help:\n{help}");
    }
}
