//! Starting the application processors (APs) the MADT lists, to prove their vCPUs really run.
//!
//! An AP leaves reset only on INIT followed by a STARTUP IPI (Intel SDM Vol. 3A §9.4.4) and
//! then begins in real mode at `vector << 12`. The trampoline below is copied to such a page
//! below 1 MiB; it loads its own GDT, enters 32-bit protected mode and jumps to
//! `probe_ap_start32` in the image, which takes the same way to long mode as the boot CPU (the
//! page tables are shared), claims a stack slot and calls [`probe_ap_main`]. An AP counts itself
//! online and halts with interrupts off.
#![allow(unsafe_code)] // reason: AP startup code is assembly; the trampoline is copied as bytes.

use crate::identity;
use crate::phys::PhysError;
use core::sync::atomic::{AtomicU32, Ordering};

/// APs beyond this many get no stack and stay halted in the startup code (not counted).
pub const MAX_APS: u32 = 63;
const AP_STACK_SIZE: u32 = 4096;

core::arch::global_asm!(
    r#"
    .section .rodata.probe_ap_trampoline, "a", @progbits
    .balign 16
    .global probe_ap_tramp_start
    .global probe_ap_tramp_end
    .global probe_ap_tramp_gdt_ptr
    .global probe_ap_tramp_gdt
    .code16
probe_ap_tramp_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (probe_ap_tramp_gdt_ptr - probe_ap_tramp_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $probe_ap_start32
    .balign 8
probe_ap_tramp_gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF
    .quad 0x00CF93000000FFFF
probe_ap_tramp_gdt_ptr:
    .word 23
    .long 0
probe_ap_tramp_end:

    .section .text.boot, "ax", @progbits
    .code32
probe_ap_start32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    lgdt probe_gdt_ptr
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl $probe_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr
    movl %cr0, %eax
    andl $0x9FFFFFFF, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    ljmp $0x08, $probe_ap_start64

    .code64
probe_ap_start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movl $1, %eax
    lock xaddl %eax, probe_ap_next(%rip)
    cmpl ${max_aps}, %eax
    jae 2f
    movl %eax, %edi
    leal 1(%eax), %ecx
    imull ${stack_size}, %ecx
    leaq probe_ap_stacks(%rip), %rsp
    addq %rcx, %rsp
    xorl %ebp, %ebp
    call probe_ap_main
2:
    cli
    hlt
    jmp 2b

    .section .bss.probe_ap_next, "aw", @nobits
    .balign 4
probe_ap_next:
    .skip 4

    .section .noinit.probe_ap_stacks, "aw", @nobits
    .balign 16
probe_ap_stacks:
    .skip {max_aps} * {stack_size}
    .text
"#,
    max_aps = const MAX_APS,
    stack_size = const AP_STACK_SIZE,
    options(att_syntax)
);

extern "C" {
    static probe_ap_tramp_start: u8;
    static probe_ap_tramp_end: u8;
    static probe_ap_tramp_gdt: u8;
    static probe_ap_tramp_gdt_ptr: u8;
}

static ONLINE: AtomicU32 = AtomicU32::new(0);

/// Number of APs that reached Rust.
pub fn online() -> u32 {
    ONLINE.load(Ordering::SeqCst)
}

/// Entry of every AP, on its own stack.
#[no_mangle]
extern "C" fn probe_ap_main(_index: u32) -> ! {
    crate::idt::load();
    ONLINE.fetch_add(1, Ordering::SeqCst);
    crate::port::halt_forever()
}

fn addr_of(symbol: &u8) -> u64 {
    symbol as *const u8 as u64
}

/// Copies the trampoline to `page` (4 KiB aligned, below 1 MiB) and points its GDT pointer at
/// its own GDT there. Returns the STARTUP IPI vector for it.
pub fn install_trampoline(page: u64) -> Result<u8, PhysError> {
    // SAFETY: these are labels in the read-only trampoline section; only their addresses are used.
    let (start, end, gdt, gdt_ptr) = unsafe {
        (
            addr_of(&probe_ap_tramp_start),
            addr_of(&probe_ap_tramp_end),
            addr_of(&probe_ap_tramp_gdt),
            addr_of(&probe_ap_tramp_gdt_ptr),
        )
    };
    let len = end - start;
    if !page.is_multiple_of(4096) || page + 4096 > 0x10_0000 || len > 4096 {
        return Err(PhysError::OutOfRange { addr: page, len });
    }
    let source = identity::region(start, len)?;
    for i in 0..len {
        identity::write(page + i, 1, u64::from(source.u8(i).unwrap_or(0)))?;
    }
    let gdt_base = (page + (gdt - start)) as u32;
    let base_field = page + (gdt_ptr - start) + 2;
    for (i, b) in gdt_base.to_le_bytes().iter().enumerate() {
        identity::write(base_field + i as u64, 1, u64::from(*b))?;
    }
    Ok((page >> 12) as u8)
}
