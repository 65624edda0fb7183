//! Linux guests for the integration tests.
//!
//! - [`Kit`]: the guest kit built by `scripts/guest-kit` (Debian's kernel as bzImage and
//!   vmlinux, and an initramfs), found through `PODVISOR_KIT_DIR` or the default cache.
//! - [`HostMode`]: what Linux can do on this host: only early boot on PVM (KVM without hardware
//!   virtualization, `/sys/module/kvm_pvm`), the whole way to init on full KVM.
//! - [`ConsoleVm`]: a `podvisor run` child whose serial console (stdout) is collected and can be
//!   waited on, killed once the test has seen what it needs.
//! - Parsers of the kernel's early-boot log, an independent reader of what the VMM built: the
//!   e820 map, the ACPI tables, "Allowing N CPUs" and the initrd location.

use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod image;
#[cfg(test)]
mod tests;

/// Errors of the Linux test helpers.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error("/dev/kvm is missing and PODVISOR_REQUIRE_KVM=1")]
    KvmRequired,
    #[error(
        "the Linux guest kit is missing ({0}) and PODVISOR_REQUIRE_KVM=1; run scripts/guest-kit"
    )]
    KitRequired(String),
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("controlling the VM process: {0}")]
    Process(#[from] std::io::Error),
    #[error("a console reader thread panicked")]
    ReaderPanicked,
    #[error("kernel log line `{line}`: {why}")]
    Parse { line: String, why: &'static str },
}

/// True when tests needing KVM (and the kit) must fail rather than skip.
pub fn kvm_required() -> bool {
    std::env::var("PODVISOR_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// How far Linux can boot on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMode {
    /// PVM: Linux gets through early boot (e820, ACPI, CPUs, initrd) and dies before init.
    EarlyBootOnly,
    /// Hardware-assisted KVM: Linux boots to the kit's /init.
    FullKvm,
}

impl HostMode {
    /// Detects the host's mode from the loaded KVM modules.
    pub fn detect() -> Self {
        if Path::new("/sys/module/kvm_pvm").exists() {
            HostMode::EarlyBootOnly
        } else {
            HostMode::FullKvm
        }
    }
}

impl fmt::Display for HostMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMode::EarlyBootOnly => write!(f, "Linux early boot (PVM host: kvm_pvm loaded)"),
            HostMode::FullKvm => write!(f, "Linux to init (full KVM host)"),
        }
    }
}

/// The files of the Linux guest kit.
#[derive(Debug, Clone)]
pub struct Kit {
    pub dir: PathBuf,
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
}

impl Kit {
    /// The kit directory: `PODVISOR_KIT_DIR`, else `${PODVISOR_CACHE:-$HOME/.cache/podvisor}/guest-kit`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("PODVISOR_KIT_DIR") {
            return Some(PathBuf::from(dir));
        }
        let cache = match std::env::var_os("PODVISOR_CACHE") {
            Some(cache) => PathBuf::from(cache),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/podvisor"),
        };
        Some(cache.join("guest-kit"))
    }

    /// Finds the kit; the error says what is missing.
    pub fn locate() -> Result<Kit, String> {
        let dir = Kit::default_dir().ok_or("neither PODVISOR_KIT_DIR nor HOME is set")?;
        let kit = Kit {
            bzimage: dir.join("bzImage"),
            vmlinux: dir.join("vmlinux"),
            initramfs: dir.join("initramfs.cpio"),
            dir,
        };
        for file in [&kit.bzimage, &kit.vmlinux, &kit.initramfs] {
            if !file.is_file() {
                return Err(format!("no {}", file.display()));
            }
        }
        Ok(kit)
    }
}

/// Decides whether a Linux test runs here. `Ok(None)` means skip (the reason is printed as a
/// `SKIPPED:` line); an error means a requirement of `PODVISOR_REQUIRE_KVM=1` is not met.
pub fn prepare() -> Result<Option<(Kit, HostMode)>, LinuxError> {
    if !Path::new("/dev/kvm").exists() {
        if kvm_required() {
            return Err(LinuxError::KvmRequired);
        }
        println!("SKIPPED: no /dev/kvm");
        return Ok(None);
    }
    match Kit::locate() {
        Ok(kit) => Ok(Some((kit, HostMode::detect()))),
        Err(why) if kvm_required() => Err(LinuxError::KitRequired(why)),
        Err(why) => {
            println!("SKIPPED: no Linux guest kit ({why}); run scripts/guest-kit");
            Ok(None)
        }
    }
}

/// Text collected from one of the child's pipes.
#[derive(Default)]
struct Stream {
    text: Mutex<(String, bool)>,
    changed: Condvar,
}

impl Stream {
    fn lock(&self) -> MutexGuard<'_, (String, bool)> {
        // A reader that panicked mid-append leaves valid text behind; keep using it.
        self.text
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pump(self: Arc<Self>, mut pipe: impl Read + Send + 'static) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = pipe.read(&mut buf).unwrap_or(0);
                let mut state = self.lock();
                if n == 0 {
                    state.1 = true;
                } else {
                    state
                        .0
                        .push_str(&String::from_utf8_lossy(&buf[..n]).replace('\r', ""));
                }
                drop(state);
                self.changed.notify_all();
                if n == 0 {
                    break;
                }
            }
        })
    }
}

/// How a wait on the console ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The condition held.
    Seen,
    /// The VMM closed the console (it exited) before the condition held.
    Closed,
    /// The time ran out.
    TimedOut,
}

/// A `podvisor run` process with its serial console on stdout.
pub struct ConsoleVm {
    child: Child,
    console: Arc<Stream>,
    stderr: Arc<Stream>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
}

impl ConsoleVm {
    /// Starts `podvisor` with `args` (which should include `--serial stdout`).
    pub fn spawn(podvisor: &Path, args: &[String]) -> Result<Self, LinuxError> {
        let mut child = Command::new(podvisor)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LinuxError::Spawn {
                path: podvisor.to_path_buf(),
                source,
            })?;
        let started = Instant::now();
        let console = Arc::new(Stream::default());
        let stderr = Arc::new(Stream::default());
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(Arc::clone(&console).pump(out));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(Arc::clone(&stderr).pump(err));
        }
        Ok(ConsoleVm {
            child,
            console,
            stderr,
            readers,
            started,
        })
    }

    /// The VMM's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time since the process was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything the guest has written to its console so far.
    pub fn console(&self) -> String {
        self.console.lock().0.clone()
    }

    /// Everything the VMM has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().0.clone()
    }

    /// Waits until `done(console)` holds, the console closes, or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> Wait {
        let deadline = Instant::now() + timeout;
        let mut state = self.console.lock();
        loop {
            if done(&state.0) {
                return Wait::Seen;
            }
            if state.1 {
                return Wait::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wait::TimedOut;
            }
            state = match self.console.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Waits up to `timeout` for the VMM to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, LinuxError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.join_readers()?;
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the VMM (if still running) and collects its pipes to the end.
    pub fn kill(&mut self) -> Result<ExitStatus, LinuxError> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        let status = self.child.wait()?;
        self.join_readers()?;
        Ok(status)
    }

    fn join_readers(&mut self) -> Result<(), LinuxError> {
        for reader in self.readers.drain(..) {
            reader.join().map_err(|_| LinuxError::ReaderPanicked)?;
        }
        Ok(())
    }
}

impl Drop for ConsoleVm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One entry of the firmware memory map as the kernel prints it (`BIOS-e820: [mem A-B] kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E820Entry {
    /// Guest-physical range, end exclusive.
    pub range: Range<u64>,
    /// `usable`, `reserved`, `ACPI data`, `ACPI NVS`, ...
    pub kind: String,
}

/// One ACPI table as the kernel lists it (`ACPI: SIG 0xADDRESS LENGTH (...)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTable {
    pub signature: String,
    pub address: u64,
    pub length: u64,
    /// The OEM ID from the table header (`PODVSR` for tables podvisor built).
    pub oem_id: String,
}

fn parse_error(line: &str, why: &'static str) -> LinuxError {
    LinuxError::Parse {
        line: line.to_string(),
        why,
    }
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x").unwrap_or(text), 16).ok()
}

/// Parses `[mem 0xSTART-0xEND]` (END inclusive) at the start of `text` into `START..END+1` and
/// the rest of the text after the bracket.
fn mem_range<'a>(line: &str, text: &'a str) -> Result<(Range<u64>, &'a str), LinuxError> {
    let body = text
        .strip_prefix("[mem ")
        .ok_or_else(|| parse_error(line, "expected `[mem `"))?;
    let (range, rest) = body
        .split_once(']')
        .ok_or_else(|| parse_error(line, "no closing `]`"))?;
    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| parse_error(line, "no `-` in the range"))?;
    let start = hex(start).ok_or_else(|| parse_error(line, "bad start address"))?;
    let end = hex(end).ok_or_else(|| parse_error(line, "bad end address"))?;
    if end < start || end == u64::MAX {
        return Err(parse_error(line, "range ends before it starts"));
    }
    Ok((start..end + 1, rest))
}

/// The memory map the kernel received from the VMM, in the order printed.
pub fn e820_entries(log: &str) -> Result<Vec<E820Entry>, LinuxError> {
    let mut entries = Vec::new();
    for line in log.lines() {
        let Some(at) = line.find("BIOS-e820: ") else {
            continue;
        };
        let (range, rest) = mem_range(line, &line[at + "BIOS-e820: ".len()..])?;
        let kind = rest.trim();
        if kind.is_empty() {
            return Err(parse_error(line, "no memory type"));
        }
        entries.push(E820Entry {
            range,
            kind: kind.to_string(),
        });
    }
    Ok(entries)
}

/// The ACPI tables the kernel found, in the order printed.
pub fn acpi_tables(log: &str) -> Vec<AcpiTable> {
    let mut tables = Vec::new();
    for line in log.lines() {
        let Some(at) = line.find("ACPI: ") else {
            continue;
        };
        let mut words = line[at + "ACPI: ".len()..].split_whitespace();
        let (Some(sig), Some(address), Some(length), Some(rev), Some(oem)) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            continue;
        };
        // Other "ACPI: ..." messages do not have this shape.
        if sig.len() != 4 || !address.starts_with("0x") || !rev.starts_with("(v") {
            continue;
        }
        if let (Some(address), Some(length)) = (hex(address), hex(length)) {
            tables.push(AcpiTable {
                signature: sig.to_string(),
                address,
                length,
                oem_id: oem.trim_end_matches(')').to_string(),
            });
        }
    }
    tables
}

/// N from `smpboot: Allowing N CPUs, M hotplug CPUs`, if printed yet.
pub fn allowed_cpus(log: &str) -> Option<u32> {
    log.lines().find_map(|line| {
        let at = line.find("Allowing ")?;
        let rest = &line[at + "Allowing ".len()..];
        let (n, rest) = rest.split_once(' ')?;
        rest.starts_with("CPUs").then(|| n.parse().ok()).flatten()
    })
}

/// The initrd as the kernel placed it (`RAMDISK: [mem A-B]`), end exclusive, if printed yet.
/// The kernel prints the page-aligned end of the image.
pub fn ramdisk(log: &str) -> Result<Option<Range<u64>>, LinuxError> {
    for line in log.lines() {
        if let Some(at) = line.find("RAMDISK: ") {
            let (range, _) = mem_range(line, &line[at + "RAMDISK: ".len()..])?;
            return Ok(Some(range));
        }
    }
    Ok(None)
}

/// The value of `key=` on the last `PODVISOR-INIT:` line of the kit's /init that has it.
pub fn init_value(log: &str, key: &str) -> Option<String> {
    let wanted = format!("{key}=");
    log.lines()
        .filter_map(|line| line.split_once("PODVISOR-INIT: ").map(|(_, rest)| rest))
        .filter_map(|rest| {
            rest.split_whitespace()
                .find_map(|word| word.strip_prefix(wanted.as_str()).map(str::to_string))
        })
        .next_back()
}
