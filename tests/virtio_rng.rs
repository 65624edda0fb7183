//! virtio-rng end to end: the probe's `rng` scenario reads entropy through the real PCI
//! transport from `--rng src=PATH`, both a file of known bytes and `/dev/urandom`; a source
//! that cannot be read is refused before the VM starts.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

use podvisor_tests::probe::{self, ProbeRun, ProbeVm, EXIT_INVALID_CONFIG, EXIT_POWER_OFF};

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

fn run_rng(src: &str) -> ProbeRun {
    let run = ProbeVm::new("rng")
        .memory_mib(128)
        .arg("--rng")
        .arg(&format!("src={src}"))
        .run(PODVISOR)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.exit_code(), Some(EXIT_POWER_OFF), "{}", run.describe());
    assert!(
        run.errors().is_empty(),
        "{:?}\n{}",
        run.errors(),
        run.describe()
    );
    run
}

#[test]
fn the_guest_reads_a_file_source_and_urandom() {
    if !probe::require_kvm() {
        return;
    }
    let path = std::env::temp_dir().join(format!("podvisor-rng-src-{}", std::process::id()));
    let bytes: Vec<u8> = (1..=255u8).cycle().take(4096).collect();
    std::fs::write(&path, &bytes).unwrap();
    let run = run_rng(path.to_str().unwrap());
    let _ = std::fs::remove_file(&path);
    assert_eq!(run.result_u64("rng-bytes"), Some(128), "{}", run.describe());
    assert_eq!(run.result_u64("rng-nonzero"), Some(1), "{}", run.describe());
    // Consecutive bytes of the file: the second read continues where the first stopped.
    assert_eq!(run.result_u64("rng-differ"), Some(1), "{}", run.describe());

    let run = run_rng("/dev/urandom");
    assert_eq!(run.result_u64("rng-bytes"), Some(128), "{}", run.describe());
    assert_eq!(run.result_u64("rng-differ"), Some(1), "{}", run.describe());
}

#[test]
fn an_unreadable_source_is_refused_before_the_vm_starts() {
    for src in [
        "src=/nonexistent/entropy",
        "src=/",
        "path=/dev/urandom",
        "src=",
    ] {
        let out = std::process::Command::new(PODVISOR)
            .args(["run", "--kernel", "/dev/null", "--rng", src])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_INVALID_CONFIG),
            "{src}: {stderr}"
        );
        assert!(stderr.contains("rng"), "{src}: {stderr}");
    }
}
