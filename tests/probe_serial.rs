//! Where the probe's console goes: `--serial file=PATH` writes exactly what the guest printed
//! to the file and nothing to stdout; `--serial off` drops it without affecting the run.

use podvisor_tests::probe::{self, parse_errors, parse_results, ProbeRun, ProbeVm, EXIT_POWER_OFF};
use std::path::PathBuf;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

/// Runs the VM; a VM that cannot be run or times out fails the test with its console shown.
#[allow(clippy::panic)] // reason: test helper; the panic is the test failure.
fn run(vm: ProbeVm) -> ProbeRun {
    vm.run(PODVISOR).unwrap_or_else(|e| panic!("{e}"))
}

fn scratch_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podvisor-probe-serial-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
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
    let _ = std::fs::remove_file(&path);
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
