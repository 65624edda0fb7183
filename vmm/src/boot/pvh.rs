//! PVH direct boot (xen docs/misc/pvh.pandoc; structures from
//! xen/include/public/arch-x86/hvm/start_info.h).
//!
//! The kernel's `XEN_ELFNOTE_PHYS32_ENTRY` is entered in flat 32-bit protected mode with EBX
//! pointing at `hvm_start_info` (version 1, so it carries the memory map). The initramfs is
//! module 0; the command line and RSDP are passed by physical address.

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::KernelLoaderResult;
use vm_memory::GuestMemoryMmap;

use super::{load_initramfs, write_cmdline, write_obj, BootError, BootSource};
use crate::cpu::EntryMode;
use crate::layout;
use crate::memory::e820_map;

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Version 1 adds `memmap_paddr` / `memmap_entries`.
const START_INFO_VERSION: u32 = 1;

/// Loads command line and initramfs for a PVH kernel already in memory and writes the start
/// info block. `entry` is the 32-bit entry point from the ELF note.
pub fn setup(
    mem: &GuestMemoryMmap,
    src: &BootSource<'_>,
    loaded: &KernelLoaderResult,
    entry: u64,
) -> Result<EntryMode, BootError> {
    let ram_end = layout::low_ram_end(src.mem_size);
    if loaded.kernel_end > ram_end {
        return Err(BootError::KernelTooLarge {
            needed: loaded.kernel_end,
            ram_end,
        });
    }
    write_cmdline(mem, src.cmdline, layout::CMDLINE_MAX_SIZE - 1)?;
    let module = match src.initramfs {
        Some(path) => {
            let placed = load_initramfs(mem, path, loaded.kernel_end, ram_end, src.mem_size)?;
            Some(hvm_modlist_entry {
                paddr: placed.addr,
                size: placed.size,
                ..Default::default()
            })
        }
        None => None,
    };

    let memmap = memmap_entries(src.mem_size)?;
    for (i, entry) in memmap.iter().enumerate() {
        let addr =
            layout::PVH_MEMMAP_START + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        write_obj(mem, "PVH memory map", addr, *entry)?;
    }
    if let Some(module) = module {
        write_obj(mem, "PVH module list", layout::PVH_MODLIST_START, module)?;
    }
    let info = start_info(memmap.len(), module.is_some(), src.rsdp);
    write_obj(mem, "PVH start info", layout::PVH_INFO_START, info)?;
    Ok(EntryMode::Pvh32 {
        entry,
        start_info: layout::PVH_INFO_START,
    })
}

/// The PVH memory map: the same ranges and types as e820.
pub fn memmap_entries(mem_size: u64) -> Result<Vec<hvm_memmap_table_entry>, BootError> {
    let map = e820_map(mem_size);
    if map.len() > layout::PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootError::TooManyMemmapEntries(map.len()));
    }
    Ok(map
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        })
        .collect())
}

/// The start info block pointing at the fixed command line, module list and memmap areas.
pub fn start_info(memmap_entries: usize, has_module: bool, rsdp: Option<u64>) -> hvm_start_info {
    hvm_start_info {
        magic: START_INFO_MAGIC,
        version: START_INFO_VERSION,
        flags: 0,
        nr_modules: u32::from(has_module),
        modlist_paddr: if has_module {
            layout::PVH_MODLIST_START
        } else {
            0
        },
        cmdline_paddr: layout::CMDLINE_START,
        rsdp_paddr: rsdp.unwrap_or(0),
        memmap_paddr: layout::PVH_MEMMAP_START,
        memmap_entries: memmap_entries as u32,
        reserved: 0,
    }
}
