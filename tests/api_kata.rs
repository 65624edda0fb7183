//! The REST API driven the way Kata's `clh` driver drives Cloud Hypervisor, against the real
//! binary and the probe guest's `idle` scenario: spawn, ping poll, `vm.create`, `vm.info`,
//! `vm.boot`, `vm.info`, `vmm.shutdown`, process gone. Also through `curl --unix-socket`, with
//! reads racing a boot that is held up on purpose, and the guest powering off by itself.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

mod api_client;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use api_client::{probe_config, read_answer, request_bytes, Podvisor, PATIENCE};
use podvisor_tests::probe::require_kvm;

/// Kata gives the process a few seconds to disappear after `vmm.shutdown`.
const EXIT_AFTER_SHUTDOWN: Duration = Duration::from_secs(3);
/// Upper bound from spawn to the first answered `vmm.ping`.
const SPAWN_TO_PING: Duration = Duration::from_secs(2);

#[test]
fn kata_sequence_with_the_probe_guest() {
    if !require_kvm() {
        return;
    }
    let mut vmm = Podvisor::spawn("kata", &["-v", "--seccomp", "false"]);
    println!("first ping answered {:?} after spawn", vmm.ready_after);
    // The socket is bound before anything else starts; typically ~10 ms here. The bound is
    // loose for a loaded shared host: what it catches is setup work done before the bind.
    assert!(
        vmm.ready_after < SPAWN_TO_PING,
        "first ping after {:?}",
        vmm.ready_after
    );
    let console = vmm.file("console");
    let a = vmm.call(
        "PUT",
        "/api/v1/vm.create",
        &probe_config("idle", "probe.secs=120", &console),
    );
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(vmm.state(), "Created");
    let a = vmm.call("PUT", "/api/v1/vm.boot", "");
    assert_eq!(a.status, 204, "{a:?}\n{}", vmm.stderr());
    assert_eq!(vmm.state(), "Running");
    let info = vmm.call("GET", "/api/v1/vm.info", "").json();
    assert_eq!(info["memory_actual_size"], 128u64 << 20);
    assert_eq!(info["config"]["cpus"]["boot_vcpus"], 1);
    assert!(
        vmm.thread_names().iter().any(|n| n == "vcpu0"),
        "{:?}",
        vmm.thread_names()
    );
    let a = vmm.call("PUT", "/api/v1/vmm.shutdown", "");
    assert_eq!(a.status, 204, "{a:?}");
    let status = vmm.wait_exit(EXIT_AFTER_SHUTDOWN);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "process still there or failed\n{}",
        vmm.stderr()
    );
}

#[test]
fn kata_sequence_with_the_linux_kit() {
    let Some((kit, mode)) = podvisor_tests::linux::prepare().unwrap() else {
        return;
    };
    if mode == podvisor_tests::linux::HostMode::EarlyBootOnly {
        println!("linux kata: not run: Linux cannot reach init on PVM (the probe guest covers it)");
        return;
    }
    let mut vmm = Podvisor::spawn("kata-linux", &["-v"]);
    let console = vmm.file("console");
    let config = api_client::linux_config(&kit, "idle", "podvisor.secs=600", &console);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    assert_eq!(vmm.state(), "Created");
    let a = vmm.call("PUT", "/api/v1/vm.boot", "");
    assert_eq!(a.status, 204, "{a:?}\n{}", vmm.stderr());
    assert_eq!(vmm.state(), "Running");
    let deadline = Instant::now() + PATIENCE * 5;
    let log = loop {
        let log = std::fs::read_to_string(&console).unwrap_or_default();
        if log.contains("PODVISOR-INIT: ready") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        log.contains("PODVISOR-INIT: ready"),
        "Linux did not reach init:\n{}",
        podvisor_tests::linux::tail(&log, 40)
    );
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
    assert_eq!(
        vmm.wait_exit(EXIT_AFTER_SHUTDOWN).and_then(|s| s.code()),
        Some(0),
        "{}",
        vmm.stderr()
    );
}

#[test]
fn curl_drives_the_api() {
    if !require_kvm() {
        return;
    }
    if Command::new("curl").arg("--version").output().is_err() {
        println!("SKIPPED: curl not installed");
        return;
    }
    let mut vmm = Podvisor::spawn("curl", &[]);
    let curl = |args: &[&str]| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60", "--unix-socket"])
            .arg(&vmm.socket)
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (body.to_owned(), code.to_owned())
    };
    let (body, code) = curl(&["http://localhost/api/v1/vmm.ping"]);
    assert_eq!(code, "200");
    assert!(body.contains("\"pid\""), "{body}");
    let config = probe_config("idle", "probe.secs=120", &vmm.file("console"));
    let (_, code) = curl(&[
        "-X",
        "PUT",
        "-d",
        &config,
        "http://localhost/api/v1/vm.create",
    ]);
    assert_eq!(code, "204");
    let (_, code) = curl(&["-X", "PUT", "http://localhost/api/v1/vm.boot"]);
    assert_eq!(code, "204", "{}", vmm.stderr());
    let (body, _) = curl(&["http://localhost/api/v1/vm.info"]);
    assert!(body.contains("\"state\":\"Running\""), "{body}");
    let (body, code) = curl(&["http://localhost/api/v1/vm.nothing"]);
    assert_eq!(code, "404", "{body}");
    let (_, code) = curl(&["-X", "PUT", "http://localhost/api/v1/vmm.shutdown"]);
    assert_eq!(code, "204");
    assert_eq!(
        vmm.wait_exit(EXIT_AFTER_SHUTDOWN).and_then(|s| s.code()),
        Some(0)
    );
}

/// `vm.boot` is held inside `Vm::build` by making the serial output a FIFO nobody reads yet
/// (opening it for writing blocks). Meanwhile pings and `vm.info` must answer, and quickly.
/// The per-read bound is loose on purpose (a loaded 2-core PVM host schedules threads late):
/// 250 ms, while the boot is held for at least 1.5 s; a read queued behind the boot would
/// take the whole hold.
#[test]
fn reads_answer_while_vm_boot_is_in_flight() {
    if !require_kvm() {
        return;
    }
    const HOLD: Duration = Duration::from_millis(1500);
    const READ_BOUND: Duration = Duration::from_millis(250);
    let mut vmm = Podvisor::spawn("racing", &[]);
    let fifo = vmm.file("serial.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let config = probe_config("idle", "probe.secs=120", &fifo);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);

    let socket = vmm.socket.clone();
    let boot = std::thread::spawn(move || {
        let mut stream = UnixStream::connect(socket).unwrap();
        std::io::Write::write_all(&mut stream, &request_bytes("PUT", "/api/v1/vm.boot", b""))
            .unwrap();
        read_answer(&mut stream).unwrap().status
    });
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < HOLD {
        for path in ["/api/v1/vmm.ping", "/api/v1/vm.info"] {
            let t = Instant::now();
            let a = vmm.call("GET", path, "");
            latencies.push(t.elapsed());
            assert_eq!(a.status, 200);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!boot.is_finished(), "the boot was not held by the FIFO");
    // Release the boot: open the reader and keep draining the console.
    let mut reader = std::fs::File::open(&fifo).unwrap();
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    assert_eq!(boot.join().unwrap(), 204, "{}", vmm.stderr());
    assert_eq!(vmm.state(), "Running");
    let worst = latencies.iter().max().copied().unwrap_or_default();
    println!(
        "{} reads during the held boot, worst {worst:?}",
        latencies.len()
    );
    assert!(worst < READ_BOUND, "a read took {worst:?} during the boot");
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
    assert!(vmm.wait_exit(EXIT_AFTER_SHUTDOWN).is_some());
    drain.join().unwrap();
}

#[test]
fn guest_power_off_ends_the_process() {
    if !require_kvm() {
        return;
    }
    let mut vmm = Podvisor::spawn("poweroff", &[]);
    let config = probe_config("poweroff", "", &vmm.file("console"));
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    let status = vmm.wait_exit(PATIENCE);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", vmm.stderr());
    let console = std::fs::read_to_string(vmm.file("console")).unwrap_or_default();
    assert!(console.contains("probe"), "{console}");
}

#[test]
fn guest_reset_boots_the_vm_again_in_place() {
    if !require_kvm() {
        return;
    }
    let mut vmm = Podvisor::spawn("guest-reset", &[]);
    // Every boot of this scenario resets the machine again, so the VM keeps coming back.
    let config = probe_config("reboot", "probe.reset=acpi", &vmm.file("console"));
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    let deadline = Instant::now() + PATIENCE * 3;
    let reboots = loop {
        let counters = vmm.call("GET", "/api/v1/vm.counters", "").json();
        let reboots = counters["vmm"]["guest_reboots"].as_u64().unwrap_or(0);
        if reboots >= 2 || Instant::now() > deadline {
            break reboots;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        reboots >= 2,
        "guest resets seen: {reboots}\n{}",
        vmm.stderr()
    );
    assert!(
        vmm.wait_exit(Duration::from_millis(10)).is_none(),
        "the process ended on a guest reset"
    );
    let events = vmm
        .call("GET", "/api/v1/sandbox.events?since=0&max=64", "")
        .json();
    assert!(
        events.to_string().contains("rebooting"),
        "no rebooting event: {events}"
    );
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
    assert_eq!(
        vmm.wait_exit(EXIT_AFTER_SHUTDOWN).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn the_power_button_reaches_the_guest_which_powers_off() {
    if !require_kvm() {
        return;
    }
    let mut vmm = Podvisor::spawn("power-button", &[]);
    let console = vmm.file("console");
    let config = probe_config("power-button", "probe.secs=300", &console);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    // Nothing runs yet: there is no button to press.
    assert_eq!(vmm.call("PUT", "/api/v1/vm.power-button", "").status, 500);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains("power-button-waiting=1")
    {
        assert!(
            Instant::now() < deadline,
            "the probe never waited for the button"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = vmm.call("PUT", "/api/v1/vm.power-button", "");
    assert_eq!(a.status, 204, "{a:?}");
    let status = vmm.wait_exit(PATIENCE);
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(log.contains("power-button=pressed"), "{log}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", vmm.stderr());
}

#[test]
fn shutdown_and_boot_again_then_delete() {
    if !require_kvm() {
        return;
    }
    let mut vmm = Podvisor::spawn("reboot", &[]);
    let config = probe_config("idle", "probe.secs=120", &vmm.file("console"));
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.reboot", "").status, 204);
    assert_eq!(vmm.state(), "Running");
    assert_eq!(vmm.call("PUT", "/api/v1/vm.shutdown", "").status, 204);
    assert_eq!(vmm.state(), "Shutdown");
    let a = vmm.call("PUT", "/api/v1/vm.shutdown", "");
    assert_eq!(a.status, 500, "{a:?}");
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    assert_eq!(vmm.state(), "Running");
    let counters = vmm.call("GET", "/api/v1/vm.counters", "").json();
    assert_eq!(counters["vmm"]["boots"], 3, "{counters}");
    assert_eq!(vmm.call("PUT", "/api/v1/vm.delete", "").status, 204);
    assert_eq!(vmm.call("GET", "/api/v1/vm.info", "").status, 500);
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
    assert!(vmm.wait_exit(EXIT_AFTER_SHUTDOWN).is_some());
}

#[test]
fn pause_and_resume_follow_the_state_machine() {
    if !require_kvm() {
        return;
    }
    let mut vmm = Podvisor::spawn("pause", &[]);
    let config = probe_config("idle", "probe.secs=120", &vmm.file("console"));
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    // Nothing runs yet: neither request applies.
    assert_eq!(vmm.call("PUT", "/api/v1/vm.pause", "").status, 500);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    let a = vmm.call("PUT", "/api/v1/vm.resume", "");
    assert_eq!(a.status, 500, "resume while running: {a:?}");
    assert_eq!(vmm.call("PUT", "/api/v1/vm.pause", "").status, 204);
    assert_eq!(vmm.state(), "Paused");
    assert_eq!(vmm.call("PUT", "/api/v1/vm.pause", "").status, 500);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.resume", "").status, 204);
    assert_eq!(vmm.state(), "Running");
    // A paused VM still stops: parked vCPUs are released by the stop.
    assert_eq!(vmm.call("PUT", "/api/v1/vm.pause", "").status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.shutdown", "").status, 204);
    assert_eq!(vmm.state(), "Shutdown");
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
    assert!(vmm.wait_exit(EXIT_AFTER_SHUTDOWN).is_some());
}

#[test]
fn sigterm_stops_the_vm_and_exits_cleanly() {
    if !require_kvm() {
        return;
    }
    let monitor = std::env::temp_dir().join(format!("podvisor-term-{}", std::process::id()));
    let _ = std::fs::remove_file(&monitor);
    let arg = format!("path={}", monitor.display());
    let mut vmm = Podvisor::spawn("sigterm", &["--event-monitor", &arg]);
    let config = probe_config("idle", "probe.secs=120", &vmm.file("console"));
    assert_eq!(vmm.call("PUT", "/api/v1/vm.create", &config).status, 204);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.boot", "").status, 204);
    let killed = Command::new("kill")
        .args(["-TERM", &vmm.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = vmm.wait_exit(EXIT_AFTER_SHUTDOWN);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", vmm.stderr());
    let events = std::fs::read_to_string(&monitor).unwrap_or_default();
    let _ = std::fs::remove_file(&monitor);
    assert!(events.contains("api_stop"), "{events}");
    assert!(
        events
            .trim_end()
            .ends_with(r#""event":"shutdown","detail":null}"#),
        "{events}"
    );
}
