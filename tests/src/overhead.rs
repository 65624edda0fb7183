//! The VMM's memory overhead, watched while tests run (as Firecracker does in every test):
//! the anonymous memory of the VMM process outside guest RAM — heap, thread stacks, device
//! buffers, written data pages — sampled from `/proc/<pid>/smaps`. That is what each further
//! pod VM costs the host; the program's code pages are shared with every other podvisor
//! process through the page cache and are not counted (they also differ between debug and
//! release builds by several MiB). Guest RAM is recognised as the mappings whose size is
//! exactly one of the VM's RAM regions (RAM is split around the 32-bit MMIO hole at 3 GiB).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The bound every probe run must stay under (KiB), as the hardening plan starts it; the
/// measured overhead is well below (see `tests/src/overhead.rs` users' output and
/// docs/benchmarks.md) and the bound is tightened as measurements allow.
pub const MAX_OVERHEAD_KIB: u64 = 8 * 1024;

const MMIO_HOLE_START: u64 = 3 << 30;

/// The sizes of the RAM regions of a VM with `ram` bytes.
fn ram_region_sizes(ram: u64) -> Vec<u64> {
    if ram <= MMIO_HOLE_START {
        vec![ram]
    } else {
        vec![MMIO_HOLE_START, ram - MMIO_HOLE_START]
    }
}

/// Anonymous resident KiB of `pid` outside guest RAM, or `None` once the process is gone.
pub fn overhead_kib(pid: u32, ram: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let ram_sizes = ram_region_sizes(ram);
    let mut total = 0u64;
    let mut counted = true;
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Anonymous:") {
            if counted {
                let kib: u64 = rss.trim().trim_end_matches("kB").trim().parse().ok()?;
                total += kib;
            }
            continue;
        }
        // A mapping header: `start-end perms offset dev inode [path]`.
        let Some((range, _)) = line.split_once(' ') else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            counted = !ram_sizes.contains(&(end.saturating_sub(start)));
        }
    }
    Some(total)
}

/// A thread sampling a process's overhead until stopped; keeps the maximum.
pub struct OverheadWatch {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl OverheadWatch {
    /// Samples `pid` (a VM with `ram` bytes of guest RAM) every 50 ms.
    pub fn start(pid: u32, ram: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                match overhead_kib(pid, ram) {
                    Some(kib) => {
                        m.fetch_max(kib, Ordering::AcqRel);
                    }
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            max,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns the largest overhead seen (KiB).
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max.load(Ordering::Acquire)
    }
}

impl Drop for OverheadWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_an_overhead_and_ram_mappings_are_left_out() {
        let own = overhead_kib(std::process::id(), 1 << 30).unwrap();
        assert!(own > 0);
        assert!(overhead_kib(u32::MAX, 1 << 30).is_none());
        assert_eq!(ram_region_sizes(128 << 20), vec![128 << 20]);
        assert_eq!(ram_region_sizes(5 << 30), vec![3 << 30, 2 << 30]);
    }
}
