//! Reads and writes of guest-physical memory through the boot identity map.
//!
//! Every address the probe follows comes from the VMM (start info, ACPI tables) and is treated as
//! hostile: it is checked against the identity-mapped window before use, and all accesses are
//! volatile byte accesses, so a pointer into MMIO or into the probe's own image reads whatever is
//! there without undefined behaviour from alignment or compiler assumptions.
#![allow(unsafe_code)] // reason: dereferences physical addresses through the identity map.

/// End of the identity-mapped window set up by the startup code (4 GiB).
pub const MAPPED_LIMIT: u64 = 4 << 30;

/// A physical range that fell outside the identity-mapped window.
#[derive(Debug, Clone, Copy)]
pub enum PhysError {
    OutOfRange { addr: u64, len: u64 },
}

impl PhysError {
    pub fn report(&self, out: crate::serial::Out) -> crate::serial::Out {
        match *self {
            PhysError::OutOfRange { addr, len } => out
                .s("physical range ")
                .hex(addr)
                .s("+")
                .hex(len)
                .s(" is outside the mapped 4 GiB"),
        }
    }
}

fn check(addr: u64, len: u64) -> Result<(), PhysError> {
    match addr.checked_add(len) {
        Some(end) if end <= MAPPED_LIMIT => Ok(()),
        _ => Err(PhysError::OutOfRange { addr, len }),
    }
}

/// A checked window `[addr, addr + len)` of physical memory.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub addr: u64,
    pub len: u64,
}

impl Region {
    /// Checks that the whole range is identity-mapped.
    pub fn new(addr: u64, len: u64) -> Result<Self, PhysError> {
        check(addr, len)?;
        Ok(Self { addr, len })
    }

    /// Reads the byte at `offset`, or `None` past the end of the region.
    pub fn u8(&self, offset: u64) -> Option<u8> {
        if offset >= self.len {
            return None;
        }
        // SAFETY: `new` checked that `[addr, addr + len)` lies in the identity map, which stays
        // mapped (present, writable) for the whole run; a volatile byte read has no alignment
        // requirement and does not let the compiler assume anything about the contents.
        Some(unsafe { core::ptr::read_volatile((self.addr + offset) as *const u8) })
    }

    fn le(&self, offset: u64, size: u64) -> Option<u64> {
        let mut value = 0u64;
        for i in (0..size).rev() {
            value = (value << 8) | u64::from(self.u8(offset.checked_add(i)?)?);
        }
        Some(value)
    }

    pub fn u32(&self, offset: u64) -> Option<u32> {
        self.le(offset, 4).map(|v| v as u32)
    }

    pub fn u64(&self, offset: u64) -> Option<u64> {
        self.le(offset, 8)
    }

    /// Copies `buf.len()` bytes from `offset`; false if that runs past the end.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> bool {
        for (i, b) in buf.iter_mut().enumerate() {
            match self.u8(offset + i as u64) {
                Some(v) => *b = v,
                None => return false,
            }
        }
        true
    }

    /// A sub-region, or `None` if it does not fit.
    pub fn sub(&self, offset: u64, len: u64) -> Option<Region> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(Region {
            addr: self.addr + offset,
            len,
        })
    }
}

/// Writes `value` as a `size`-byte (1, 2, 4 or 8) little-endian store at `addr`, as one access
/// of that width: device registers (an ACPI register in system memory space) need the exact width.
pub fn write(addr: u64, size: u64, value: u64) -> Result<(), PhysError> {
    check(addr, size)?;
    if !matches!(size, 1 | 2 | 4 | 8) || !addr.is_multiple_of(size) {
        return Err(PhysError::OutOfRange { addr, len: size });
    }
    // SAFETY: the range is inside the identity map and naturally aligned for its width. The
    // targets are device registers named by the firmware tables, not memory Rust code holds
    // references to.
    unsafe {
        match size {
            1 => core::ptr::write_volatile(addr as *mut u8, value as u8),
            2 => core::ptr::write_volatile(addr as *mut u16, value as u16),
            4 => core::ptr::write_volatile(addr as *mut u32, value as u32),
            _ => core::ptr::write_volatile(addr as *mut u64, value),
        }
    }
    Ok(())
}
