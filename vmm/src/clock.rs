//! The process clock and the boot timeline measured against it.
//!
//! Boot time is reported relative to the moment the process started (the first statement of
//! `main` calls [`start`]), so it includes argument parsing, memory setup and kernel loading,
//! which is what a pod pays. The timeline is printed at exit as one line on stderr for the
//! benchmark scripts; its format is part of the command-line contract:
//!
//! ```text
//! boot-timing first-instruction-us=N marker-XX-us=N ... exit-us=N
//! ```
//!
//! * every value is whole microseconds since process start;
//! * `first-instruction-us` is when vCPU 0 first entered `KVM_RUN` (absent if it never did);
//! * `marker-XX-us` is the first write of byte `XX` (two lower-case hex digits) to the
//!   boot-progress port, in the order the guest wrote them; later writes of the same byte are
//!   not repeated;
//! * `exit-us` is when the VM stopped (all vCPUs out of `KVM_RUN`).

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use devices::legacy::boot_marker::BootMarkerLog;

static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Pins the process start. Call it first thing in `main`; later calls keep the first value.
pub fn start() -> Instant {
    *PROCESS_START.get_or_init(Instant::now)
}

/// Time elapsed between process start and `at` (zero if `at` is earlier, which only happens
/// when [`start`] was called late).
pub fn since_start(at: Instant) -> Duration {
    at.saturating_duration_since(start())
}

/// What the VM reached and when, as offsets from process start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootTimeline {
    /// vCPU 0's first entry into `KVM_RUN`.
    pub first_instruction: Option<Duration>,
    /// First write of each boot-progress marker value, in guest order.
    pub markers: Vec<(u8, Duration)>,
    /// When the VM stopped.
    pub exit: Option<Duration>,
}

impl BootTimeline {
    /// Records a marker unless the same value was already seen.
    pub fn record_marker(&mut self, value: u8, at: Duration) {
        if !self.markers.iter().any(|(v, _)| *v == value) {
            self.markers.push((value, at));
        }
    }
}

impl fmt::Display for BootTimeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("boot-timing")?;
        if let Some(t) = self.first_instruction {
            write!(f, " first-instruction-us={}", t.as_micros())?;
        }
        for (value, t) in &self.markers {
            write!(f, " marker-{value:02x}-us={}", t.as_micros())?;
        }
        if let Some(t) = self.exit {
            write!(f, " exit-us={}", t.as_micros())?;
        }
        Ok(())
    }
}

/// The live timeline of one VM: vCPU 0 records its first run, the marker device fills its
/// log, the control loop records the exit; the CLI (and the API) read snapshots.
#[derive(Debug, Default)]
pub struct BootClock {
    first_instruction: OnceLock<Duration>,
    exit: OnceLock<Duration>,
    markers: BootMarkerLog,
}

impl BootClock {
    /// A clock whose marker records come from `markers` (shared with the marker device).
    pub fn new(markers: BootMarkerLog) -> Self {
        Self {
            markers,
            ..Default::default()
        }
    }

    /// Records the first entry into `KVM_RUN`; later calls are ignored.
    pub fn record_first_instruction(&self, at: Instant) {
        let _ = self.first_instruction.set(since_start(at));
    }

    /// Records the moment the VM stopped; later calls are ignored.
    pub fn record_exit(&self, at: Instant) {
        let _ = self.exit.set(since_start(at));
    }

    pub fn snapshot(&self) -> BootTimeline {
        let mut timeline = BootTimeline {
            first_instruction: self.first_instruction.get().copied(),
            exit: self.exit.get().copied(),
            markers: Vec::new(),
        };
        for marker in self.markers.markers() {
            timeline.record_marker(marker.value, marker.elapsed);
        }
        timeline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_one_parseable_line() {
        let mut t = BootTimeline {
            first_instruction: Some(Duration::from_micros(1500)),
            ..Default::default()
        };
        t.record_marker(1, Duration::from_micros(2000));
        t.record_marker(0x2a, Duration::from_micros(3000));
        t.record_marker(1, Duration::from_micros(9000));
        t.exit = Some(Duration::from_millis(4));
        assert_eq!(
            t.to_string(),
            "boot-timing first-instruction-us=1500 marker-01-us=2000 marker-2a-us=3000 exit-us=4000"
        );
        assert_eq!(BootTimeline::default().to_string(), "boot-timing");
    }

    #[test]
    fn clock_keeps_the_first_value_and_merges_markers() {
        let clock = BootClock::new(BootMarkerLog::new());
        let t0 = start();
        clock.record_first_instruction(t0 + Duration::from_millis(3));
        clock.record_first_instruction(t0 + Duration::from_millis(9));
        clock.record_exit(t0 + Duration::from_millis(5));
        let snap = clock.snapshot();
        assert_eq!(snap.first_instruction, Some(Duration::from_millis(3)));
        assert_eq!(snap.exit, Some(Duration::from_millis(5)));
        assert!(snap.markers.is_empty());
    }

    #[test]
    fn process_start_is_fixed() {
        let a = start();
        let b = start();
        assert_eq!(a, b);
        assert!(since_start(Instant::now()) >= Duration::ZERO);
    }
}
