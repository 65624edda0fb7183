//! The common configuration structure (VIRTIO 1.2 §4.1.4.3): feature negotiation, device
//! status and the per-queue registers, as plain state the transport reads and writes. It
//! knows nothing of PCI or of activation; the transport acts on the status changes it reports.

/// "No MSI-X vector" (§4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xffff;
/// Size of the structure, `queue_reset` included.
pub const COMMON_CFG_BYTES: u64 = 0x3c;

/// What the driver set up for one queue before `DRIVER_OK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRegs {
    pub max_size: u16,
    pub size: u16,
    pub msix_vector: u16,
    pub enabled: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

impl QueueRegs {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            msix_vector: NO_VECTOR,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// A status write the transport must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    None,
    /// The driver wrote 0.
    Reset,
    /// The driver set `DRIVER_OK`.
    DriverOk,
}

/// The register file.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub device_features: u64,
    pub driver_features: u64,
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub config_msix_vector: u16,
    pub status: u8,
    pub config_generation: u8,
    pub queue_select: u16,
    pub queues: Vec<QueueRegs>,
    /// Number of MSI-X table entries; vectors at or past it are refused.
    pub msix_vectors: u16,
}

fn le(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

fn put(data: &mut [u8], value: u64) {
    let b = value.to_le_bytes();
    let n = data.len().min(8);
    data[..n].copy_from_slice(&b[..n]);
}

/// Replaces the 32-bit half of `reg` selected by `high`.
fn set_half(reg: &mut u64, high: bool, value: u32) {
    if high {
        *reg = (*reg & 0xffff_ffff) | u64::from(value) << 32;
    } else {
        *reg = (*reg & !0xffff_ffff) | u64::from(value);
    }
}

impl CommonConfig {
    pub fn new(device_features: u64, queue_max_sizes: &[u16], msix_vectors: u16) -> Self {
        Self {
            device_features,
            driver_features: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            config_msix_vector: NO_VECTOR,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queues: queue_max_sizes.iter().map(|&m| QueueRegs::new(m)).collect(),
            msix_vectors,
        }
    }

    /// Back to the state after device reset (§2.4): features, status and queues cleared.
    pub fn reset(&mut self) {
        let sizes: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        *self = Self {
            config_generation: self.config_generation,
            ..Self::new(self.device_features, &sizes, self.msix_vectors)
        };
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(usize::from(self.queue_select))
    }

    fn vector(&self, v: u16) -> u16 {
        if v < self.msix_vectors {
            v
        } else {
            NO_VECTOR
        }
    }

    /// A read of `data.len()` bytes at `offset`. Accesses must match a field (or, for the
    /// 64-bit queue addresses, one 32-bit half); anything else reads as zero.
    pub fn read(&self, offset: u64, data: &mut [u8], status_extra: u8) {
        let q = self.selected();
        let value = match (offset, data.len()) {
            (0x00, 4) => u64::from(self.device_feature_select),
            (0x04, 4) => match self.device_feature_select {
                0 => self.device_features & 0xffff_ffff,
                1 => self.device_features >> 32,
                _ => 0,
            },
            (0x08, 4) => u64::from(self.driver_feature_select),
            (0x0c, 4) => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            (0x10, 2) => u64::from(self.config_msix_vector),
            (0x12, 2) => self.queues.len() as u64,
            (0x14, 1) => u64::from(self.status | status_extra),
            (0x15, 1) => u64::from(self.config_generation),
            (0x16, 2) => u64::from(self.queue_select),
            (0x18, 2) => q.map_or(0, |q| u64::from(q.size)),
            (0x1a, 2) => q.map_or(u64::from(NO_VECTOR), |q| u64::from(q.msix_vector)),
            (0x1c, 2) => q.map_or(0, |q| u64::from(q.enabled)),
            // queue_notify_off: queue i notifies at i * multiplier.
            (0x1e, 2) => u64::from(self.queue_select),
            (0x20, 4) | (0x20, 8) => q.map_or(0, |q| q.desc),
            (0x24, 4) => q.map_or(0, |q| q.desc >> 32),
            (0x28, 4) | (0x28, 8) => q.map_or(0, |q| q.driver),
            (0x2c, 4) => q.map_or(0, |q| q.driver >> 32),
            (0x30, 4) | (0x30, 8) => q.map_or(0, |q| q.device),
            (0x34, 4) => q.map_or(0, |q| q.device >> 32),
            // queue_notify_data (without VIRTIO_F_NOTIF_CONFIG_DATA: the queue index).
            (0x38, 2) => u64::from(self.queue_select),
            _ => 0,
        };
        put(data, value);
    }

    /// A write; returns the status change the transport must act on. Queue registers are
    /// frozen once the driver is running (`DRIVER_OK`), feature bits once `FEATURES_OK`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> StatusChange {
        let value = le(data);
        let running = self.status & super::super::STATUS_DRIVER_OK != 0;
        let features_fixed = self.status & super::super::STATUS_FEATURES_OK != 0;
        let v32 = value as u32;
        let v16 = value as u16;
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = v32,
            (0x08, 4) => self.driver_feature_select = v32,
            (0x0c, 4) if !features_fixed => match self.driver_feature_select {
                0 => set_half(&mut self.driver_features, false, v32),
                1 => set_half(&mut self.driver_features, true, v32),
                _ => {}
            },
            (0x10, 2) => self.config_msix_vector = self.vector(v16),
            (0x14, 1) => return self.write_status(value as u8),
            (0x16, 2) => self.queue_select = v16,
            (0x18, 2) | (0x1a, 2) | (0x1c, 2) => {
                let vector = self.vector(v16);
                let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) else {
                    return StatusChange::None;
                };
                match offset {
                    0x18 if !running => q.size = v16,
                    0x1a => q.msix_vector = vector,
                    0x1c if !running => q.enabled = v16 == 1,
                    _ => {}
                }
            }
            (0x20 | 0x24 | 0x28 | 0x2c | 0x30 | 0x34, 4) | (0x20 | 0x28 | 0x30, 8) if !running => {
                let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) else {
                    return StatusChange::None;
                };
                let reg = match offset {
                    0x20..=0x27 => &mut q.desc,
                    0x28..=0x2f => &mut q.driver,
                    _ => &mut q.device,
                };
                if data.len() == 8 {
                    *reg = value;
                } else {
                    set_half(reg, offset % 8 == 4, v32);
                }
            }
            _ => {}
        }
        StatusChange::None
    }

    fn write_status(&mut self, new: u8) -> StatusChange {
        use super::super::{F_VERSION_1, STATUS_DRIVER_OK, STATUS_FEATURES_OK};
        if new == 0 {
            return StatusChange::Reset;
        }
        let old = self.status;
        let mut new = new;
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            // §3.1.1: refuse feature sets the device did not offer, and legacy drivers.
            let acceptable = self.driver_features & !self.device_features == 0
                && self.driver_features & F_VERSION_1 != 0;
            if !acceptable {
                new &= !STATUS_FEATURES_OK;
            }
        }
        // DRIVER_OK only counts after FEATURES_OK.
        if new & STATUS_FEATURES_OK == 0 {
            new &= !STATUS_DRIVER_OK;
        }
        self.status = new;
        if new & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            StatusChange::DriverOk
        } else {
            StatusChange::None
        }
    }
}
