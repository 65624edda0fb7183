//! Guest-physical memory through the boot identity map: the [`Memory`] the parsers read in the
//! guest, and register-width writes for device registers found in firmware tables.
//!
//! Reads are volatile byte reads, so a pointer into MMIO or into the probe's own image reads
//! whatever is there without alignment faults or compiler assumptions about the contents.
#![allow(unsafe_code)] // reason: dereferences physical addresses through the identity map.

use probe_parse::phys::{Memory, PhysError, Region};

/// End of the identity-mapped window set up by the startup code.
pub const MAPPED_LIMIT: u64 = crate::start::IDENTITY_MAP_GIB << 30;

/// The identity-mapped window `[0, MAPPED_LIMIT)`.
pub struct Identity;

/// The one instance; parsers borrow it for `'static`.
pub static MEMORY: Identity = Identity;

fn check(addr: u64, len: u64) -> Result<(), PhysError> {
    match addr.checked_add(len) {
        Some(end) if end <= MAPPED_LIMIT => Ok(()),
        _ => Err(PhysError::OutOfRange { addr, len }),
    }
}

impl Memory for Identity {
    fn check(&self, addr: u64, len: u64) -> Result<(), PhysError> {
        check(addr, len)
    }

    fn byte(&self, addr: u64) -> u8 {
        if addr >= MAPPED_LIMIT {
            return 0xff;
        }
        // SAFETY: the address is below MAPPED_LIMIT, which the startup code identity-mapped (present,
        // writable) for the whole run; a volatile byte read has no alignment requirement.
        unsafe { core::ptr::read_volatile(addr as *const u8) }
    }
}

/// A checked region of identity-mapped memory.
pub fn region(addr: u64, len: u64) -> Result<Region<'static>, PhysError> {
    Region::new(&MEMORY, addr, len)
}

/// Reads a `size`-byte (1, 2, 4 or 8) value at `addr` as one naturally aligned access, as
/// device registers (PCI configuration space through ECAM) and memory tests need.
pub fn read(addr: u64, size: u64) -> Result<u64, PhysError> {
    check(addr, size)?;
    if !matches!(size, 1 | 2 | 4 | 8) || !addr.is_multiple_of(size) {
        return Err(PhysError::OutOfRange { addr, len: size });
    }
    // SAFETY: the range is inside the identity map and naturally aligned for its width; a
    // volatile read of a device register has no effect on memory Rust code uses.
    let value = unsafe {
        match size {
            1 => u64::from(core::ptr::read_volatile(addr as *const u8)),
            2 => u64::from(core::ptr::read_volatile(addr as *const u16)),
            4 => u64::from(core::ptr::read_volatile(addr as *const u32)),
            _ => core::ptr::read_volatile(addr as *const u64),
        }
    };
    Ok(value)
}

/// Writes `value` as a `size`-byte (1, 2, 4 or 8) little-endian store at `addr`, as one access
/// of that width: device registers (an ACPI register in system memory space, the local APIC)
/// need the exact width.
pub fn write(addr: u64, size: u64, value: u64) -> Result<(), PhysError> {
    check(addr, size)?;
    if !matches!(size, 1 | 2 | 4 | 8) || !addr.is_multiple_of(size) {
        return Err(PhysError::OutOfRange { addr, len: size });
    }
    // SAFETY: the range is inside the identity map and naturally aligned for its width. The
    // targets are device registers or memory the probe reserved for the purpose (the AP
    // trampoline page), not memory Rust code holds references to.
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
