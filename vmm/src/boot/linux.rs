//! The Linux x86 boot protocol (Documentation/arch/x86/boot.rst) with the 64-bit entry point.
//!
//! For a bzImage the setup header comes from the image (offset 0x1f1) and the protected-mode
//! part is loaded at 1 MiB; the kernel is entered at `load address + 0x200` in long mode.
//! An ELF vmlinux without a PVH note is entered at its ELF entry with a synthesized header.
//! Either way the zero page (`struct boot_params`, Documentation/arch/x86/zero-page.rst)
//! carries the e820 map, the command line pointer, the initramfs and `acpi_rsdp_addr`.

use std::io::{Read, Seek, SeekFrom};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::{KernelLoader, KernelLoaderResult};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{load_initramfs, write_cmdline, write_obj, BootError, BootSource};
use crate::cpu::EntryMode;
use crate::layout;
use crate::memory::e820_map;

/// "HdrS" at offset 0x202 marks a setup header of boot protocol 2.00 or later.
const HDRS_MAGIC: u32 = 0x5372_6448;
const HDRS_OFFSET: u64 = 0x202;
/// The boot sector signature at 0x1fe.
const BOOT_FLAG: u16 = 0xaa55;
/// `type_of_loader` for a boot loader without an assigned ID.
const LOADER_UNDEFINED: u8 = 0xff;
/// xloadflags bit 0: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 1;
/// Offset of the 64-bit entry point from the protected-mode load address.
const ENTRY_64_OFFSET: u64 = 0x200;
/// `initrd_addr_max` before protocol 2.03.
const LEGACY_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// `cmdline_size` before protocol 2.06.
const LEGACY_CMDLINE_SIZE: usize = 255;
/// Alignment a vmlinux is built for (CONFIG_PHYSICAL_ALIGN on x86-64).
const DEFAULT_KERNEL_ALIGN: u32 = 0x100_0000;

/// True if the file carries a bzImage setup header.
pub fn is_bzimage<F: Read + Seek>(file: &mut F) -> std::io::Result<bool> {
    file.seek(SeekFrom::Start(HDRS_OFFSET))?;
    let mut magic = [0u8; 4];
    let found = match file.read_exact(&mut magic) {
        Ok(()) => u32::from_le_bytes(magic) == HDRS_MAGIC,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(0))?;
    Ok(found)
}

/// Loads a bzImage, checks it can be entered in 64-bit mode and fits, then writes the zero
/// page.
pub fn setup_bzimage<F>(
    mem: &GuestMemoryMmap,
    src: &BootSource<'_>,
    kernel: &mut F,
) -> Result<EntryMode, BootError>
where
    F: Read + Seek + vm_memory::ReadVolatile,
{
    let loaded = BzImage::load(mem, None, kernel, Some(GuestAddress(layout::HIMEM_START)))
        .map_err(|source| BootError::LoadKernel {
            path: src.kernel.to_owned(),
            source,
        })?;
    let hdr = loaded
        .setup_header
        .ok_or_else(|| unsupported(src, "bzImage without a setup header"))?;
    check_bzimage_header(&hdr).map_err(|why| unsupported(src, why))?;

    // The kernel decompresses in place and needs `init_size` bytes from its load address.
    let load = loaded.kernel_load.0;
    let kernel_end = (load + u64::from(hdr.init_size)).max(loaded.kernel_end);
    let ram_end = layout::low_ram_end(src.mem_size);
    if kernel_end > ram_end {
        return Err(BootError::KernelTooLarge {
            needed: kernel_end,
            ram_end,
        });
    }
    let initrd_max = if hdr.version >= 0x203 {
        u64::from(hdr.initrd_addr_max)
    } else {
        LEGACY_INITRD_ADDR_MAX
    };
    let cmdline_max = if hdr.version >= 0x206 {
        usize::try_from(hdr.cmdline_size).unwrap_or(usize::MAX)
    } else {
        LEGACY_CMDLINE_SIZE
    };
    write_zero_page(mem, src, hdr, kernel_end, initrd_max, cmdline_max)?;
    Ok(EntryMode::Linux64 {
        entry: load + ENTRY_64_OFFSET,
        boot_params: layout::ZERO_PAGE_START,
    })
}

/// Refuses headers this VMM cannot enter: pre-2.12 protocols (no `xloadflags`) and kernels
/// without the 64-bit entry point.
pub fn check_bzimage_header(hdr: &setup_header) -> Result<(), &'static str> {
    let version = hdr.version;
    let xloadflags = hdr.xloadflags;
    if version < 0x20c {
        return Err("boot protocol older than 2.12 has no 64-bit entry point");
    }
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err("bzImage has no 64-bit entry point (XLF_KERNEL_64 clear)");
    }
    Ok(())
}

/// Sets up a 64-bit boot of an ELF vmlinux that has no PVH note, entered at its ELF entry.
pub fn setup_elf(
    mem: &GuestMemoryMmap,
    src: &BootSource<'_>,
    loaded: &KernelLoaderResult,
) -> Result<EntryMode, BootError> {
    let ram_end = layout::low_ram_end(src.mem_size);
    if loaded.kernel_end > ram_end {
        return Err(BootError::KernelTooLarge {
            needed: loaded.kernel_end,
            ram_end,
        });
    }
    let hdr = setup_header {
        boot_flag: BOOT_FLAG,
        header: HDRS_MAGIC,
        kernel_alignment: DEFAULT_KERNEL_ALIGN,
        ..Default::default()
    };
    write_zero_page(
        mem,
        src,
        hdr,
        loaded.kernel_end,
        LEGACY_INITRD_ADDR_MAX,
        layout::CMDLINE_MAX_SIZE - 1,
    )?;
    Ok(EntryMode::Linux64 {
        entry: loaded.kernel_load.0,
        boot_params: layout::ZERO_PAGE_START,
    })
}

fn unsupported(src: &BootSource<'_>, why: &str) -> BootError {
    BootError::UnsupportedKernel {
        path: src.kernel.to_owned(),
        why: why.to_owned(),
    }
}

/// Writes command line, initramfs and the zero page built around `hdr`.
fn write_zero_page(
    mem: &GuestMemoryMmap,
    src: &BootSource<'_>,
    hdr: setup_header,
    kernel_end: u64,
    initrd_addr_max: u64,
    cmdline_max: usize,
) -> Result<(), BootError> {
    write_cmdline(mem, src.cmdline, cmdline_max)?;
    let initramfs = match src.initramfs {
        Some(path) => Some(load_initramfs(
            mem,
            path,
            kernel_end,
            initrd_addr_max.saturating_add(1),
            src.mem_size,
        )?),
        None => None,
    };
    let mut params = build_boot_params(hdr, src.mem_size, src.rsdp)?;
    if let Some(placed) = initramfs {
        // Both fit in 32 bits: the initramfs lies below the MMIO hole.
        params.hdr.ramdisk_image = placed.addr as u32;
        params.hdr.ramdisk_size = placed.size as u32;
    }
    write_obj(mem, "zero page", layout::ZERO_PAGE_START, params)
}

/// The zero page without the initramfs: header, loader type, command line, e820, RSDP.
pub fn build_boot_params(
    hdr: setup_header,
    mem_size: u64,
    rsdp: Option<u64>,
) -> Result<boot_params, BootError> {
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.acpi_rsdp_addr = rsdp.unwrap_or(0);
    let map = e820_map(mem_size);
    if map.len() > params.e820_table.len() {
        return Err(BootError::TooManyMemmapEntries(map.len()));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind as u32,
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}
