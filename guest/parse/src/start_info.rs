//! The PVH start info (`struct hvm_start_info`, Xen `arch-x86/hvm/start_info.h`): where the VMM
//! put the command line, the memory map and the ACPI RSDP.

use crate::phys::{Memory, PhysError, Region};
use crate::report::Sink;

/// `hvm_start_info.magic`: "xEn3" with the high bit of the first byte set.
pub const MAGIC: u32 = 0x336e_c578;
/// Size of the structure up to and including `memmap_entries` (version 1).
const SIZE_V1: u64 = 56;
const SIZE_V0: u64 = 48;
/// Size of one `hvm_memmap_table_entry`.
const MEMMAP_ENTRY_SIZE: u64 = 24;
/// More entries than any sane VMM writes; bounds the work on a hostile count.
const MAX_MEMMAP_ENTRIES: u32 = 1024;
/// E820 type of usable RAM.
pub const MEMMAP_RAM: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInfoError {
    NullPointer,
    Unmapped(PhysError),
    BadMagic(u32),
    MemmapTooLong(u32),
    MemmapUnmapped(PhysError),
}

impl StartInfoError {
    pub fn report<S: Sink>(&self, out: S) -> S {
        let out = out.s("start info: ");
        match *self {
            StartInfoError::NullPointer => out.s("EBX holds a null pointer"),
            StartInfoError::Unmapped(e) => e.report(out),
            StartInfoError::BadMagic(m) => out.s("bad magic ").hex(u64::from(m)),
            StartInfoError::MemmapTooLong(n) => {
                out.s("memory map has ").dec(u64::from(n)).s(" entries")
            }
            StartInfoError::MemmapUnmapped(e) => e.report(out.s("memory map: ")),
        }
    }
}

/// The validated fields of the start info.
#[derive(Clone, Copy)]
pub struct StartInfo<'m> {
    /// Where the structure itself is.
    pub paddr: u64,
    pub version: u32,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    /// The memory map, if the structure is version 1 or later and has one.
    pub memmap: Option<Region<'m>>,
}

/// One memory-map entry.
#[derive(Debug, Clone, Copy)]
pub struct MemEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

impl<'m> StartInfo<'m> {
    /// Reads and validates the start info at `paddr` (the value of EBX at entry).
    pub fn read(mem: &'m dyn Memory, paddr: u64) -> Result<Self, StartInfoError> {
        if paddr == 0 {
            return Err(StartInfoError::NullPointer);
        }
        let head = Region::new(mem, paddr, SIZE_V0).map_err(StartInfoError::Unmapped)?;
        let field = |offset| head.u32(offset).unwrap_or(0);
        let field64 = |offset| head.u64(offset).unwrap_or(0);
        let magic = field(0);
        if magic != MAGIC {
            return Err(StartInfoError::BadMagic(magic));
        }
        let version = field(4);
        let mut info = StartInfo {
            paddr,
            version,
            cmdline_paddr: field64(24),
            rsdp_paddr: field64(32),
            memmap: None,
        };
        if version >= 1 {
            let full = Region::new(mem, paddr, SIZE_V1).map_err(StartInfoError::Unmapped)?;
            let memmap_paddr = full.u64(40).unwrap_or(0);
            let entries = full.u32(48).unwrap_or(0);
            if entries > MAX_MEMMAP_ENTRIES {
                return Err(StartInfoError::MemmapTooLong(entries));
            }
            if memmap_paddr != 0 && entries != 0 {
                let region = Region::new(mem, memmap_paddr, u64::from(entries) * MEMMAP_ENTRY_SIZE)
                    .map_err(StartInfoError::MemmapUnmapped)?;
                info.memmap = Some(region);
            }
        }
        Ok(info)
    }

    /// The memory-map entries (none if the VMM gave no map).
    pub fn memmap(&self) -> impl Iterator<Item = MemEntry> + 'm {
        let region = self.memmap;
        let count = region.map_or(0, |r| r.len / MEMMAP_ENTRY_SIZE);
        (0..count).filter_map(move |i| {
            let r = region?;
            let base = i * MEMMAP_ENTRY_SIZE;
            Some(MemEntry {
                addr: r.u64(base)?,
                size: r.u64(base + 8)?,
                kind: r.u32(base + 16)?,
            })
        })
    }
}
