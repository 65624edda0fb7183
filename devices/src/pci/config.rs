//! The type-0 configuration header every PCI function on the root bus presents (PCI Local Bus
//! 3.0 §6.1), with BAR sizing and a capability list.
//!
//! The guest sees 256 bytes of configuration space (4 KiB through ECAM, the rest reading as
//! zero). What it may change is decided by a per-byte write mask, so device code never has to
//! police individual register writes: identification, class and capability pointers are
//! read-only by construction, BARs keep their size bits, and only the command-register bits a
//! VMM-emulated function honours are writable.

/// Size of the configuration space served per function (conventional PCI).
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Offset of the first BAR register.
pub const BAR0_OFFSET: usize = 0x10;
/// Number of BAR registers in a type-0 header.
pub const NUM_BARS: usize = 6;
/// The command register and its bits the emulated functions honour.
pub const COMMAND_OFFSET: usize = 0x04;
pub const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status register bit announcing a capability list.
const STATUS_CAP_LIST: u16 = 1 << 4;
const STATUS_OFFSET: usize = 0x06;
const CAP_POINTER_OFFSET: usize = 0x34;
/// Capabilities live after the standard header.
const FIRST_CAP_OFFSET: usize = 0x40;

/// Errors building a configuration header (host side; never caused by a guest).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("BAR {0} does not exist or is already used")]
    BadBar(usize),
    #[error("BAR size {0:#x} is not a power of two of at least 4 KiB that fits in 32 bits")]
    BadBarSize(u64),
    #[error("capability of {0} bytes does not fit in the configuration space")]
    NoRoomForCapability(usize),
}

/// Identity of a function: what `lspci -n` shows.
#[derive(Debug, Clone, Copy)]
pub struct PciIdentity {
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision: u8,
    /// Base class, sub-class and programming interface, high byte first (e.g. 0x060000).
    pub class_code: u32,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
}

/// A 32-bit, non-prefetchable memory BAR: its size and the address the guest programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBar {
    pub index: usize,
    pub size: u64,
}

/// The configuration header of one function.
#[derive(Clone)]
pub struct PciConfig {
    data: [u8; CONFIG_SPACE_SIZE],
    wmask: [u8; CONFIG_SPACE_SIZE],
    bars: [Option<u64>; NUM_BARS],
    /// Offset of the last capability added (its "next" byte is patched by the next one).
    last_cap: Option<usize>,
    next_cap: usize,
}

impl PciConfig {
    /// A type-0 header with `identity`, no BARs, no capabilities.
    pub fn new(identity: &PciIdentity) -> Self {
        let mut cfg = Self {
            data: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
            bars: [None; NUM_BARS],
            last_cap: None,
            next_cap: FIRST_CAP_OFFSET,
        };
        cfg.set_u16(0x00, identity.vendor_id);
        cfg.set_u16(0x02, identity.device_id);
        cfg.data[0x08] = identity.revision;
        cfg.data[0x09] = identity.class_code as u8;
        cfg.data[0x0a] = (identity.class_code >> 8) as u8;
        cfg.data[0x0b] = (identity.class_code >> 16) as u8;
        cfg.set_u16(0x2c, identity.subsystem_vendor_id);
        cfg.set_u16(0x2e, identity.subsystem_id);
        let command_mask = COMMAND_MEMORY_SPACE | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
        cfg.wmask[COMMAND_OFFSET..COMMAND_OFFSET + 2].copy_from_slice(&command_mask.to_le_bytes());
        // Interrupt line: scratch byte the guest's firmware or OS may use.
        cfg.wmask[0x3c] = 0xff;
        cfg
    }

    /// Declares BAR `index` as a 32-bit memory BAR of `size` bytes placed at `addr`.
    pub fn add_memory_bar(
        &mut self,
        index: usize,
        size: u64,
        addr: u32,
    ) -> Result<(), ConfigError> {
        if index >= NUM_BARS || self.bars[index].is_some() {
            return Err(ConfigError::BadBar(index));
        }
        if !size.is_power_of_two() || !(0x1000..=1 << 31).contains(&size) {
            return Err(ConfigError::BadBarSize(size));
        }
        self.bars[index] = Some(size);
        let reg = BAR0_OFFSET + index * 4;
        // Low four bits (memory, 32-bit, non-prefetchable) read as zero; the size bits too.
        let mask = !(size as u32 - 1);
        self.wmask[reg..reg + 4].copy_from_slice(&mask.to_le_bytes());
        self.set_u32(reg, addr & mask);
        Ok(())
    }

    /// The BARs this function has, with the address each one decodes now.
    pub fn memory_bars(&self) -> impl Iterator<Item = (MemoryBar, u64)> + '_ {
        self.bars.iter().enumerate().filter_map(|(index, size)| {
            let size = (*size)?;
            let addr = u64::from(self.u32_at(BAR0_OFFSET + index * 4) & !0xf);
            Some((MemoryBar { index, size }, addr))
        })
    }

    /// Appends a capability: `body` starts with the capability ID byte, then a placeholder
    /// "next" byte; `wmask` (same length, or empty for read-only) says what the guest may
    /// write. Returns the capability's offset.
    pub fn add_capability(&mut self, body: &[u8], wmask: &[u8]) -> Result<usize, ConfigError> {
        let offset = self.next_cap;
        let end = offset
            .checked_add(body.len())
            .filter(|&end| body.len() >= 2 && end <= CONFIG_SPACE_SIZE)
            .ok_or(ConfigError::NoRoomForCapability(body.len()))?;
        self.data[offset..end].copy_from_slice(body);
        self.data[offset + 1] = 0;
        if wmask.len() == body.len() {
            self.wmask[offset..end].copy_from_slice(wmask);
        }
        match self.last_cap {
            Some(prev) => self.data[prev + 1] = offset as u8,
            None => {
                self.data[CAP_POINTER_OFFSET] = offset as u8;
                let status = self.u16_at(STATUS_OFFSET) | STATUS_CAP_LIST;
                self.set_u16(STATUS_OFFSET, status);
            }
        }
        self.last_cap = Some(offset);
        self.next_cap = (end + 3) & !3;
        Ok(offset)
    }

    /// Reads `data.len()` bytes at `offset`; bytes past the header read as zero.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.data.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Applies a guest write through the write mask; bytes past the header are ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            let Some(o) = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .filter(|&o| o < CONFIG_SPACE_SIZE)
            else {
                continue;
            };
            let mask = self.wmask[o];
            self.data[o] = (self.data[o] & !mask) | (byte & mask);
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND_OFFSET)
    }

    pub fn u16_at(&self, offset: usize) -> u16 {
        match self.data.get(offset..offset + 2) {
            Some(b) => u16::from_le_bytes([b[0], b[1]]),
            None => 0,
        }
    }

    pub fn u32_at(&self, offset: usize) -> u32 {
        match self.data.get(offset..offset + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        }
    }

    /// Device-side update of a register (ignores the guest write mask).
    pub fn set_u16(&mut self, offset: usize, value: u16) {
        if let Some(b) = self.data.get_mut(offset..offset + 2) {
            b.copy_from_slice(&value.to_le_bytes());
        }
    }

    /// Device-side update of a register (ignores the guest write mask).
    pub fn set_u32(&mut self, offset: usize, value: u32) {
        if let Some(b) = self.data.get_mut(offset..offset + 4) {
            b.copy_from_slice(&value.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> PciIdentity {
        PciIdentity {
            vendor_id: 0x1af4,
            device_id: 0x1042,
            revision: 1,
            class_code: 0x018000,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x40,
        }
    }

    fn read32(cfg: &PciConfig, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        cfg.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn header_identity_is_read_only() {
        let mut cfg = PciConfig::new(&identity());
        assert_eq!(read32(&cfg, 0), 0x1042_1af4);
        assert_eq!(read32(&cfg, 8), 0x0180_0001);
        cfg.write(0, &[0xff; 4]);
        cfg.write(8, &[0xff; 4]);
        assert_eq!(read32(&cfg, 0), 0x1042_1af4);
        assert_eq!(read32(&cfg, 8), 0x0180_0001);
        cfg.write(4, &0xffffu16.to_le_bytes());
        assert_eq!(
            cfg.command(),
            COMMAND_MEMORY_SPACE | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE
        );
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut cfg = PciConfig::new(&identity());
        cfg.add_memory_bar(0, 0x8000, 0xc000_0000).unwrap();
        assert_eq!(read32(&cfg, 0x10), 0xc000_0000);
        cfg.write(0x10, &[0xff; 4]);
        assert_eq!(read32(&cfg, 0x10), 0xffff_8000);
        cfg.write(0x10, &0xc123_4567u32.to_le_bytes());
        assert_eq!(read32(&cfg, 0x10), 0xc123_0000);
        let bars: Vec<_> = cfg.memory_bars().collect();
        assert_eq!(
            bars,
            vec![(
                MemoryBar {
                    index: 0,
                    size: 0x8000
                },
                0xc123_0000
            )]
        );
        // Absent BARs read zero and ignore writes.
        cfg.write(0x14, &[0xff; 4]);
        assert_eq!(read32(&cfg, 0x14), 0);
        assert_eq!(
            cfg.add_memory_bar(0, 0x1000, 0),
            Err(ConfigError::BadBar(0))
        );
        assert_eq!(
            cfg.add_memory_bar(1, 0x1800, 0),
            Err(ConfigError::BadBarSize(0x1800))
        );
    }

    #[test]
    fn capabilities_form_a_list() {
        let mut cfg = PciConfig::new(&identity());
        let a = cfg.add_capability(&[0x09, 0xaa, 3], &[]).unwrap();
        let b = cfg
            .add_capability(&[0x11, 0, 0, 0], &[0, 0, 0, 0xc0])
            .unwrap();
        assert_eq!((a, b), (0x40, 0x44));
        let mut status = [0u8; 2];
        cfg.read(6, &mut status);
        assert_ne!(u16::from_le_bytes(status) & STATUS_CAP_LIST, 0);
        let mut p = [0u8; 1];
        cfg.read(0x34, &mut p);
        assert_eq!(p[0], 0x40);
        cfg.read(0x41, &mut p);
        assert_eq!(p[0], 0x44);
        cfg.read(0x45, &mut p);
        assert_eq!(p[0], 0);
        cfg.write(0x44, &[0xff; 4]);
        assert_eq!(read32(&cfg, 0x44), 0xc000_0011);
        assert!(cfg.add_capability(&[0; 250], &[]).is_err());
    }

    #[test]
    fn any_offset_and_width_is_harmless() {
        let mut cfg = PciConfig::new(&identity());
        for offset in [0u64, 0xfd, 0xff, 0x100, 0xfff, u64::MAX - 1, u64::MAX] {
            let mut b = [0u8; 8];
            cfg.read(offset, &mut b);
            cfg.write(offset, &[0xff; 8]);
        }
        assert_eq!(read32(&cfg, 0), 0x1042_1af4);
    }
}
