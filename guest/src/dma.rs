//! Memory for virtio drivers: the [`Hal`] the `virtio-drivers` crate asks for. Everything is
//! identity-mapped, so guest-physical and virtual addresses are the same number; DMA pages come
//! from a fixed pool in `.bss`. Runs of up to [`RECYCLED_PAGES`] pages that drivers give back
//! (a dropped virtqueue, a closed virtio-fs device) go on a free list per run length and are
//! handed out again, so a scenario that binds and releases hot-plugged devices again and again
//! does not run the pool dry.
#![allow(unsafe_code)] // reason: implements the unsafe `Hal` trait over raw guest memory.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// DMA pool size: virtqueues of a few devices plus request buffers.
const POOL_SIZE: usize = 1 << 20;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[u8; POOL_SIZE]>);

// SAFETY: pages are handed out once each (the bump index is atomic), so no two users share one.
unsafe impl Sync for Pool {}

/// In `.noinit`: `dma_alloc` clears the pages it hands out, so boot need not clear the pool.
#[link_section = ".noinit.probe_dma"]
static POOL: Pool = Pool(UnsafeCell::new([0; POOL_SIZE]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Longest run of pages kept for reuse (a virtio-fs session buffer is 9 pages).
pub const RECYCLED_PAGES: usize = 16;

/// Free lists of returned runs, indexed by page count: the address of the first free run (0 when
/// empty), whose first word holds the next one's.
struct FreeLists {
    lock: AtomicBool,
    heads: UnsafeCell<[usize; RECYCLED_PAGES + 1]>,
}

// SAFETY: `heads` is only touched with `lock` held.
unsafe impl Sync for FreeLists {}

static FREE: FreeLists = FreeLists {
    lock: AtomicBool::new(false),
    heads: UnsafeCell::new([0; RECYCLED_PAGES + 1]),
};

impl FreeLists {
    fn with<R>(&self, f: impl FnOnce(&mut [usize; RECYCLED_PAGES + 1]) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held, so this is the only reference to the heads.
        let r = f(unsafe { &mut *self.heads.get() });
        self.lock.store(false, Ordering::Release);
        r
    }

    /// A returned run of exactly `pages` pages, if there is one.
    fn take(&self, pages: usize) -> Option<*mut u8> {
        self.with(|heads| {
            let head = heads.get_mut(pages)?;
            if *head == 0 {
                return None;
            }
            let run = *head;
            // SAFETY: `run` is a free run in the pool (put there by `give`); its first word is
            // the link to the next one.
            *head = unsafe { core::ptr::read(run as *const usize) };
            Some(run as *mut u8)
        })
    }

    /// Keeps a run for reuse; runs longer than [`RECYCLED_PAGES`] or outside the pool are
    /// dropped (they stay allocated).
    fn give(&self, run: *mut u8, pages: usize) {
        let base = POOL.0.get() as usize;
        let addr = run as usize;
        let inside = addr >= base
            && (addr - base).is_multiple_of(PAGE_SIZE)
            && pages
                .checked_mul(PAGE_SIZE)
                .and_then(|len| (addr - base).checked_add(len))
                .is_some_and(|end| end <= POOL_SIZE);
        if !inside || pages == 0 {
            return;
        }
        self.with(|heads| {
            if let Some(head) = heads.get_mut(pages) {
                // SAFETY: the run is pool memory its owner gave back (checked to be inside the
                // pool and page-aligned); nobody else uses it until `take` hands it out again.
                unsafe { core::ptr::write(run as *mut usize, *head) };
                *head = addr;
            }
        })
    }
}

/// The probe's [`Hal`] for `virtio-drivers`.
pub struct ProbeHal;

fn out_of_pool(pages: usize) -> ! {
    crate::serial::error()
        .s("dma: pool of ")
        .dec(POOL_SIZE as u64)
        .s(" bytes exhausted (asked for ")
        .dec(pages as u64)
        .s(" pages)")
        .nl();
    crate::power::abort()
}

fn non_null(addr: u64) -> NonNull<u8> {
    match NonNull::new(addr as *mut u8) {
        Some(p) => p,
        None => {
            crate::serial::error().s("dma: null address").nl();
            crate::power::abort()
        }
    }
}

// SAFETY: `dma_alloc` returns page-aligned, zeroed pages from a static pool, each run held by one
// owner at a time (a run is reused only after `dma_dealloc` gave it back);
// addresses are identity-mapped, so the physical address given to the device and the pointer
// given to the driver name the same memory; `share` of any buffer is its own address for the
// same reason.
unsafe impl Hal for ProbeHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(len) = pages.checked_mul(PAGE_SIZE) else {
            out_of_pool(pages)
        };
        if let Some(ptr) = FREE.take(pages) {
            // SAFETY: a returned run of `pages` pages inside the pool, now ours alone.
            unsafe { core::ptr::write_bytes(ptr, 0, len) };
            return (ptr as u64, non_null(ptr as u64));
        }
        let start = NEXT.fetch_add(len, Ordering::SeqCst);
        if start.checked_add(len).is_none_or(|end| end > POOL_SIZE) {
            out_of_pool(pages)
        }
        let base = POOL.0.get() as *mut u8;
        // SAFETY: `start + len <= POOL_SIZE`, so the range is inside the pool, and the bump
        // index guarantees nobody else was given it.
        let ptr = unsafe { base.add(start) };
        // SAFETY: as above; zeroing is required by the trait (pages of a reused pool would not be).
        unsafe { core::ptr::write_bytes(ptr, 0, len) };
        (ptr as u64, non_null(ptr as u64))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        // The caller no longer uses the run and its device was reset or told to forget it.
        FREE.give(paddr as *mut u8, pages);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        if crate::identity::region(paddr, size as u64).is_err() {
            crate::serial::error()
                .s("dma: MMIO range ")
                .hex(paddr)
                .s(" is outside the identity map")
                .nl();
            crate::power::abort()
        }
        non_null(paddr)
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as u64
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
