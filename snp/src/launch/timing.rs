//! Wall time of each launch phase, taken inside [`super::launch`] so benchmarks read the VMM's
//! own clock instead of guessing from outside the process. Printed by the VMM as one stderr line
//! (`snp-launch-timing …`, see [`LaunchTiming`]'s `Display`), which `scripts/bench/all --snp`
//! parses.

use std::fmt;
use std::time::{Duration, Instant};

/// Time spent per launch phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaunchTiming {
    /// Computing the expected launch digest from the plan.
    pub digest: Duration,
    /// KVM_SEV_INIT2.
    pub init2: Duration,
    /// guest_memfd slots and private attributes for the measured ranges.
    pub memory: Duration,
    /// vCPU creation with their initial register state.
    pub vcpus: Duration,
    /// SNP_LAUNCH_START.
    pub launch_start: Duration,
    /// Every SNP_LAUNCH_UPDATE, CPUID retries included.
    pub launch_update: Duration,
    /// Ranges given to SNP_LAUNCH_UPDATE.
    pub update_ranges: usize,
    /// SNP_LAUNCH_FINISH.
    pub finish: Duration,
}

impl LaunchTiming {
    /// Sum of all phases.
    pub fn total(&self) -> Duration {
        self.digest
            + self.init2
            + self.memory
            + self.vcpus
            + self.launch_start
            + self.launch_update
            + self.finish
    }
}

/// Runs `f` and adds its wall time to `slot`.
pub(crate) fn timed<T>(slot: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *slot += start.elapsed();
    out
}

impl fmt::Display for LaunchTiming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.as_micros();
        write!(
            f,
            "snp-launch-timing digest-us={} init2-us={} memory-us={} vcpus-us={} \
             launch-start-us={} launch-update-us={} launch-update-ranges={} finish-us={} \
             total-us={}",
            us(self.digest),
            us(self.init2),
            us(self.memory),
            us(self.vcpus),
            us(self.launch_start),
            us(self.launch_update),
            self.update_ranges,
            us(self.finish),
            us(self.total())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_every_phase_in_microseconds() {
        let ms = Duration::from_millis;
        let t = LaunchTiming {
            digest: ms(1),
            init2: ms(2),
            memory: ms(3),
            vcpus: ms(4),
            launch_start: ms(5),
            launch_update: ms(6),
            update_ranges: 7,
            finish: ms(8),
        };
        assert_eq!(
            t.to_string(),
            "snp-launch-timing digest-us=1000 init2-us=2000 memory-us=3000 vcpus-us=4000 \
             launch-start-us=5000 launch-update-us=6000 launch-update-ranges=7 finish-us=8000 \
             total-us=29000"
        );
    }

    #[test]
    fn timed_adds_to_its_slot() {
        let mut slot = Duration::from_secs(1);
        let v = timed(&mut slot, || 42);
        assert_eq!(v, 42);
        assert!(slot >= Duration::from_secs(1));
    }
}
