//! Where the probe's console goes: `--serial file=PATH` writes exactly what the guest printed
//! to the file and nothing to stdout; `--serial off` drops it without affecting the run; with the
//! console on stdout, the VMM's stdin reaches the guest's UART.

use podvisor_tests::probe::{self, parse_errors, parse_results, ProbeRun, ProbeVm, EXIT_POWER_OFF};
use podvisor_tests::scratch::ScratchFile;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

/// Runs the VM; a VM that cannot be run or times out fails the test with its console shown.
#[allow(clippy::panic)] // reason: test helper; the panic is the test failure.
fn run(vm: ProbeVm) -> ProbeRun {
    vm.run(PODVISOR).unwrap_or_else(|e| panic!("{e}"))
}

fn scratch_file(name: &str) -> ScratchFile {
    ScratchFile::new("probe-serial", name)
}

#[test]
fn serial_to_file() {
    if !probe::require_kvm() {
        return;
    }
    let path = scratch_file("console.log");
    let run = run(ProbeVm::new("boot")
        .cpus(2)
        .serial(&format!("file={}", path.display())));
    assert_eq!(run.exit_code(), Some(EXIT_POWER_OFF), "{}", run.describe());
    assert!(
        !run.console.contains("PROBE-"),
        "console leaked to stdout\n{}",
        run.describe()
    );
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let results = parse_results(&text);
    assert_eq!(
        results.get("cpus").map(String::as_str),
        Some("2"),
        "file:\n{text}"
    );
    assert_eq!(
        results.get("ram-mib").map(String::as_str),
        Some("128"),
        "file:\n{text}"
    );
    assert!(parse_errors(&text).is_empty(), "file:\n{text}");
}

#[test]
fn serial_off_still_runs() {
    if !probe::require_kvm() {
        return;
    }
    let run = run(ProbeVm::new("boot").serial("off"));
    assert_eq!(run.exit_code(), Some(EXIT_POWER_OFF), "{}", run.describe());
    assert!(run.console.is_empty(), "{}", run.describe());
}

/// What is written to the VMM's stdin (with the console on stdout) reaches the guest's UART
/// receive path: the probe reads a line from COM1 and reports it back.
#[test]
fn stdin_reaches_the_guest_uart() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    if !probe::require_kvm() {
        return;
    }
    let vm = ProbeVm::new("serial-echo").param("probe.secs", 60);
    let mut child = Command::new(PODVISOR)
        .args(vm.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + probe::DEFAULT_TIMEOUT;
    let mut console = String::new();
    let mut stdin = child.stdin.take();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(chunk) => console.push_str(&String::from_utf8_lossy(&chunk).replace('\r', "")),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                let _ = child.kill();
                panic!("the VM did not finish in time; console:\n{console}");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if console.contains("probe: serial-echo waiting") {
            if let Some(mut input) = stdin.take() {
                input.write_all(b"typed into the console\n").unwrap();
            }
        }
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(EXIT_POWER_OFF), "console:\n{console}");
    let results = parse_results(&console);
    assert_eq!(
        results.get("echo").map(String::as_str),
        Some("typed into the console"),
        "console:\n{console}"
    );
    assert!(parse_errors(&console).is_empty(), "console:\n{console}");
}
