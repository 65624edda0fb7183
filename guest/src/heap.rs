//! The probe's heap, for drivers that need `alloc` (the vsock connection manager keeps a
//! buffer per connection). Size classes of powers of two from 16 bytes to 1 MiB, carved from a
//! static arena on first use and recycled through one free list per class, so a scenario that
//! opens and closes thousands of connections reuses the same blocks instead of running out.
#![allow(unsafe_code)] // reason: implements `GlobalAlloc` over a static arena.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

const ARENA_SIZE: usize = 8 << 20;
const MIN_SHIFT: u32 = 4;
const CLASSES: usize = 17;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: the arena is only reached through `Heap`, which hands each block to one owner.
unsafe impl Sync for Arena {}

/// In `.noinit`: blocks are handed out uninitialised, as `GlobalAlloc` allows.
#[link_section = ".noinit.probe_heap"]
static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));

struct State {
    /// Offset of the first never-used byte of the arena.
    next: usize,
    /// Head of each class's free list (an address; 0 when empty). A free block's first
    /// word holds the next free block's address.
    free: [usize; CLASSES],
}

pub struct Heap {
    lock: AtomicBool,
    state: UnsafeCell<State>,
}

// SAFETY: `state` is only touched with `lock` held.
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap {
    lock: AtomicBool::new(false),
    state: UnsafeCell::new(State {
        next: 0,
        free: [0; CLASSES],
    }),
};

/// The class of a layout, and its block size.
fn class(layout: Layout) -> Option<(usize, usize)> {
    let size = layout
        .size()
        .max(layout.align())
        .max(1 << MIN_SHIFT)
        .checked_next_power_of_two()?;
    let index = (size.trailing_zeros() - MIN_SHIFT) as usize;
    (index < CLASSES).then_some((index, size))
}

impl Heap {
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held, so this is the only reference to the state.
        let r = f(unsafe { &mut *self.state.get() });
        self.lock.store(false, Ordering::Release);
        r
    }
}

// SAFETY: blocks come from the static arena or a free list and are at least as large and as
// aligned as asked (block sizes are powers of two at least the alignment, carved at multiples
// of their size); a block is on at most one free list and never handed out twice.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((index, size)) = class(layout) else {
            return core::ptr::null_mut();
        };
        self.with_state(|st| {
            let head = st.free[index];
            if head != 0 {
                // SAFETY: `head` is a free block of this class; its first word is the link.
                st.free[index] = unsafe { *(head as *const usize) };
                return head as *mut u8;
            }
            let base = ARENA.0.get() as usize;
            let start = (base + st.next).next_multiple_of(size);
            if start + size > base + ARENA_SIZE {
                return core::ptr::null_mut();
            }
            st.next = start + size - base;
            start as *mut u8
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((index, _)) = class(layout) else {
            return;
        };
        self.with_state(|st| {
            // SAFETY: `ptr` is a block of this class the caller no longer uses; it is
            // word-aligned (blocks are at least 16 bytes, aligned to their size).
            unsafe { *(ptr as *mut usize) = st.free[index] };
            st.free[index] = ptr as usize;
        });
    }
}
