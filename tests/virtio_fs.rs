//! virtio-fs end to end with a real `virtiofsd`: the probe's `fs-rw` scenario speaks FUSE over
//! the request queue through the VMM's vhost-user front end, and the host checks the share.
//!
//! - the probe reads `in.bin` (its SHA-256 must match the host's), writes `out.txt` (the host
//!   reads `probe-wrote-this`), and creates, renames and removes a directory (nothing is left);
//!   then it resets the device and drives it again from scratch;
//! - two shares with two tags: the probe picks the one named by `probe.fs-tag` and touches only
//!   that directory;
//! - killing one `virtiofsd` while the probe polls its share: the probe sees its requests fail
//!   within the bounded wait, the other share still answers, and the VM powers off cleanly.
//!
//! - through the API: one share in `vm.create`'s `fs[]`, one added with `vm.add-fs` before
//!   `vm.boot`; the probe writes to the one it is told to;
//! - a share whose backend is missing or does not speak vhost-user is refused before the guest
//!   runs, with exit status 2 and one line naming the socket;
//! - on full-KVM hosts, the same with Linux's own driver: the guest kit's /init mounts the share
//!   (`mount -t virtiofs TAG /mnt`), hashes `in.bin`, writes `out.txt`, and creates, renames and
//!   removes a directory (on PVM hosts Linux cannot reach init, and the test says so and ends).
//!
//! `in.bin` is 1 MiB with hardware virtualization and 64 KiB under PVM (`kvm_pvm`), where the
//! probe's SHA-256 runs fully emulated.
// Test helpers outside #[test] functions fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod api_client;

use podvisor_tests::linux::{self, ConsoleVm, HostMode, Wait};
use podvisor_tests::probe::{self, ProbeRun, ProbeVm, EXIT_POWER_OFF};
use podvisor_tests::scratch::Scratch;
use podvisor_tests::virtiofsd::Virtiofsd;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

fn in_bin_len() -> usize {
    if Path::new("/sys/module/kvm_pvm").exists() {
        64 << 10
    } else {
        1 << 20
    }
}

/// A share directory `name` in `scratch` holding `in.bin` (content from `seed`).
fn share(scratch: &Scratch, name: &str, seed: usize) -> PathBuf {
    let dir = scratch.0.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let data: Vec<u8> = (0..in_bin_len())
        .map(|i| ((i * 31 + seed + i / 4096) % 253) as u8)
        .collect();
    std::fs::write(dir.join("in.bin"), &data).unwrap();
    dir
}

/// SHA-256 as lowercase hex from coreutils (independent of the probe's implementation).
fn sha256_hex(path: &Path) -> String {
    podvisor_tests::scratch::sha256_file(path).unwrap()
}

fn start(scratch: &Scratch, dir: &Path, name: &str) -> Virtiofsd {
    Virtiofsd::start(&scratch.0, dir, name).unwrap_or_else(|e| panic!("{e}"))
}

fn fs_arg(tag: &str, daemon: &Virtiofsd) -> String {
    format!("tag={tag},socket={}", daemon.socket().display())
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

/// The probe wrote `out.txt` into `second` and left `first` alone.
fn only_second_written(first: &Path, second: &Path) {
    assert_eq!(
        std::fs::read(second.join("out.txt")).unwrap(),
        b"probe-wrote-this"
    );
    assert!(
        !first.join("out.txt").exists(),
        "the other share was written"
    );
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "in.bin" && n != "out.txt")
        .collect();
    names.sort();
    names
}

#[test]
fn fs_rw_reads_writes_and_renames_through_virtiofsd() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("fs", "rw").unwrap();
    let dir = share(&scratch, "share", 1);
    let daemon = start(&scratch, &dir, "share");
    let r = ProbeVm::new("fs-rw")
        .param("probe.fs-reopen", 1)
        .arg("--fs")
        .arg(&fs_arg("hostshare", &daemon))
        .run(PODVISOR)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_clean(&r);
    assert_eq!(
        r.result("fs0-tag").as_deref(),
        Some("hostshare"),
        "{}",
        r.describe()
    );
    assert_eq!(r.result_u64("fs-shares"), Some(1));
    let want = sha256_hex(&dir.join("in.bin"));
    assert_eq!(
        r.result("fs-read-sha256").as_deref(),
        Some(want.as_str()),
        "{}",
        r.describe()
    );
    assert_eq!(r.result_u64("fs-read-bytes"), Some(in_bin_len() as u64));
    assert_eq!(r.result_u64("fs-write-bytes"), Some(16), "{}", r.describe());
    assert_eq!(
        std::fs::read(dir.join("out.txt")).unwrap(),
        b"probe-wrote-this"
    );
    assert_eq!(
        r.result("fs-dir").as_deref(),
        Some("ok"),
        "{}",
        r.describe()
    );
    assert!(
        leftovers(&dir).is_empty(),
        "left in the share: {:?}",
        leftovers(&dir)
    );
    // A device reset hands the queues back to the VMM and a second activation hands them to
    // the backend again.
    assert_eq!(
        r.result("fs-reopen").as_deref(),
        Some("ok"),
        "{}",
        r.describe()
    );
}

#[test]
fn two_shares_are_told_apart_by_tag() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("fs", "two").unwrap();
    let first = share(&scratch, "first", 1);
    let second = share(&scratch, "second", 2);
    let a = start(&scratch, &first, "first");
    let b = start(&scratch, &second, "second");
    let r = ProbeVm::new("fs-rw")
        .param("probe.fs-tag", "vol-b")
        .arg("--fs")
        .arg(&fs_arg("vol-a", &a))
        .arg("--fs")
        .arg(&fs_arg("vol-b", &b))
        .run(PODVISOR)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_clean(&r);
    assert_eq!(
        r.result("fs0-tag").as_deref(),
        Some("vol-a"),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.result("fs1-tag").as_deref(),
        Some("vol-b"),
        "{}",
        r.describe()
    );
    assert_eq!(r.result_u64("fs-shares"), Some(2));
    let want = sha256_hex(&second.join("in.bin"));
    assert_ne!(want, sha256_hex(&first.join("in.bin")));
    assert_eq!(
        r.result("fs-read-sha256").as_deref(),
        Some(want.as_str()),
        "{}",
        r.describe()
    );
    only_second_written(&first, &second);
}

#[test]
fn a_killed_virtiofsd_fails_its_share_only_and_the_vm_powers_off() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("fs", "fault").unwrap();
    let first = share(&scratch, "first", 1);
    let second = share(&scratch, "second", 2);
    let mut a = start(&scratch, &first, "first");
    let b = start(&scratch, &second, "second");
    let args = ProbeVm::new("fs-rw")
        .param("probe.fs-fault", 1)
        .param("probe.fs-tag", "vol-a")
        .param("probe.fs-timeout-ms", 5000)
        .param("probe.secs", 60)
        .arg("--fs")
        .arg(&fs_arg("vol-a", &a))
        .arg("--fs")
        .arg(&fs_arg("vol-b", &b))
        .args();
    let mut vm = ConsoleVm::spawn(Path::new(PODVISOR), &args).unwrap();
    let seen = vm.wait_for(Duration::from_secs(90), |c| c.contains("fs-ready=1"));
    if seen != Wait::Seen {
        let _ = vm.kill();
        panic!(
            "probe never got ready ({seen:?})\n{}\n{}",
            vm.console(),
            vm.stderr()
        );
    }
    a.kill();
    let status = vm.wait_exit(Duration::from_secs(120)).unwrap();
    if status.is_none() {
        let _ = vm.kill();
        panic!(
            "the VM did not power off\n{}\n{}",
            vm.console(),
            vm.stderr()
        );
    }
    let console = vm.console();
    let results = probe::parse_results(&console);
    let context = format!("{console}\n--- stderr ---\n{}", vm.stderr());
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(EXIT_POWER_OFF),
        "{context}"
    );
    let fault = results.get("fs-fault").map(String::as_str);
    assert!(
        matches!(fault, Some("errno" | "timeout" | "failed")),
        "the probe did not see the share fail: {fault:?}\n{context}"
    );
    assert_eq!(
        results.get("fs-other-share").map(String::as_str),
        Some("ok"),
        "{context}"
    );
}

#[test]
fn shares_from_create_and_add_fs_reach_the_guest() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("fs", "api").unwrap();
    let first = share(&scratch, "first", 1);
    let second = share(&scratch, "second", 2);
    let a = start(&scratch, &first, "first");
    let b = start(&scratch, &second, "second");
    let mut vmm = api_client::Podvisor::spawn("fs", &[]);
    let console = vmm.file("console");
    let mut config: serde_json::Value = serde_json::from_str(&api_client::probe_config(
        "fs-rw",
        "probe.fs-tag=vol-b",
        &console,
    ))
    .unwrap();
    config["fs"] = serde_json::json!([{"tag": "vol-a", "socket": a.socket()}]);
    let created = vmm.call("PUT", "/api/v1/vm.create", &config.to_string());
    assert_eq!(created.status, 204, "{created:?}");
    let bad = vmm.call(
        "PUT",
        "/api/v1/vm.add-fs",
        r#"{"tag":"vol-a","socket":"/x"}"#,
    );
    assert_eq!(bad.status, 400, "duplicate tag: {bad:?}");
    let body = serde_json::json!({"tag": "vol-b", "socket": b.socket(), "id": "volb"});
    let added = vmm.call("PUT", "/api/v1/vm.add-fs", &body.to_string());
    assert_eq!(added.status, 204, "{added:?}");
    let info = vmm.call("GET", "/api/v1/vm.info", "").json();
    assert_eq!(
        info["config"]["fs"].as_array().map(Vec::len),
        Some(2),
        "{info}"
    );
    let booted = vmm.call("PUT", "/api/v1/vm.boot", "");
    assert_eq!(booted.status, 204, "{booted:?} {}", vmm.stderr());
    let status = vmm.wait_exit(api_client::PATIENCE);
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{text}\n{}",
        vmm.stderr()
    );
    let results = probe::parse_results(&text);
    assert_eq!(
        results.get("fs-shares").map(String::as_str),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        results.get("fs-read-sha256"),
        Some(&sha256_hex(&second.join("in.bin"))),
        "{text}"
    );
    only_second_written(&first, &second);
}

#[test]
fn the_api_reports_a_share_whose_backend_died_and_the_vm_runs_on() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("fs", "api-fault").unwrap();
    let dir = share(&scratch, "share", 1);
    let mut daemon = start(&scratch, &dir, "share");
    let mut vmm = api_client::Podvisor::spawn("fs-fault", &[]);
    let console = vmm.file("console");
    let mut config: serde_json::Value = serde_json::from_str(&api_client::probe_config(
        "fs-rw",
        "probe.fs-fault=1 probe.fs-timeout-ms=5000 probe.secs=60",
        &console,
    ))
    .unwrap();
    config["fs"] = serde_json::json!([{"tag": "vol", "socket": daemon.socket(), "id": "share0"}]);
    // A sandbox: the process outlives the VM, so the device's state stays readable however
    // quickly the guest powers off after seeing the failure.
    let spec = serde_json::json!({
        "sandbox_id": "fs-fault",
        "vm": config,
        "lifecycle": {"exit_on_vm_end": false},
    });
    let created = vmm.call("PUT", "/api/v1/sandbox.create", &spec.to_string());
    assert_eq!(created.status, 204, "{created:?}");
    let started = vmm.call("PUT", "/api/v1/sandbox.start", "{}");
    assert_eq!(started.status, 200, "{started:?}\n{}", vmm.stderr());
    let state = |vmm: &api_client::Podvisor| {
        let info = vmm.call("GET", "/api/v1/vm.info", "").json();
        let devices = info["devices"].as_array().cloned().unwrap_or_default();
        let share = devices.iter().find(|d| d["id"] == "share0").cloned();
        share.map(|d| (d["bdf"].to_string(), d["state"].to_string()))
    };
    let end = Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains("fs-ready=1")
    {
        assert!(
            Instant::now() < end,
            "probe never got ready\n{}",
            vmm.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        state(&vmm),
        Some(("\"0000:00:01.0\"".to_owned(), "\"ok\"".to_owned()))
    );
    daemon.kill();
    let end = Instant::now() + Duration::from_secs(60);
    while state(&vmm).map(|s| s.1) != Some("\"failed\"".to_owned()) {
        assert!(
            Instant::now() < end,
            "never reported failed\n{}",
            vmm.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The guest saw its requests fail and powered off cleanly: the VM itself was fine.
    let waited = vmm.call(
        "GET",
        &format!(
            "/api/v1/sandbox.wait?timeout_ms={}",
            api_client::PATIENCE.as_millis()
        ),
        "",
    );
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    assert_eq!(waited.status, 200, "{waited:?}\n{text}");
    assert_eq!(
        waited.json()["reason"],
        "poweroff",
        "{waited:?}\n{text}\n{}",
        vmm.stderr()
    );
    let fault = probe::parse_results(&text).get("fs-fault").cloned();
    assert!(
        matches!(fault.as_deref(), Some("errno" | "timeout" | "failed")),
        "{text}"
    );
    let stderr = vmm.stderr();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("closed its socket"))
        .collect();
    assert_eq!(lines.len(), 1, "one clear line: {stderr}");
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
    let _ = vmm.wait_exit(api_client::PATIENCE);
}

/// Runs the `boot` scenario with `fs_args`; the VMM must refuse before the guest starts.
fn refused_before_boot(fs_args: &[String], mentions: &[&str]) {
    let mut vm = ProbeVm::new("boot");
    for a in fs_args {
        vm = vm.arg("--fs").arg(a);
    }
    let r = vm.run(PODVISOR).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.exit_code(), Some(2), "{}", r.describe());
    assert!(
        !r.console.contains("probe: started"),
        "the guest ran: {}",
        r.describe()
    );
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| panic!("no error line\n{}", r.describe()));
    for word in mentions {
        assert!(line.contains(word), "{word:?} missing from {line:?}");
    }
    assert!(!r.stderr.contains("panicked"), "{}", r.describe());
}

#[test]
fn a_missing_or_wrong_backend_is_refused_before_boot() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("fs", "refused").unwrap();
    let missing = scratch.0.join("nobody.sock");
    let missing_arg = format!("tag=a,socket={}", missing.display());
    refused_before_boot(&[missing_arg], &["nobody.sock", "connect"]);

    // A socket that accepts and hangs up is not a vhost-user backend.
    let closing = scratch.0.join("closing.sock");
    let listener = std::os::unix::net::UnixListener::bind(&closing).unwrap();
    let server = std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            drop(conn);
        }
    });
    let closing_arg = format!("tag=a,socket={}", closing.display());
    refused_before_boot(&[closing_arg], &["closing.sock", "vhost-user"]);
    server.join().unwrap();

    // Two shares with one tag: refused by validation, before any connection.
    let dir = share(&scratch, "share", 1);
    let daemon = start(&scratch, &dir, "share");
    let arg = fs_arg("same", &daemon);
    refused_before_boot(&[arg.clone(), arg], &["same"]);
}

#[test]
fn linux_mounts_the_share_with_virtiofs() {
    let Some((kit, mode)) = linux::prepare().unwrap_or_else(|e| panic!("{e}")) else {
        return;
    };
    if mode == HostMode::EarlyBootOnly {
        println!("not run: Linux cannot reach init on PVM (the probe's fs-rw drives virtio-fs)");
        return;
    }
    let scratch = Scratch::new("fs", "linux").unwrap();
    let dir = share(&scratch, "share", 3);
    let daemon = start(&scratch, &dir, "share");
    let args: Vec<String> = [
        "run",
        "--kernel",
        &kit.vmlinux.display().to_string(),
        "--initramfs",
        &kit.initramfs.display().to_string(),
        "--cmdline",
        "console=ttyS0 loglevel=4 podvisor.init=fs-rw podvisor.fs-tag=kitshare",
        "--cpus",
        "2",
        "--memory",
        "512M",
        "--serial",
        "stdout",
        "--fs",
        &fs_arg("kitshare", &daemon),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut vm = ConsoleVm::spawn(Path::new(PODVISOR), &args).unwrap();
    let status = vm.wait_exit(Duration::from_secs(300)).unwrap();
    if status.is_none() {
        let _ = vm.kill();
    }
    let log = vm.console();
    let context = format!(
        "{}\n--- stderr ---\n{}",
        linux::tail(&log, 40),
        linux::tail(&vm.stderr(), 20)
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(EXIT_POWER_OFF),
        "{context}"
    );
    let want = sha256_hex(&dir.join("in.bin"));
    assert_eq!(
        linux::init_value(&log, "fs-read-sha256"),
        Some(want),
        "{context}"
    );
    assert_eq!(
        linux::init_value(&log, "fs-dir").as_deref(),
        Some("ok"),
        "{context}"
    );
    assert_eq!(
        linux::init_value(&log, "fs-umount").as_deref(),
        Some("ok"),
        "{context}"
    );
    assert_eq!(
        std::fs::read(dir.join("out.txt")).unwrap(),
        b"probe-wrote-this"
    );
    assert!(
        leftovers(&dir).is_empty(),
        "left in the share: {:?}",
        leftovers(&dir)
    );
}
