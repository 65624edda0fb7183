//! The boot-progress marker port.
//!
//! A guest writes one byte to [`BOOT_MARKER_PORT`] at each milestone (the probe guest: 0x01 on
//! entering its Rust code, 0x02 before its scenario, 0x03 before power-off). The device stamps
//! each write with the time since the VMM process started, so boot-time benchmarks measure the
//! VMM and the guest without parsing console output. The log is shared with the VMM, which
//! reads it while the guest runs; it keeps at most [`MAX_MARKERS`] records because a guest can
//! write forever.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::low_byte;
use crate::bus::BusDevice;

/// The I/O port of the marker device (one port; any access width, the low byte counts).
pub const BOOT_MARKER_PORT: u16 = 0x440;
/// Number of ports the device decodes.
pub const BOOT_MARKER_PORT_LEN: u16 = 1;
/// Records kept per VM; later writes are counted but not stored.
pub const MAX_MARKERS: usize = 256;

/// One guest write to the marker port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootMarker {
    /// The byte the guest wrote.
    pub value: u8,
    /// Time from the VMM's process-start instant to the write.
    pub elapsed: Duration,
}

#[derive(Debug, Default)]
struct Records {
    kept: Vec<BootMarker>,
    dropped: u64,
}

/// The shared, bounded record of marker writes. Cloning shares the same log.
#[derive(Debug, Clone, Default)]
pub struct BootMarkerLog {
    inner: Arc<Mutex<Records>>,
}

impl BootMarkerLog {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        // A holder that panicked cannot have left a Vec push half-done; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, marker: BootMarker) -> bool {
        let mut records = self.lock();
        if records.kept.len() < MAX_MARKERS {
            records.kept.push(marker);
            true
        } else {
            records.dropped = records.dropped.saturating_add(1);
            false
        }
    }

    /// A copy of the records kept so far, in write order.
    pub fn markers(&self) -> Vec<BootMarker> {
        self.lock().kept.clone()
    }

    /// The first record with `value`, if the guest has written it.
    pub fn first(&self, value: u8) -> Option<BootMarker> {
        self.lock().kept.iter().find(|m| m.value == value).copied()
    }

    /// Writes that arrived after the log was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

/// The marker port device; see the module docs.
pub struct BootMarkerPort {
    start: Instant,
    log: BootMarkerLog,
}

impl BootMarkerPort {
    /// `start` is the instant the VMM process started (all markers are relative to it);
    /// `log` is the VMM's handle, a clone of which the device fills.
    pub fn new(start: Instant, log: BootMarkerLog) -> Self {
        Self { start, log }
    }
}

impl BusDevice for BootMarkerPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Write-only port: reads see an undriven bus.
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(value) = low_byte(data) else {
            return;
        };
        let elapsed = self.start.elapsed();
        if self.log.record(BootMarker { value, elapsed }) {
            log::info!(
                "boot marker {value:#04x} at {:.3} ms",
                elapsed.as_secs_f64() * 1e3
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_low_byte_with_increasing_timestamps() {
        let log = BootMarkerLog::new();
        let start = Instant::now();
        let mut port = BootMarkerPort::new(start, log.clone());
        port.write(0, &[0x01]);
        std::thread::sleep(Duration::from_millis(2));
        port.write(0, &[0x02, 0xaa, 0xbb, 0xcc]);
        port.write(0, &[]);
        let markers = log.markers();
        assert_eq!(
            markers.iter().map(|m| m.value).collect::<Vec<_>>(),
            vec![0x01, 0x02]
        );
        assert!(markers[1].elapsed >= markers[0].elapsed + Duration::from_millis(2));
        assert!(markers[1].elapsed <= start.elapsed());
        assert_eq!(log.first(0x02), Some(markers[1]));
        assert_eq!(log.first(0x03), None);
        let mut b = [0u8; 2];
        port.read(0, &mut b);
        assert_eq!(b, [0xff, 0xff]);
    }

    #[test]
    fn keeps_a_bounded_number_of_records() {
        let log = BootMarkerLog::new();
        let mut port = BootMarkerPort::new(Instant::now(), log.clone());
        for i in 0..MAX_MARKERS + 10 {
            port.write(0, &[i as u8]);
        }
        assert_eq!(log.markers().len(), MAX_MARKERS);
        assert_eq!(log.dropped(), 10);
    }
}
