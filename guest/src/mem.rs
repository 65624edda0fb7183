//! The memory primitives the compiler emits calls to (`memcpy`, `memmove`, `memset`, `memcmp`,
//! `bcmp`). Without a C library the probe supplies them itself. The copies use `rep movsb` /
//! `rep stosb` so the compiler cannot turn a byte loop back into a call to the function being
//! defined, and so no SSE code is involved.
#![allow(unsafe_code)] // reason: exported unmangled symbols working on raw pointers.

use core::arch::asm;

/// # Safety
/// `dest` and `src` are valid for `n` bytes and do not overlap (the C contract).
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid for `n` bytes; DF is clear (the ABI
    // requires it on function entry). Eight bytes per step, then the rest: under PVM each
    // string-instruction step costs about as much as an emulated instruction.
    unsafe {
        asm!("rep movsq", "mov rcx, {rest}", "rep movsb",
             rest = in(reg) n & 7,
             inout("rcx") n >> 3 => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `dest` and `src` are valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 {
        return dest;
    }
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when the destination starts before the source or
        // after its end; validity of both ranges is the caller's contract.
        unsafe { memcpy(dest, src, n) };
    } else {
        // SAFETY: overlapping with the destination above the source: copy backwards, from the
        // last byte, with DF set for the copy and cleared again before returning.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _,
                 inout("rdi") dest.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _,
                 options(nostack));
        }
    }
    dest
}

/// # Safety
/// `dest` is valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    let fill = u64::from(value as u8) * 0x0101_0101_0101_0101;
    // SAFETY: the caller guarantees `dest` is valid for `n` bytes; DF is clear. Eight bytes per
    // step, then the rest (AL is the low byte of the same pattern).
    unsafe {
        asm!("rep stosq", "mov rcx, {rest}", "rep stosb",
             rest = in(reg) n & 7,
             inout("rcx") n >> 3 => _, inout("rdi") dest => _, in("rax") fill,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `a` and `b` are valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n` and both ranges are valid for `n` bytes.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// `a` and `b` are valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as `memcmp`.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the precompiled `core` (built for unwinding); the probe aborts on panic, so
/// this is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// Referenced by the precompiled `core`; never called with `panic = "abort"`.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::port::halt_forever()
}
