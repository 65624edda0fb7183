//! PCI: the configuration header of a function, the root bus with its configuration doors
//! (0xcf8/0xcfc and ECAM) and the MMIO window BARs decode in, and the allocator that places
//! BARs in that window.
//!
//! Sits between the vCPU exits and the PCI functions (today the virtio-pci transport): the VMM
//! puts [`root::PciConfigIo`] on its port bus and [`root::PciConfigMmio`] and
//! [`root::PciMmioWindow`] on its MMIO bus, and describes the same ranges to the guest in the
//! ACPI MCFG table and the host bridge's `_CRS`. References: PCI Local Bus 3.0 §3.2.2.3.2
//! (mechanism #1), §6.1–6.2 (header, BARs); PCI Express Base 4.0 §7.2.2 (ECAM).

pub mod config;
pub mod hotplug;
pub mod msix;
pub mod root;

/// Errors allocating BAR space (host side: the VM asked for more than its window holds).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("BAR of {size:#x} bytes does not fit in the MMIO window (next free {next:#x}, end {end:#x})")]
    Exhausted { size: u64, next: u64, end: u64 },
    #[error("BAR size {0:#x} is not a power of two")]
    BadSize(u64),
}

/// Hands out naturally aligned, non-overlapping BAR ranges from `[start, end)` in request
/// order, so the same configuration always yields the same addresses.
#[derive(Debug, Clone)]
pub struct BarAllocator {
    next: u64,
    end: u64,
}

impl BarAllocator {
    pub fn new(start: u64, end: u64) -> Self {
        Self { next: start, end }
    }

    /// A `size`-byte range aligned to `size` (BARs decode on natural alignment).
    pub fn allocate(&mut self, size: u64) -> Result<u64, AllocError> {
        if !size.is_power_of_two() {
            return Err(AllocError::BadSize(size));
        }
        let exhausted = AllocError::Exhausted {
            size,
            next: self.next,
            end: self.end,
        };
        let start = self
            .next
            .checked_add(size - 1)
            .map(|v| v & !(size - 1))
            .ok_or(exhausted.clone())?;
        let end = start.checked_add(size).ok_or(exhausted.clone())?;
        if end > self.end {
            return Err(exhausted);
        }
        self.next = end;
        Ok(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_aligned_in_order_until_full() {
        let mut a = BarAllocator::new(0xc000_1000, 0xc002_0000);
        assert_eq!(a.allocate(0x1000), Ok(0xc000_1000));
        assert_eq!(a.allocate(0x8000), Ok(0xc000_8000));
        assert_eq!(a.allocate(0x1000), Ok(0xc001_0000));
        assert_eq!(a.allocate(0x3000), Err(AllocError::BadSize(0x3000)));
        assert!(matches!(
            a.allocate(0x10000),
            Err(AllocError::Exhausted { .. })
        ));
        assert_eq!(a.allocate(0x8000), Ok(0xc001_8000));
        assert!(a.allocate(0x1000).is_err());
        let mut top = BarAllocator::new(u64::MAX - 0xfff, u64::MAX);
        assert!(top.allocate(0x2000).is_err());
    }
}
