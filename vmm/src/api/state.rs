//! The state snapshot every read is answered from.
//!
//! Only the `vmm` thread writes: it builds a new [`Snapshot`] and swaps it in. Readers clone
//! an `Arc` under a lock held for a pointer copy, so a read never waits for a boot, a device
//! add or any other command. Listeners (the API thread's long-polls) are told after each
//! change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use super::config::ApiVmConfig;
use super::events::{Event, EventRing};
use super::sandbox::SandboxRecord;

/// The VM lifecycle states, spelled as Cloud Hypervisor's `vm.info` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VmState {
    Created,
    Running,
    Paused,
    Shutdown,
}

/// How a VM run ended, with the stable reason names of the sandbox API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// `poweroff`, `reboot`, `api_stop`, `triple_fault`, `internal_error` or `boot_error`.
    pub reason: &'static str,
    /// What happened, in words.
    pub detail: String,
    /// The process exit status this ending maps to (see `exit`).
    pub exit_status: u8,
    /// Milliseconds since the Unix epoch.
    pub exited_at_ms: u64,
}

impl ExitInfo {
    pub fn from_reason(reason: &crate::exit::ExitReason) -> Self {
        use crate::exit::ExitReason as R;
        let name = match reason {
            R::PowerOff => "poweroff",
            R::Reboot => "reboot",
            R::HostStop => "api_stop",
            R::TripleFault { .. } => "triple_fault",
            R::GuestPanic { .. } => "panic",
            R::GuestTerminated { .. } => "guest_terminated",
            R::InternalError(_) => "internal_error",
        };
        Self {
            reason: name,
            detail: reason.to_string(),
            exit_status: reason.exit_code(),
            exited_at_ms: unix_ms(),
        }
    }

    pub fn boot_error(detail: String, exit_status: u8) -> Self {
        Self {
            reason: "boot_error",
            detail,
            exit_status,
            exited_at_ms: unix_ms(),
        }
    }
}

/// Boot timing of the current (or last) VM, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BootTimes {
    /// Unix time the boot command started.
    pub started_at_ms: u64,
    /// From the boot command to the vCPUs running.
    pub boot_ms: u64,
    /// From the boot command to the agent accepting connections, once known.
    pub ready_ms: Option<u64>,
}

/// Everything a read may return, at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `None` until `vm.create` (and after `vm.delete`).
    pub state: Option<VmState>,
    /// The live configuration, echoed by `vm.info`.
    pub config: Option<Arc<ApiVmConfig>>,
    /// How the last run ended.
    pub exit: Option<ExitInfo>,
    pub boot: Option<BootTimes>,
    /// The live boot timeline of the current (or last) VM: first instruction, guest boot
    /// markers, exit. Written lock-free by the vCPU and marker device, read by the API.
    pub clock: Option<Arc<crate::clock::BootClock>>,
    /// The booted VM's PCI devices; a vhost-user device's failure flag is live.
    pub devices: Option<Arc<crate::pci_bus::DeviceList>>,
    /// For a confidential VM: what its attestation report must carry.
    pub attestation: Option<Arc<super::confidential::ExpectedAttestation>>,
    pub sandbox: Option<Arc<SandboxRecord>>,
    /// Named counter groups (`vm.counters`).
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// Bumped on every publish; long-polls compare it.
    pub generation: u64,
}

type Listener = Box<dyn Fn() + Send + Sync>;

/// The published snapshot, the event ring and the change listeners.
#[derive(Default)]
pub struct SharedState {
    current: Mutex<Arc<Snapshot>>,
    events: Mutex<EventRing>,
    listeners: Mutex<Vec<Listener>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a thread died while holding it; the data is still a whole
    // snapshot (writers swap complete values), so keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        lock(&self.current).clone()
    }

    /// Applies `change` to a copy of the current snapshot and publishes it (vmm thread only).
    pub fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        let mut next = (*self.snapshot()).clone();
        change(&mut next);
        next.generation = next.generation.wrapping_add(1);
        *lock(&self.current) = Arc::new(next);
        self.notify();
    }

    /// Appends an event to the ring, wakes long-polls and returns its sequence number.
    pub fn push_event(&self, event: Event) -> u64 {
        let seq = lock(&self.events).push(event);
        self.notify();
        seq
    }

    /// Events after sequence number `since` (see [`EventRing::since`]).
    pub fn events_since(&self, since: u64, max: usize) -> super::events::EventPage {
        lock(&self.events).since(since, max)
    }

    /// Calls `listener` after every change from now on.
    pub fn subscribe(&self, listener: Listener) {
        lock(&self.listeners).push(listener);
    }

    fn notify(&self) {
        for listener in lock(&self.listeners).iter() {
            listener();
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn update_publishes_a_new_generation_and_notifies() {
        let shared = SharedState::new();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        shared.subscribe(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let before = shared.snapshot();
        shared.update(|s| s.state = Some(VmState::Created));
        let after = shared.snapshot();
        assert_eq!(before.state, None);
        assert_eq!(after.state, Some(VmState::Created));
        assert_eq!(after.generation, before.generation + 1);
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn exit_reasons_have_stable_names() {
        use crate::exit::ExitReason as R;
        let names: Vec<_> = [
            R::PowerOff,
            R::Reboot,
            R::HostStop,
            R::TripleFault { vcpu: 1 },
            R::InternalError("x".into()),
        ]
        .iter()
        .map(|r| ExitInfo::from_reason(r).reason)
        .collect();
        assert_eq!(
            names,
            [
                "poweroff",
                "reboot",
                "api_stop",
                "triple_fault",
                "internal_error"
            ]
        );
    }
}
