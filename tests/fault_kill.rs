//! Fault suite: the VMM killed with SIGKILL in the middle of a guest's write stream. Every
//! block the guest had seen flushed (`blk-flushed=N`: a FLUSH completed after blocks 0..N were
//! written) must be on the host file afterwards — acknowledged data is never lost, whatever
//! happens to the VMM. The stream comes from the probe's `blk-stream` scenario.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

use std::path::Path;
use std::time::Duration;

use podvisor_tests::linux::{ConsoleVm, Wait};
use podvisor_tests::probe::{self, ProbeVm};
use podvisor_tests::scratch::Scratch;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");
const BLOCK: usize = 4096;

/// The largest `blk-flushed=N` on complete console lines.
fn flushed(console: &str) -> u64 {
    console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("PROBE-RESULT blk-flushed="))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn every_flushed_block_survives_a_sigkill() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("fault", "kill").unwrap();
    let disk = scratch.file("stream.img", &vec![0u8; 4 << 20]).unwrap();
    let args = ProbeVm::new("blk-stream")
        .param("probe.flush-every", 4)
        .arg("--disk")
        .arg(&format!("path={}", disk.display()))
        .args();
    let mut vm = ConsoleVm::spawn(Path::new(PODVISOR), &args).unwrap();
    // Let a few flushes complete, then kill the VMM without warning.
    let seen = vm.wait_for(Duration::from_secs(120), |c| flushed(c) >= 12);
    assert_eq!(
        seen,
        Wait::Seen,
        "the stream never got going\n{}\n{}",
        vm.console(),
        vm.stderr()
    );
    let status = vm.kill().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the VMM was not killed mid-stream: {status:?}"
    );
    let acknowledged = flushed(&vm.console());
    assert!(acknowledged >= 12);
    let data = std::fs::read(&disk).unwrap();
    for n in 0..acknowledged {
        let start = n as usize * BLOCK;
        let block = &data[start..start + BLOCK];
        assert_eq!(
            &block[..8],
            &n.to_le_bytes(),
            "block {n} of {acknowledged} acknowledged was lost"
        );
        assert!(block[8..].iter().all(|&b| b == 0xB5), "block {n} is torn");
    }
}
