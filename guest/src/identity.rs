//! Guest-physical memory through the boot identity map: the [`Memory`] the parsers read in the
//! guest, and register-width writes for device registers found in firmware tables.
//!
//! Reads are volatile byte reads, so a pointer into MMIO or into the probe's own image reads
//! whatever is there without alignment faults or compiler assumptions about the contents.
#![allow(unsafe_code)] // reason: dereferences physical addresses through the identity map.

use core::sync::atomic::{AtomicU64, Ordering};
use probe_parse::phys::{Memory, PhysError, Region};

/// The most the identity map can cover (page directories are reserved up to here).
pub const MAPPED_LIMIT: u64 = crate::start::IDENTITY_MAP_GIB << 30;
const GIB: u64 = 1 << 30;

/// End of the identity map as it is now: what the startup code mapped, then grown by
/// [`map_ram`].
static MAPPED_END: AtomicU64 = AtomicU64::new(crate::start::BOOT_MAP_GIB << 30);

extern "C" {
    static mut probe_pdpt: [u64; 512];
    static mut probe_pd: [u64; 512 * crate::start::IDENTITY_MAP_GIB as usize];
}

/// Current end of the identity map.
pub fn mapped_end() -> u64 {
    MAPPED_END.load(Ordering::SeqCst)
}

/// Extends the identity map to cover `[0, end)` (rounded up to whole GiB, at most
/// [`MAPPED_LIMIT`]) with 2 MiB pages; returns the new end. Called on the boot CPU before any AP
/// runs, so no other CPU walks the tables while they change.
pub fn map_ram(end: u64) -> u64 {
    let current = mapped_end();
    let target = end.min(MAPPED_LIMIT).div_ceil(GIB) * GIB;
    if target <= current {
        return current;
    }
    for gib in (current / GIB)..(target / GIB) {
        let g = gib as usize;
        // SAFETY: the page tables are statics of the startup code, identity-mapped; `g` is below
        // IDENTITY_MAP_GIB so every index is in bounds; the entries written are not present yet,
        // so no translation in use changes, and only this CPU runs.
        unsafe {
            let pd = core::ptr::addr_of_mut!(probe_pd) as *mut u64;
            for i in 0..512usize {
                let addr = (gib << 30) | ((i as u64) << 21);
                pd.add(g * 512 + i).write_volatile(addr | 0x83);
            }
            let pdpt = core::ptr::addr_of_mut!(probe_pdpt) as *mut u64;
            pdpt.add(g).write_volatile(pd.add(g * 512) as u64 | 0x3);
        }
    }
    // SAFETY: reloading CR3 with its own value only flushes non-global TLB entries.
    unsafe {
        core::arch::asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags))
    };
    MAPPED_END.store(target, Ordering::SeqCst);
    target
}

/// The identity-mapped window `[0, mapped_end())`.
pub struct Identity;

/// The one instance; parsers borrow it for `'static`.
pub static MEMORY: Identity = Identity;

fn check(addr: u64, len: u64) -> Result<(), PhysError> {
    match addr.checked_add(len) {
        Some(end) if end <= mapped_end() => Ok(()),
        _ => Err(PhysError::OutOfRange { addr, len }),
    }
}

impl Memory for Identity {
    fn check(&self, addr: u64, len: u64) -> Result<(), PhysError> {
        check(addr, len)
    }

    fn byte(&self, addr: u64) -> u8 {
        if addr >= mapped_end() {
            return 0xff;
        }
        // SAFETY: the address is below the end of the identity map, which stays mapped (present,
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
