//! Which guest pages a device may touch.
//!
//! A confidential (SEV-SNP) guest decides page by page what the host may see: only pages it
//! converted to shared are host memory. A device that follows a guest address into a page the
//! guest made private would, on KVM, read or write the stale shared backing next to the
//! guest_memfd that holds the real contents (never the private data itself, but nothing the
//! guest meant to hand over either), and on the software platform touch memory the RMP denies
//! the host. Either way the guest is confused about what it shared, so the device treats such
//! an address like one outside RAM: a device error the guest sees (virtio-blk answers IOERR,
//! a queue whose rings are private needs a reset).
//!
//! The VMM's memory layer keeps a [`SharedPages`] bitmap current on every conversion it
//! applies; devices get a [`DmaGuard`] and ask it before touching guest memory. Ordinary VMs
//! get the unrestricted guard: its check is one predictable branch on `None`.
//!
//! A guest can still convert a page between the device's check and its access. That race
//! only hurts the guest that runs it (on KVM the access lands in the shared backing, on the
//! model the host accessors refuse private pages), so the check reports guest mistakes; it is
//! not what keeps private memory private.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const PAGE_SHIFT: u32 = 12;
const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// Errors updating the bitmap: the memory layer named a range that is not guest RAM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    #[error("conversion {gpa:#x}+{len:#x} is not page aligned or not inside guest RAM")]
    OutsideRam { gpa: u64, len: u64 },
}

/// One RAM region's pages, one bit each (1 = shared).
#[derive(Debug)]
struct Region {
    first_page: u64,
    pages: u64,
    bits: Vec<AtomicU64>,
}

impl Region {
    fn bit(&self, page: u64) -> Option<(&AtomicU64, u64)> {
        let i = page
            .checked_sub(self.first_page)
            .filter(|i| *i < self.pages)?;
        let word = self.bits.get(usize::try_from(i / 64).ok()?)?;
        Some((word, 1u64 << (i % 64)))
    }
}

/// The shared/private state of every guest RAM page, as the memory layer last applied it.
#[derive(Debug)]
pub struct SharedPages {
    regions: Vec<Region>,
}

impl SharedPages {
    /// Pages of the RAM regions `ram` (`(gpa, size)`, page aligned), all `shared` or all
    /// private to begin with.
    pub fn new(ram: &[(u64, u64)], shared: bool) -> Self {
        let regions = ram
            .iter()
            .map(|&(gpa, size)| {
                let pages = size >> PAGE_SHIFT;
                let words = usize::try_from(pages.div_ceil(64)).unwrap_or(0);
                let fill = if shared { u64::MAX } else { 0 };
                Region {
                    first_page: gpa >> PAGE_SHIFT,
                    pages,
                    bits: (0..words).map(|_| AtomicU64::new(fill)).collect(),
                }
            })
            .collect();
        Self { regions }
    }

    fn bit(&self, page: u64) -> Option<(&AtomicU64, u64)> {
        self.regions.iter().find_map(|r| r.bit(page))
    }

    /// Records that `[gpa, gpa + len)` (page aligned) became shared or private. Nothing
    /// changes unless every page is guest RAM.
    pub fn set(&self, gpa: u64, len: u64, shared: bool) -> Result<(), DmaError> {
        let bad = DmaError::OutsideRam { gpa, len };
        if gpa % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 || gpa.checked_add(len).is_none() {
            return Err(bad);
        }
        let (first, count) = (gpa >> PAGE_SHIFT, len >> PAGE_SHIFT);
        if (first..first + count).any(|p| self.bit(p).is_none()) {
            return Err(bad);
        }
        for page in first..first + count {
            if let Some((word, mask)) = self.bit(page) {
                if shared {
                    word.fetch_or(mask, Ordering::AcqRel);
                } else {
                    word.fetch_and(!mask, Ordering::AcqRel);
                }
            }
        }
        Ok(())
    }

    /// True if every page `[gpa, gpa + len)` touches is shared guest RAM (an empty range
    /// touches nothing).
    pub fn is_shared(&self, gpa: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let Some(last) = gpa.checked_add(len - 1) else {
            return false;
        };
        (gpa >> PAGE_SHIFT..=last >> PAGE_SHIFT).all(|page| {
            self.bit(page)
                .is_some_and(|(word, mask)| word.load(Ordering::Acquire) & mask != 0)
        })
    }
}

/// What a device asks before following a guest address: unrestricted for ordinary VMs,
/// shared pages only for a confidential guest.
#[derive(Debug, Clone, Default)]
pub struct DmaGuard(Option<Arc<SharedPages>>);

impl DmaGuard {
    /// Every address is fine (an ordinary VM).
    pub fn unrestricted() -> Self {
        Self(None)
    }

    /// Only pages `pages` says are shared.
    pub fn shared_only(pages: Arc<SharedPages>) -> Self {
        Self(Some(pages))
    }

    /// True for a confidential guest's devices.
    pub fn is_restricted(&self) -> bool {
        self.0.is_some()
    }

    /// May a device read or write `[gpa, gpa + len)`?
    #[inline]
    pub fn allows(&self, gpa: u64, len: u64) -> bool {
        match &self.0 {
            None => true,
            Some(pages) => pages.is_shared(gpa, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn conversions_flip_exactly_their_pages() {
        let pages = SharedPages::new(&[(0, 2 * MIB), (4 * MIB, MIB)], false);
        assert!(!pages.is_shared(0x1000, 1));
        pages.set(0x1000, 0x2000, true).unwrap();
        assert!(pages.is_shared(0x1000, 0x2000));
        assert!(
            pages.is_shared(0x1fff, 2),
            "a range inside the shared pages"
        );
        assert!(
            !pages.is_shared(0x1000, 0x2001),
            "one byte into a private page"
        );
        assert!(!pages.is_shared(0xfff, 2), "one byte before");
        pages.set(0x2000, 0x1000, false).unwrap();
        assert!(pages.is_shared(0x1000, 0x1000));
        assert!(!pages.is_shared(0x2000, 1));
        // The second region, across a 64-page word boundary.
        pages.set(4 * MIB + 63 * 4096, 2 * 4096, true).unwrap();
        assert!(pages.is_shared(4 * MIB + 63 * 4096, 2 * 4096));
        assert!(!pages.is_shared(4 * MIB + 62 * 4096, 1));
        assert!(pages.is_shared(0, 0), "an empty range touches nothing");
    }

    #[test]
    fn ranges_outside_ram_are_never_shared_and_never_recorded() {
        let pages = SharedPages::new(&[(0, 2 * MIB), (4 * MIB, MIB)], true);
        assert!(pages.is_shared(0, 2 * MIB));
        assert!(!pages.is_shared(2 * MIB - 1, 2), "runs into the hole");
        assert!(!pages.is_shared(3 * MIB, 1));
        assert!(!pages.is_shared(u64::MAX, 2), "wraps");
        for (gpa, len) in [
            (0x1001, 0x1000),       // unaligned
            (0x1000, 0x10),         // unaligned length
            (2 * MIB - 4096, 8192), // runs into the hole
            (!0xfff, 0x2000),       // wraps
            (5 * MIB, 4096),        // past the end
        ] {
            assert_eq!(
                pages.set(gpa, len, false),
                Err(DmaError::OutsideRam { gpa, len })
            );
        }
        assert!(
            pages.is_shared(0, 2 * MIB),
            "failed updates changed nothing"
        );
    }

    #[test]
    fn the_unrestricted_guard_allows_everything() {
        let open = DmaGuard::unrestricted();
        assert!(!open.is_restricted());
        assert!(open.allows(u64::MAX, 100));
        let pages = Arc::new(SharedPages::new(&[(0, MIB)], false));
        let guard = DmaGuard::shared_only(pages.clone());
        assert!(guard.is_restricted());
        assert!(!guard.allows(0x3000, 16));
        pages.set(0x3000, 0x1000, true).unwrap();
        assert!(guard.allows(0x3000, 16));
    }
}
