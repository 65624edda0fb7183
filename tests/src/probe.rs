//! The probe guest in integration tests: boot it under `podvisor run` with a scenario, wait for
//! the VMM to exit (killing it after a hard timeout), and read back what the probe reported.
//!
//! ```ignore
//! use podvisor_tests::probe::{self, ProbeVm};
//! if !probe::require_kvm() { return; }
//! let run = ProbeVm::new("boot").cpus(2).memory_mib(256)
//!     .run(env!("CARGO_BIN_EXE_podvisor"))
//!     .unwrap_or_else(|e| panic!("{e}"));
//! assert_eq!(run.exit_code(), Some(probe::EXIT_POWER_OFF), "{}", run.describe());
//! assert_eq!(run.result_u64("cpus"), Some(2), "{}", run.describe());
//! ```
//!
//! The probe's side of the protocol is documented in `guest/src/main.rs`: `PROBE-RESULT
//! key=value` and `PROBE-ERROR text` lines on the serial console, the boot-progress marker
//! bytes 0x01/0x02/0x03 on port 0x440, and how each scenario ends.
//!
//! | scenario (`probe.run=`) | parameters | results | ends with (exit status) |
//! | --- | --- | --- | --- |
//! | `boot` | | `cpus`, `ram-bytes`, `ram-mib` | power-off (0) |
//! | `poweroff` | | | power-off (0) |
//! | `reboot` | `probe.reset=acpi\|i8042` | | reset (3) |
//! | `triple-fault` | | | triple fault (4) |
//! | `page-fault` | | a `PROBE-ERROR exception vector=14 ...` | power-off (0) |
//! | `idle` | `probe.secs=N` (1) | `clock`, `idle-wait`, `idle-ms` | power-off (0) |
//! | `smp` | `probe.smp-timeout-ms=N` | `cpus`, `cpus-online` | power-off (0) |
//! | `memory` | | `mem-samples`, `mem-stride-kib`, `mem-top` (hex), `mem-errors` | power-off (0) |
//! | `pci` | | `pci-devices`, `pci.BB:DD.F=vendor:device` | power-off (0) |
//! | `serial-echo` | `probe.secs=N` (30) | `echo`, `echo-bytes` | power-off (0) |
//! | `blk-write`, `blk-read` | `probe.blk-mib=N`, `probe.blk-seed=N` | `blk0-bdf`, `blk-*-sha256`, ... (see `guest/src/scenario/blk_*.rs`) | power-off (0) |
//! | `hostile` | `probe.hostile-device=blk\|rng\|vsock\|fs` (two disks; or one disk and rng, vsock `cid=3` or a share) | `hostile-<case>=survived` (or `broken`) per hostile case (vsock and fs add their own, see `guest/src/scenario/hostile_queues.rs`), `other-bdf`, `hostile-other-disk-sha256` | power-off (0) |
//! | `pci-fuzz` | `probe.pci-fuzz-ops=N` (3000), `probe.pci-fuzz-seed=N` (1); at least one disk | `pci-fuzz-functions=N`, `pci-fuzz-ops=N`, `pci-fuzz-bars-moved=N`, `pci-fuzz-functions-after=N`, `blk0-bdf`, `pci-fuzz-disk-sha256` (first sector, after the guest restored the configuration) | power-off (0) |
//! | `blk-stream` | `probe.flush-every=N`, `probe.blk-kib=N` | `blk-flushed=<blocks>` after each flush (block n holds n) | power-off (0), or killed by the test |
//! | `power-button` | `probe.secs=N` (60) | `power-button-waiting`, `power-button=pressed\|timeout` (polls the GED event port 0x610) | power-off (0) |
//! | `rng` | (`--rng src=PATH` on the VMM) | `rng-bdf`, `rng-bytes`, `rng-nonzero`, `rng-differ` (two 64-byte reads) | power-off (0) |
//! | `vsock-echo` | `probe.secs=N` (300), `probe.vsock-listen-delay-ms=N`, `probe.vsock-source-mib=N` | `vsock-bdf`, `vsock-cid`, `vsock-accepted`, `vsock-echo-bytes`, `vsock-hello`, `vsock-end` (echo on port 1024, ends on a connection to 1025; see `guest/src/scenario/vsock_echo.rs`) | power-off (0) |
//! | `fs-rw` | `probe.fs-tag=TAG`, `probe.fs-fault=1`, `probe.fs-timeout-ms=N` (10000), `probe.secs=N` (60, fault mode) | `fsN-tag`, `fs-shares`, `fs-minor`, `fs-read-sha256`, `fs-read-bytes`, `fs-write-bytes`, `fs-dir`; fault mode: `fs-ready`, `fs-fault`, `fs-other-share` (FUSE over virtio-fs; see `guest/src/scenario/fs_rw.rs`) | power-off (0) |
//! | `hotplug` | `probe.secs=N` (60), `probe.hotplug-events=N`, `probe.hash-kib=N` (8192), `probe.fs-timeout-ms=N` (10000) | `hotplug-ready=PRESENT` (8 hex digits), then per event `hotplug-N=add,SS,VVVV:DDDD[,sha256=HEX\|,error=TEXT]` or `hotplug-N=eject,SS` (polls the hot-plug registers at 0xae00; virtio-blk: SHA-256 of the first `hash-kib` KiB, virtio-fs: of `in.bin`; see `guest/src/scenario/hotplug.rs`) | power-off (0) |
//! | `agent` | `probe.secs=N` (3600), `probe.fs-tag=TAG` | `agent-port`, `agent-requests`, `agent-end` (line requests on vsock port 1024: `echo`, `disk-sha256`, `read`, `poweroff`; see `guest/src/scenario/agent.rs`) | power-off (0) |
//!
//! An unknown scenario, and any exception or panic in the probe, gives a `PROBE-ERROR` line and
//! a power-off, so a broken run fails fast instead of at the timeout.

use crate::linux::{tail, ConsoleVm, LinuxError};
use crate::overhead::{OverheadWatch, MAX_OVERHEAD_KIB};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

#[cfg(test)]
mod agent_tests;
#[cfg(test)]
mod fuse_tests;
#[cfg(test)]
mod hotplug_tests;
#[cfg(test)]
mod parse_tests;
#[cfg(test)]
mod tests;

/// `podvisor run` exit statuses (see `podvisor run --help`).
pub const EXIT_POWER_OFF: i32 = 0;
pub const EXIT_INTERNAL_ERROR: i32 = 1;
pub const EXIT_INVALID_CONFIG: i32 = 2;
pub const EXIT_REBOOT: i32 = 3;
pub const EXIT_TRIPLE_FAULT: i32 = 4;

/// Boot-progress marker bytes the probe writes to port 0x440.
pub const MARKER_ENTERED_RUST: u8 = 0x01;
pub const MARKER_SCENARIO_START: u8 = 0x02;
pub const MARKER_ENDING: u8 = 0x03;

/// Default hard timeout of one run. Generous: on hosts where KVM emulates privileged
/// instructions (PVM) a probe boot takes seconds, and the machine may be shared.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of the probe fixture.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("running the VMM: {0}")]
    Vm(#[from] LinuxError),
    #[error(
        "the VMM used {kib} KiB outside guest RAM, above the bound of {bound} KiB\n--- stderr (last lines) ---\n{stderr}"
    )]
    MemoryOverhead {
        kib: u64,
        bound: u64,
        stderr: String,
    },
    #[error(
        "the VM did not exit within {timeout:?}; killed it.\n--- console (last lines) ---\n{console}\n--- stderr (last lines) ---\n{stderr}"
    )]
    Timeout {
        timeout: Duration,
        console: String,
        stderr: String,
    },
}

/// Path of the probe ELF, built by this crate's build script (`<target>/release/probe`).
pub fn probe_path() -> PathBuf {
    PathBuf::from(env!("PODVISOR_PROBE"))
}

/// Whether a test needing KVM should run: true if `/dev/kvm` exists. If it does not, the test
/// is skipped (prints `SKIPPED: no /dev/kvm`, returns false) — unless `PODVISOR_REQUIRE_KVM=1`,
/// in which case the calling test fails.
#[allow(clippy::panic)] // reason: failing the calling test is the point when KVM is required.
pub fn require_kvm() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    if crate::linux::kvm_required() {
        panic!("/dev/kvm is missing and PODVISOR_REQUIRE_KVM=1");
    }
    println!("SKIPPED: no /dev/kvm");
    false
}

/// One probe run to start: scenario, VM shape, extra `probe.*` keys and the timeout.
#[derive(Debug, Clone)]
pub struct ProbeVm {
    scenario: String,
    cpus: u32,
    memory_mib: u64,
    params: Vec<String>,
    serial: String,
    extra_args: Vec<String>,
    timeout: Duration,
}

impl ProbeVm {
    /// A run of `scenario` (`probe.run=NAME`) with 1 vCPU and 128 MiB.
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            cpus: 1,
            memory_mib: 128,
            params: Vec::new(),
            serial: "stdout".to_owned(),
            extra_args: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Number of vCPUs (`--cpus`).
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Guest RAM in MiB (`--memory NM`).
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Adds a `key=value` word to the guest command line, e.g. `param("probe.secs", 2)`.
    pub fn param(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.params.push(format!("{key}={value}"));
        self
    }

    /// Where the VMM sends COM1 (`--serial`): `stdout` (the default, collected into
    /// [`ProbeRun::console`]), `file=PATH` or `off`.
    pub fn serial(mut self, mode: &str) -> Self {
        self.serial = mode.to_owned();
        self
    }

    /// Adds a raw `podvisor run` argument (for options the builder does not cover).
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Hard timeout after which the VMM is killed (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The guest command line this run passes.
    pub fn cmdline(&self) -> String {
        let mut words = vec![format!("probe.run={}", self.scenario)];
        words.extend(self.params.iter().cloned());
        words.join(" ")
    }

    /// The `podvisor` arguments this run passes.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "run".to_owned(),
            "--kernel".to_owned(),
            probe_path().display().to_string(),
            "--cmdline".to_owned(),
            self.cmdline(),
            "--cpus".to_owned(),
            self.cpus.to_string(),
            "--memory".to_owned(),
            format!("{}M", self.memory_mib),
            "--serial".to_owned(),
            self.serial.clone(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Boots the probe with the `podvisor` binary at `podvisor` (in the root package's tests:
    /// `env!("CARGO_BIN_EXE_podvisor")`) and waits for the VMM to exit.
    pub fn run(&self, podvisor: impl AsRef<Path>) -> Result<ProbeRun, ProbeError> {
        let mut vm = ConsoleVm::spawn(podvisor.as_ref(), &self.args())?;
        let watch = OverheadWatch::start(vm.pid(), self.memory_mib << 20);
        let exit = vm.wait_exit(self.timeout)?;
        let overhead = watch.finish();
        if overhead > MAX_OVERHEAD_KIB {
            return Err(ProbeError::MemoryOverhead {
                kib: overhead,
                bound: MAX_OVERHEAD_KIB,
                stderr: tail(&vm.stderr(), 20),
            });
        }
        match exit {
            Some(status) => Ok(ProbeRun {
                status,
                elapsed: vm.elapsed(),
                console: vm.console(),
                stderr: vm.stderr(),
                overhead_kib: overhead,
            }),
            None => {
                vm.kill()?;
                Err(ProbeError::Timeout {
                    timeout: self.timeout,
                    console: tail(&vm.console(), 40),
                    stderr: tail(&vm.stderr(), 20),
                })
            }
        }
    }
}

/// A finished probe run.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    pub status: ExitStatus,
    /// Wall time from spawning the VMM to its exit.
    pub elapsed: Duration,
    /// Everything the guest wrote to its serial console (`\r` removed); empty unless the
    /// serial mode was `stdout`. With `file=PATH`, read the file and use [`parse_results`].
    pub console: String,
    /// Everything the VMM wrote to stderr.
    pub stderr: String,
    /// The largest resident memory outside guest RAM seen while it ran (KiB).
    pub overhead_kib: u64,
}

impl ProbeRun {
    /// The VMM's exit status, `None` if it died from a signal.
    pub fn exit_code(&self) -> Option<i32> {
        self.status.code()
    }

    /// All `PROBE-RESULT key=value` pairs (a repeated key keeps its last value).
    pub fn results(&self) -> BTreeMap<String, String> {
        parse_results(&self.console)
    }

    /// One result value.
    pub fn result(&self, key: &str) -> Option<String> {
        self.results().remove(key)
    }

    /// One result value as a number; `None` if missing or not a decimal number.
    pub fn result_u64(&self, key: &str) -> Option<u64> {
        self.result(key)?.parse().ok()
    }

    /// One result value written as `0x`-prefixed hexadecimal (e.g. `mem-top`).
    pub fn result_hex(&self, key: &str) -> Option<u64> {
        let text = self.result(key)?;
        u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
    }

    /// The text of every `PROBE-ERROR` line.
    pub fn errors(&self) -> Vec<String> {
        parse_errors(&self.console)
    }

    /// The boot-progress marker bytes the VMM saw, in order, from its `boot-timing` stderr line.
    pub fn markers(&self) -> Vec<u8> {
        parse_markers(&self.stderr)
    }

    /// A summary for assertion messages: exit status, console and stderr tails.
    pub fn describe(&self) -> String {
        format!(
            "exit status {:?} after {:?}\n--- console (last lines) ---\n{}\n--- stderr (last lines) ---\n{}",
            self.exit_code(),
            self.elapsed,
            tail(&self.console, 40),
            tail(&self.stderr, 20)
        )
    }
}

/// Extracts `PROBE-RESULT key=value` pairs from console text. Tolerates bytes before the tag on
/// the same line (another writer may not have ended its line); ignores lines without `=`.
pub fn parse_results(console: &str) -> BTreeMap<String, String> {
    let mut results = BTreeMap::new();
    for line in console.lines() {
        let Some(at) = line.find("PROBE-RESULT ") else {
            continue;
        };
        let pair = line[at + "PROBE-RESULT ".len()..].trim();
        if let Some((key, value)) = pair.split_once('=') {
            if !key.is_empty() && !key.contains(char::is_whitespace) {
                results.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    results
}

/// The text after `PROBE-ERROR ` on every line that has it.
pub fn parse_errors(console: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|line| {
            let at = line.find("PROBE-ERROR")?;
            Some(line[at + "PROBE-ERROR".len()..].trim().to_owned())
        })
        .collect()
}

/// Marker bytes from the VMM's `boot-timing ... marker-XX-us=N ...` stderr line, in order.
pub fn parse_markers(stderr: &str) -> Vec<u8> {
    let Some(line) = stderr.lines().rev().find(|l| l.contains("boot-timing")) else {
        return Vec::new();
    };
    line.split_whitespace()
        .filter_map(|word| {
            let hex = word.strip_prefix("marker-")?.split_once("-us=")?.0;
            u8::from_str_radix(hex, 16).ok()
        })
        .collect()
}
