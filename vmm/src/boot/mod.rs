//! Direct kernel boot: kernel, initramfs and command line into guest memory, plus the boot
//! information block the chosen entry protocol expects.
//!
//! The kernel file decides the protocol: an ELF image with a `XEN_ELFNOTE_PHYS32_ENTRY` note
//! boots through PVH ([`pvh`]), a bzImage or an ELF without the note through the Linux 64-bit
//! boot protocol ([`linux`]). The kernel and initramfs files are user input: a truncated or
//! foreign file is a configuration error with the path in the message, never a panic.

pub mod linux;
pub mod pvh;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::cpu::EntryMode;
use crate::layout;

/// Errors loading a guest. [`BootError::is_config_error`] separates bad input from host
/// failures.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read kernel {path:?}: {source}")]
    ReadKernel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel {path:?} is neither an ELF image nor a bzImage")]
    UnknownKernelFormat { path: PathBuf },
    #[error("kernel {path:?} is corrupt or does not fit in guest RAM: {source}")]
    LoadKernel {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
    #[error("kernel {path:?}: {why}")]
    UnsupportedKernel { path: PathBuf, why: String },
    #[error("kernel needs guest RAM up to {needed:#x} but RAM below 4 GiB ends at {ram_end:#x}")]
    KernelTooLarge { needed: u64, ram_end: u64 },
    #[error("command line is {len} bytes but the kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("cannot read initramfs {path:?}: {source}")]
    ReadInitramfs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "initramfs of {size} bytes does not fit between the kernel (ends {kernel_end:#x}) and \
         {limit:#x}"
    )]
    InitramfsDoesNotFit {
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("cannot write the {what} into guest memory at {addr:#x}: {source}")]
    WriteGuest {
        what: &'static str,
        addr: u64,
        source: vm_memory::GuestMemoryError,
    },
    #[error("too many memory map entries ({0}) for the boot information block")]
    TooManyMemmapEntries(usize),
}

impl BootError {
    /// True when the user's files or settings are at fault (exit status 2), false for host
    /// failures (exit status 1).
    pub fn is_config_error(&self) -> bool {
        !matches!(
            self,
            BootError::WriteGuest { .. } | BootError::TooManyMemmapEntries(_)
        )
    }
}

/// What to boot and where the firmware tables are.
pub struct BootSource<'a> {
    pub kernel: &'a Path,
    pub initramfs: Option<&'a Path>,
    pub cmdline: &'a str,
    pub mem_size: u64,
    /// Guest-physical address of the ACPI RSDP, if tables were written.
    pub rsdp: Option<u64>,
}

/// Where the initramfs was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitramfsPlacement {
    pub addr: u64,
    pub size: u64,
}

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const PAGE: u64 = 0x1000;

/// Kernel image formats this VMM can boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    Elf,
    BzImage,
}

/// Identifies the kernel image from its magic numbers without loading it, so an obviously
/// wrong file is refused before any VM resource exists.
pub fn check_kernel_format(path: &Path) -> Result<KernelFormat, BootError> {
    let read_err = |source| BootError::ReadKernel {
        path: path.to_owned(),
        source,
    };
    let mut kernel = File::open(path).map_err(read_err)?;
    kernel_format(&mut kernel)
        .map_err(read_err)?
        .ok_or_else(|| BootError::UnknownKernelFormat {
            path: path.to_owned(),
        })
}

/// The format of an open kernel file, `None` if unknown; the file is rewound afterwards.
fn kernel_format(kernel: &mut File) -> std::io::Result<Option<KernelFormat>> {
    let mut magic = [0u8; 4];
    let n = kernel.read(&mut magic)?;
    kernel.seek(SeekFrom::Start(0))?;
    if n == magic.len() && magic == ELF_MAGIC {
        Ok(Some(KernelFormat::Elf))
    } else if linux::is_bzimage(kernel)? {
        Ok(Some(KernelFormat::BzImage))
    } else {
        Ok(None)
    }
}

/// Loads the kernel, initramfs and command line and writes the boot information block.
/// Returns how the boot vCPU must enter the guest.
pub fn load(mem: &GuestMemoryMmap, src: &BootSource<'_>) -> Result<EntryMode, BootError> {
    let read_err = |source| BootError::ReadKernel {
        path: src.kernel.to_owned(),
        source,
    };
    let mut kernel = File::open(src.kernel).map_err(read_err)?;
    let format = kernel_format(&mut kernel).map_err(read_err)?;
    match format.ok_or_else(|| BootError::UnknownKernelFormat {
        path: src.kernel.to_owned(),
    })? {
        KernelFormat::Elf => {
            let loaded = Elf::load(
                mem,
                None,
                &mut kernel,
                Some(GuestAddress(layout::HIMEM_START)),
            )
            .map_err(|source| BootError::LoadKernel {
                path: src.kernel.to_owned(),
                source,
            })?;
            match loaded.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => pvh::setup(mem, src, &loaded, entry.0),
                _ => linux::setup_elf(mem, src, &loaded),
            }
        }
        KernelFormat::BzImage => linux::setup_bzimage(mem, src, &mut kernel),
    }
}

/// Writes the NUL-terminated command line at [`layout::CMDLINE_START`]; `max` is the longest
/// command line (without the NUL) the kernel takes.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, max: usize) -> Result<(), BootError> {
    let max = max.min(layout::CMDLINE_MAX_SIZE - 1);
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    write_bytes(mem, "command line", layout::CMDLINE_START, &bytes)
}

pub(crate) fn write_bytes(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), BootError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| BootError::WriteGuest { what, addr, source })
}

pub(crate) fn write_obj<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    val: T,
) -> Result<(), BootError> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|source| BootError::WriteGuest { what, addr, source })
}

/// The highest page-aligned address at which `size` bytes end at or below `limit` and start
/// at or above `kernel_end` (page-aligned up).
pub fn place_initramfs(size: u64, kernel_end: u64, limit: u64) -> Option<u64> {
    let floor = kernel_end.checked_add(PAGE - 1)? & !(PAGE - 1);
    let addr = limit.checked_sub(size)? & !(PAGE - 1);
    (addr >= floor).then_some(addr)
}

/// Reads the initramfs into the top of low RAM, below `addr_limit` (exclusive), above
/// `kernel_end`.
pub fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    addr_limit: u64,
    mem_size: u64,
) -> Result<InitramfsPlacement, BootError> {
    let read_err = |source| BootError::ReadInitramfs {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let limit = addr_limit.min(layout::low_ram_end(mem_size));
    let addr = place_initramfs(size, kernel_end, limit).ok_or(BootError::InitramfsDoesNotFit {
        size,
        kernel_end,
        limit,
    })?;
    let len = usize::try_from(size).map_err(|_| BootError::InitramfsDoesNotFit {
        size,
        kernel_end,
        limit,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|source| BootError::WriteGuest {
            what: "initramfs",
            addr,
            source,
        })?;
    log::debug!("initramfs: {size} bytes at {addr:#x}");
    Ok(InitramfsPlacement { addr, size })
}

#[cfg(test)]
mod tests;
