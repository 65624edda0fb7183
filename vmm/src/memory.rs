//! Guest RAM: allocation, registration with KVM, and the e820 map that describes it.
//!
//! RAM is host memory split around the 32-bit MMIO hole (see [`crate::layout`]); each piece
//! becomes one KVM memory slot. It is private anonymous memory unless a vhost-user backend
//! must map it too: then every piece is a window of one memfd, whose descriptor the backend
//! receives in its memory table. The e820 map is derived from the same layout, so
//! the guest's view (boot params or the PVH memmap) and KVM's slots cannot disagree.
// Registering host memory with KVM is the one operation here that the type system cannot
// check: the slot must stay mapped for as long as the VM can touch it. Creating the memfd
// that backs shared RAM is a raw system call too.
#![allow(unsafe_code)]

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

use crate::layout;

/// Errors from setting up guest RAM; all are host-side failures.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory size {0:#x} does not fit the guest address space")]
    TooLarge(u64),
    #[error("cannot allocate {size:#x} bytes of guest RAM: {source}")]
    Allocate {
        size: u64,
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("cannot create the memfd for shared guest RAM: {0}")]
    Memfd(std::io::Error),
    #[error("guest RAM region at {addr:#x} has no host mapping")]
    NoHostAddress { addr: u64 },
    #[error("KVM refused memory slot {slot} at {addr:#x}+{size:#x}: {source}")]
    RegisterSlot {
        slot: u32,
        addr: u64,
        size: u64,
        source: kvm_ioctls::Error,
    },
}

/// An e820 range type, as in the ACPI address range types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E820Type {
    Ram = 1,
    Reserved = 2,
}

/// One e820 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Type,
}

impl E820Entry {
    fn new(addr: u64, end: u64, kind: E820Type) -> Self {
        Self {
            addr,
            size: end - addr,
            kind,
        }
    }
}

/// The memory map a VM of `mem_size` bytes reports to its guest, in address order.
///
/// Conventional memory stops at the EBDA, which is reserved; the VGA/ROM window is left out;
/// the ACPI area is reserved so the tables survive; ECAM is reserved so Linux trusts the
/// MCFG table; RAM resumes at 1 MiB and continues above 4 GiB past the MMIO hole.
/// `mem_size` must be at least [`layout::MIN_MEMORY`] (checked by config validation).
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    use E820Type::{Ram, Reserved};
    let low_end = layout::low_ram_end(mem_size);
    let mut map = vec![
        E820Entry::new(layout::LOW_RAM_START, layout::EBDA_START, Ram),
        E820Entry::new(layout::EBDA_START, layout::EBDA_END, Reserved),
        E820Entry::new(layout::ACPI_START, layout::ACPI_END, Reserved),
        E820Entry::new(layout::HIMEM_START, low_end, Ram),
        E820Entry::new(
            layout::PCI_MMCONFIG_START,
            layout::PCI_MMCONFIG_START + layout::PCI_MMCONFIG_SIZE,
            Reserved,
        ),
    ];
    if mem_size > layout::MMIO32_START {
        map.push(E820Entry {
            addr: layout::HIGH_RAM_START,
            size: mem_size - layout::MMIO32_START,
            kind: Ram,
        });
    }
    map
}

/// Allocates guest RAM for `mem_size` bytes laid out around the MMIO hole: private
/// anonymous memory, or with `shared` windows of one memfd (in guest-address order, so the
/// memfd offset of a region is the RAM below it).
pub fn create_guest_memory(mem_size: u64, shared: bool) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges = layout::ram_ranges(mem_size).ok_or(MemoryError::TooLarge(mem_size))?;
    let memfd = if shared {
        let file = memfd(mem_size)?;
        Some(Arc::new(file))
    } else {
        None
    };
    let mut offset = 0u64;
    let regions = ranges
        .iter()
        .map(|r| {
            let len =
                usize::try_from(r.end - r.start).map_err(|_| MemoryError::TooLarge(mem_size))?;
            let file = memfd
                .as_ref()
                .map(|f| FileOffset::from_arc(f.clone(), offset));
            offset += r.end - r.start;
            Ok((GuestAddress(r.start), len, file))
        })
        .collect::<Result<Vec<_>, MemoryError>>()?;
    let mem = GuestMemoryMmap::from_ranges_with_files(&regions).map_err(|source| {
        MemoryError::Allocate {
            size: mem_size,
            source,
        }
    })?;
    exclude_from_core_dumps(&mem);
    Ok(mem)
}

/// Keeps guest RAM out of the VMM's core dumps: a crash of the VMM must not write the guest's
/// memory to disk. The distinct flag also keeps each RAM mapping a VMA of its own, so the
/// kernel never merges a neighbouring malloc arena into it (which made the arena's reserved
/// size look like resident VMM memory in /proc/PID/smaps). Failure only costs that hardening.
fn exclude_from_core_dumps(mem: &GuestMemoryMmap) {
    for region in mem.iter() {
        let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) else {
            continue;
        };
        let Ok(len) = usize::try_from(region.len()) else {
            continue;
        };
        // SAFETY: `host`..`host + len` is exactly one live mapping owned by `mem`; MADV_DONTDUMP
        // only sets a flag on it and neither reads nor changes its contents.
        let rc = unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTDUMP) };
        if rc != 0 {
            log::warn!(
                "guest RAM at {:#x} stays in core dumps: madvise: {}",
                region.start_addr().0,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// An anonymous memfd of `size` bytes (close-on-exec, sparse until touched).
fn memfd(size: u64) -> Result<File, MemoryError> {
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new descriptor or -1;
    // no memory of ours is written.
    let fd = unsafe { libc::memfd_create(c"podvisor-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::Memfd)?;
    Ok(file)
}

/// Hands every RAM region to KVM as its own memory slot.
pub fn register_with_kvm(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in (0u32..).zip(mem.iter()) {
        let addr = region.start_addr().0;
        let size = region.len();
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|_| MemoryError::NoHostAddress { addr })?;
        let desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: addr,
            memory_size: size,
            userspace_addr: host as u64,
        };
        // SAFETY: `host` is the start of a live mapping of `size` bytes owned by `mem`; the
        // caller keeps `mem` alive for as long as the VM runs (both live in `Vm`, and the
        // vCPU threads are joined before `Vm` is dropped).
        unsafe { vm.set_user_memory_region(desc) }.map_err(|source| MemoryError::RegisterSlot {
            slot,
            addr,
            size,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total_ram(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820Type::Ram)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn small_vm_map() {
        let map = e820_map(64 << 20);
        assert_eq!(map[0], E820Entry::new(0, 0x9fc00, E820Type::Ram));
        assert_eq!(map[1].kind, E820Type::Reserved);
        assert_eq!(
            map[2],
            E820Entry::new(0xe0000, 0x100000, E820Type::Reserved)
        );
        assert_eq!(map[3], E820Entry::new(0x100000, 64 << 20, E820Type::Ram));
        assert_eq!(map.len(), 5);
        for pair in map.windows(2) {
            assert!(pair[0].addr + pair[0].size <= pair[1].addr, "{pair:x?}");
        }
    }

    #[test]
    fn large_vm_map_skips_the_hole() {
        let map = e820_map(6 << 30);
        let last = map[map.len() - 1];
        assert_eq!(last, E820Entry::new(4 << 30, 7 << 30, E820Type::Ram));
        assert!(map.iter().all(|e| e.kind != E820Type::Ram
            || e.addr + e.size <= layout::MMIO32_START
            || e.addr >= layout::MMIO32_END));
        // Everything but the EBDA and the 640K..1M window is RAM.
        assert_eq!(total_ram(&map), (6 << 30) - (0x100000 - 0x9fc00));
    }

    #[test]
    fn guest_memory_matches_the_layout() {
        let mem = create_guest_memory(32 << 20, false).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((32 << 20) - 1));
        assert!(mem.iter().all(|r| r.file_offset().is_none()));
        assert!(create_guest_memory(u64::MAX, false).is_err());
    }

    #[test]
    fn shared_memory_is_one_memfd_in_address_order() {
        use std::os::fd::AsRawFd;
        use vm_memory::Bytes;
        // Large enough to straddle the MMIO hole; nothing is touched, so nothing is allocated.
        let size = 5 << 30;
        let mem = create_guest_memory(size, true).unwrap();
        assert_eq!(mem.num_regions(), 2);
        let files: Vec<_> = mem
            .iter()
            .map(|r| {
                let f = r.file_offset().unwrap();
                (f.file().as_raw_fd(), f.start(), r.len())
            })
            .collect();
        assert_eq!(files[0].0, files[1].0, "one memfd");
        assert_eq!(files[0].1, 0);
        assert_eq!(
            files[1].1, files[0].2,
            "the high region follows the low one"
        );
        assert_eq!(
            mem.iter()
                .next()
                .unwrap()
                .file_offset()
                .unwrap()
                .file()
                .metadata()
                .unwrap()
                .len(),
            size
        );
        // The mapping is shared: a write through guest memory is in the file.
        mem.write_obj(0x1234_5678u32, GuestAddress(0x1000)).unwrap();
        let mut word = [0u8; 4];
        let file = mem.iter().next().unwrap().file_offset().unwrap().file();
        std::os::unix::fs::FileExt::read_exact_at(file, &mut word, 0x1000).unwrap();
        assert_eq!(u32::from_le_bytes(word), 0x1234_5678);
    }
}
