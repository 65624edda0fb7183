//! Exception handling: every CPU exception is reported as a `PROBE-ERROR` line and the probe
//! powers off (see [`crate::power::abort`]), so a fault in the probe is never mistaken for the
//! deliberate triple fault of the `triple-fault` scenario, and a failing test ends quickly. That scenario instead loads an empty IDT ([`load_empty`]).
#![allow(unsafe_code)] // reason: builds and loads the IDT; the handlers are assembly stubs.

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;

/// CPU exception vectors, each with a reporting handler.
const EXCEPTIONS: usize = 32;
/// The IDT covers every vector so the spurious-interrupt vector (0xFF) has a gate.
const VECTORS: usize = 256;
/// Vector of the local APIC timer tick ([`crate::lapic`]).
pub const TIMER_VECTOR: u8 = 0x20;
/// Spurious-interrupt vector programmed into the local APIC.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

// One stub per vector pushes a uniform frame (vector, error code) and jumps to the common path,
// which passes vector, error code, RIP and the frame to `probe_exception`. Vectors 8, 10-14, 17,
// 21, 29 and 30 get an error code from the CPU; the others push a zero in its place.
global_asm!(
    r#"
    .section .text.probe_isr, "ax", @progbits
    .macro probe_isr_noerr n
    .balign 16
    probe_isr_\n:
    pushq $0
    pushq $\n
    jmp probe_isr_common
    .endm
    .macro probe_isr_err n
    .balign 16
    probe_isr_\n:
    pushq $\n
    jmp probe_isr_common
    .endm

    probe_isr_noerr 0
    probe_isr_noerr 1
    probe_isr_noerr 2
    probe_isr_noerr 3
    probe_isr_noerr 4
    probe_isr_noerr 5
    probe_isr_noerr 6
    probe_isr_noerr 7
    probe_isr_err 8
    probe_isr_noerr 9
    probe_isr_err 10
    probe_isr_err 11
    probe_isr_err 12
    probe_isr_err 13
    probe_isr_err 14
    probe_isr_noerr 15
    probe_isr_noerr 16
    probe_isr_err 17
    probe_isr_noerr 18
    probe_isr_noerr 19
    probe_isr_noerr 20
    probe_isr_err 21
    probe_isr_noerr 22
    probe_isr_noerr 23
    probe_isr_noerr 24
    probe_isr_noerr 25
    probe_isr_noerr 26
    probe_isr_noerr 27
    probe_isr_noerr 28
    probe_isr_err 29
    probe_isr_err 30
    probe_isr_noerr 31

probe_isr_common:
    movq (%rsp), %rdi
    movq 8(%rsp), %rsi
    movq 16(%rsp), %rdx
    andq $-16, %rsp
    call probe_exception
4:
    cli
    hlt
    jmp 4b

    /* Local APIC timer: acknowledge (EOI) and return; the waiting code re-checks its clock. */
    .balign 16
    .global probe_isr_timer
probe_isr_timer:
    pushq %rax
    movq probe_lapic_eoi(%rip), %rax
    movl $0, (%rax)
    popq %rax
    iretq

    /* Spurious interrupts need no EOI. */
    .balign 16
    .global probe_isr_spurious
probe_isr_spurious:
    iretq

    .section .rodata.probe_isr_table, "a", @progbits
    .balign 8
    .global probe_isr_table
probe_isr_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad probe_isr_\n
    .endr
    .text
"#,
    options(att_syntax)
);

extern "C" {
    static probe_isr_table: [u64; EXCEPTIONS];
    fn probe_isr_timer();
    fn probe_isr_spurious();
}

/// Address of the local APIC EOI register, read by the timer stub; set by [`crate::lapic`]
/// before it enables the timer.
#[no_mangle]
static probe_lapic_eoi: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Tells the timer stub where the EOI register is.
pub fn set_eoi_address(addr: u64) {
    probe_lapic_eoi.store(addr, core::sync::atomic::Ordering::Relaxed);
}

/// A 64-bit interrupt gate (present, DPL 0, type 0xE) to `handler`.
fn gate(handler: u64) -> [u64; 2] {
    let low = (handler & 0xffff)
        | (u64::from(crate::start::CODE64_SELECTOR) << 16)
        | (0x8E << 40)
        | ((handler >> 16) & 0xffff) << 48;
    [low, handler >> 32]
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[[u64; 2]; VECTORS]>);

// SAFETY: only the boot CPU runs the probe and it writes the table once, before loading it.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([[0; 2]; VECTORS]));

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Installs handlers for the 32 exception vectors, the APIC timer and the spurious vector.
/// Other vectors stay not-present: an unexpected interrupt becomes a reported #NP.
pub fn init() {
    let table = IDT.0.get();
    // SAFETY: `probe_isr_table` is a read-only array defined in the assembly above.
    let handlers = unsafe { &probe_isr_table };
    let extra = [
        (TIMER_VECTOR, probe_isr_timer as *const () as u64),
        (SPURIOUS_VECTOR, probe_isr_spurious as *const () as u64),
    ];
    let all = handlers
        .iter()
        .enumerate()
        .map(|(v, &h)| (v, h))
        .chain(extra.iter().map(|&(v, h)| (usize::from(v), h)));
    for (vector, handler) in all {
        // SAFETY: single CPU, and the IDT is not loaded yet, so nothing else reads it now.
        unsafe { (*table)[vector] = gate(handler) };
    }
    load();
}

/// Loads the probe's IDT on the calling CPU (the boot CPU after [`init`], and each AP).
pub fn load() {
    let pointer = Pointer {
        limit: (VECTORS * 16 - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is a static that lives for the whole run and holds valid gates.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) }
}

/// Loads an IDT with limit zero, so the next exception cannot be delivered: it escalates to a
/// double fault, which cannot be delivered either, and the CPU shuts down (triple fault).
pub fn load_empty() {
    let pointer = Pointer { limit: 0, base: 0 };
    // SAFETY: loading a zero-limit IDT is the intended effect; interrupts are disabled, so only
    // an exception the caller raises deliberately will consult it.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) }
}

/// Raises an invalid-opcode exception (#UD). Not INT3: KVM without hardware virtualization
/// (PVM) handles a breakpoint with an unusable IDT by retrying it forever instead of shutting
/// the machine down.
pub fn raise_invalid_opcode() {
    // SAFETY: UD2 transfers control to the exception path; with the empty IDT loaded that ends
    // the machine, otherwise the handler reports it and halts.
    unsafe { asm!("ud2", options(nomem, nostack)) }
}

/// An address the boot page tables do not map (the identity map ends at 64 GiB).
pub const UNMAPPED_ADDRESS: u64 = crate::identity::MAPPED_LIMIT;

/// Reads [`UNMAPPED_ADDRESS`], raising a page fault.
pub fn touch_unmapped() {
    // SAFETY: the read faults before it returns a value; the exception handler reports it and
    // never returns here. No Rust object lives at that address.
    unsafe { asm!("mov {0}, [{0}]", inout(reg) UNMAPPED_ADDRESS => _, options(nostack, readonly)) }
}

fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Called by the assembly stubs; reports the exception and powers off.
#[no_mangle]
extern "C" fn probe_exception(vector: u64, error_code: u64, rip: u64) -> ! {
    let out = crate::serial::error()
        .s("exception vector=")
        .dec(vector)
        .s(" error-code=")
        .hex(error_code)
        .s(" rip=")
        .hex(rip);
    if vector == 14 {
        out.s(" cr2=").hex(read_cr2()).nl();
    } else {
        out.nl();
    }
    crate::power::abort()
}
