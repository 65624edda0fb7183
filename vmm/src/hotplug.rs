//! Adding and removing PCI devices while the guest runs, on the `vmm` control loop.
//!
//! Adding is immediate: the device is built and put on the bus, its slot's bit goes up in the
//! hot-plug controller and the GED interrupts the guest, whose AML tells the OS to scan the
//! slot. Removing needs the guest's consent: the VMM asks (the slot's bit in `DOWN`, GED
//! interrupt, the OS gets an eject request), the OS lets go of the device and calls `_EJ0`,
//! and only then is the device taken off the bus and its worker and backend released. The
//! requester waits for that, at most [`EJECT_TIMEOUT`]; a guest that answers later still gets
//! its device removed.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devices::legacy::ged::{Ged, EVENT_PCI_HOTPLUG};
use devices::pci::hotplug::HotplugController;

use crate::pci_bus::{DeviceSpec, PciBus};
use crate::pci_devices::{PciSetupError, PlacedDevice};

/// How long a removal waits for the guest to release the device.
pub const EJECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors adding or removing a device at run time.
#[derive(Debug, thiserror::Error)]
pub enum HotplugError {
    #[error(transparent)]
    Setup(#[from] PciSetupError),
    #[error("no device with id {0:?}")]
    NotFound(String),
    #[error("the guest did not release {id} within {} s (the request stands)", .waited.as_secs())]
    EjectTimeout { id: String, waited: Duration },
    #[error("the VM stopped before the device was removed")]
    NotRunning,
    #[error("cannot raise the hot-plug interrupt: {0}")]
    Interrupt(std::io::Error),
}

/// A request reaching the control loop.
#[derive(Debug)]
pub enum HotplugRequest {
    Add {
        spec: DeviceSpec,
        reply: Sender<Result<PlacedDevice, HotplugError>>,
    },
    Remove {
        id: String,
        reply: Sender<Result<(), HotplugError>>,
    },
    /// The guest released these slots (bit N = slot N).
    Ejected(u32),
}

struct PendingRemoval {
    slot: u8,
    id: String,
    /// `None` once the requester was told about the timeout.
    reply: Option<Sender<Result<(), HotplugError>>>,
    deadline: Instant,
}

/// The control loop's hot-plug state.
pub struct Hotplug {
    controller: Arc<HotplugController>,
    ged: Arc<Ged>,
    pending: Vec<PendingRemoval>,
}

impl Hotplug {
    pub fn new(controller: Arc<HotplugController>, ged: Arc<Ged>) -> Self {
        Self {
            controller,
            ged,
            pending: Vec::new(),
        }
    }

    /// Serves one request.
    pub fn handle(&mut self, bus: &mut PciBus, request: HotplugRequest) {
        match request {
            HotplugRequest::Add { spec, reply } => {
                let _ = reply.send(self.add(bus, &spec));
            }
            HotplugRequest::Remove { id, reply } => match self.request_removal(bus, &id) {
                Ok(slot) => self.pending.push(PendingRemoval {
                    slot,
                    id,
                    reply: Some(reply),
                    deadline: Instant::now() + EJECT_TIMEOUT,
                }),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            HotplugRequest::Ejected(slots) => self.ejected(bus, slots),
        }
    }

    fn add(&self, bus: &mut PciBus, spec: &DeviceSpec) -> Result<PlacedDevice, HotplugError> {
        let placed = bus.add(spec)?;
        self.controller.plugged(placed.slot);
        self.ged
            .raise(EVENT_PCI_HOTPLUG)
            .map_err(HotplugError::Interrupt)?;
        Ok(placed)
    }

    fn request_removal(&self, bus: &PciBus, id: &str) -> Result<u8, HotplugError> {
        let slot = bus
            .slot_of(id)
            .ok_or_else(|| HotplugError::NotFound(id.to_owned()))?;
        log::info!("asking the guest to release {id} (0000:00:{slot:02x}.0)");
        self.controller.request_eject(slot);
        self.ged
            .raise(EVENT_PCI_HOTPLUG)
            .map_err(HotplugError::Interrupt)?;
        Ok(slot)
    }

    fn ejected(&mut self, bus: &mut PciBus, slots: u32) {
        let released = |slot: u8| slots & 1u32.checked_shl(u32::from(slot)).unwrap_or(0) != 0;
        let (done, waiting): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|p| released(p.slot));
        self.pending = waiting;
        for p in done {
            if bus.slot_of(&p.id) == Some(p.slot) {
                bus.remove(p.slot);
                self.controller.unplugged(p.slot);
            }
            if let Some(reply) = p.reply {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// When the control loop must wake up next to time out a removal.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .iter()
            .filter(|p| p.reply.is_some())
            .map(|p| p.deadline)
            .min()
    }

    /// Tells requesters whose wait ran out; their removals stay requested.
    pub fn expire(&mut self, now: Instant) {
        for p in self.pending.iter_mut().filter(|p| p.deadline <= now) {
            if let Some(reply) = p.reply.take() {
                log::warn!("the guest has not released {} yet", p.id);
                let _ = reply.send(Err(HotplugError::EjectTimeout {
                    id: p.id.clone(),
                    waited: EJECT_TIMEOUT,
                }));
            }
        }
    }
}
