//! Memory for virtio drivers: the [`Hal`] the `virtio-drivers` crate asks for. Everything is
//! identity-mapped, so guest-physical and virtual addresses are the same number; DMA pages come
//! from a fixed pool in `.bss` handed out once (the probe lives for one scenario and never
//! returns them).
#![allow(unsafe_code)] // reason: implements the unsafe `Hal` trait over raw guest memory.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
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

// SAFETY: `dma_alloc` returns page-aligned, zeroed, never-reused pages from a static pool;
// addresses are identity-mapped, so the physical address given to the device and the pointer
// given to the driver name the same memory; `share` of any buffer is its own address for the
// same reason.
unsafe impl Hal for ProbeHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(len) = pages.checked_mul(PAGE_SIZE) else {
            out_of_pool(pages)
        };
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

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
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
