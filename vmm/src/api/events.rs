//! Lifecycle events: a bounded, sequence-numbered ring that `sandbox.events` pages through,
//! and the `--event-monitor` file that gets every event as one JSON line.
//!
//! The ring keeps the newest [`RING_CAPACITY`] events. A reader asks for events after the last
//! sequence number it saw; if older ones were dropped in between, the page says how many, so
//! a slow reader learns it missed something instead of silently skipping it.

use std::collections::VecDeque;
use std::io::Write;

use serde::Serialize;

/// Events kept for readers.
pub const RING_CAPACITY: usize = 256;

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// 1-based, strictly increasing.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// `vmm` or `vm`.
    pub source: &'static str,
    /// `created`, `booting`, `booted`, `shutdown`, `exited`, `deleted`, ...
    pub event: &'static str,
    /// Event-specific details (e.g. an exit reason).
    pub detail: Option<String>,
}

/// A page of events answering `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass this as `since` next time.
    pub next: u64,
    /// Events after `since` that were dropped from the ring before being read.
    pub dropped: u64,
}

/// The ring.
#[derive(Debug, Default)]
pub struct EventRing {
    events: VecDeque<Event>,
    last_seq: u64,
}

impl EventRing {
    /// Stamps `event` with the next sequence number and stores it, dropping the oldest.
    pub fn push(&mut self, mut event: Event) -> u64 {
        self.last_seq += 1;
        event.seq = self.last_seq;
        if self.events.len() == RING_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(event);
        self.last_seq
    }

    /// At most `max` events with `seq > since`, oldest first.
    pub fn since(&self, since: u64, max: usize) -> EventPage {
        let oldest = self.events.front().map_or(self.last_seq + 1, |e| e.seq);
        let dropped = oldest.saturating_sub(since.saturating_add(1));
        let events: Vec<Event> = self
            .events
            .iter()
            .filter(|e| e.seq > since)
            .take(max)
            .cloned()
            .collect();
        let next = events.last().map_or(since.max(oldest - 1), |e| e.seq);
        EventPage {
            events,
            next,
            dropped,
        }
    }

    /// Sequence number of the newest event (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

/// The `--event-monitor` sink: JSON lines, flushed per event; write errors are logged once
/// and then the monitor is switched off so a full disk never stalls the VMM.
pub struct EventMonitor {
    out: Option<Box<dyn Write + Send>>,
}

impl EventMonitor {
    pub fn new(out: Option<Box<dyn Write + Send>>) -> Self {
        Self { out }
    }

    pub fn write(&mut self, event: &Event) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let line = match serde_json::to_string(event) {
            Ok(line) => line,
            Err(e) => {
                log::warn!("cannot encode event: {e}");
                return;
            }
        };
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            log::warn!("event monitor write failed, disabling it: {e}");
            self.out = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &'static str) -> Event {
        Event {
            seq: 0,
            timestamp_ms: 1,
            source: "vm",
            event: name,
            detail: None,
        }
    }

    #[test]
    fn pages_follow_sequence_numbers() {
        let mut ring = EventRing::default();
        for _ in 0..5 {
            ring.push(event("x"));
        }
        let page = ring.since(0, 3);
        assert_eq!(
            page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!((page.next, page.dropped), (3, 0));
        let page = ring.since(page.next, 10);
        assert_eq!(
            page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [4, 5]
        );
        let page = ring.since(5, 10);
        assert!(page.events.is_empty());
        assert_eq!(page.next, 5);
    }

    #[test]
    fn overflow_is_reported() {
        let mut ring = EventRing::default();
        for _ in 0..RING_CAPACITY + 10 {
            ring.push(event("x"));
        }
        let page = ring.since(0, 1);
        assert_eq!(page.dropped, 10);
        assert_eq!(page.events[0].seq, 11);
        assert_eq!(ring.since(11, 1).dropped, 0);
    }

    #[test]
    fn monitor_writes_json_lines() {
        #[derive(Clone, Default)]
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let mut monitor = EventMonitor::new(Some(Box::new(sink.clone())));
        monitor.write(&event("booted"));
        let text = String::from_utf8(sink.0.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
        assert_eq!(value["event"], "booted");
        assert!(text.ends_with('\n'));
    }
}
