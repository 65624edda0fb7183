//! Startup code: from the PVH entry (32-bit protected mode, paging off, no stack) to
//! [`crate::probe_main`] in 64-bit long mode.
//!
//! PVH (the Xen x86/HVM direct boot ABI) enters at the address in the `XEN_ELFNOTE_PHYS32_ENTRY`
//! note (type 18) with flat 32-bit segments, paging disabled and EBX holding the physical address
//! of `hvm_start_info`. The code below sets a stack before anything can push, zeroes `.bss`
//! (the loader may leave it as it found the memory), identity-maps the first 64 GiB with 2 MiB
//! pages (RAM below and above the MMIO hole, the ACPI tables, the hole), enables long mode (CR4.PAE,
//! EFER.LME, CR0.PG), and far-jumps into a 64-bit code segment of its own GDT.
//!
//! Nothing here uses SSE, and CR4.OSFXSR stays clear: on hosts that emulate privileged
//! instructions, SSE in the guest ends the run with an emulation failure.
#![allow(unsafe_code)] // reason: the startup code is assembly (`global_asm!`).

/// Size of the identity map in GiB: all RAM a test VM may have (also above the 32-bit MMIO
/// hole) plus the MMIO hole itself. 64 page directories of 2 MiB pages, 256 KiB of `.bss`.
pub const IDENTITY_MAP_GIB: u64 = 64;

/// Selector of the 64-bit code segment in the boot GDT.
pub const CODE64_SELECTOR: u16 = 0x08;

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4

    .section .text.boot, "ax", @progbits
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl $probe_stack_top, %esp

    /* Zero .bss; it also holds the stack (still unused) and the page tables. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    /* PML4[0] -> PDPT; PDPT[0..GIB] -> one page directory of 2 MiB pages per GiB. */
    movl $probe_pdpt, %eax
    orl $0x3, %eax
    movl %eax, probe_pml4
    movl $probe_pd, %eax
    orl $0x3, %eax
    movl $probe_pdpt, %edi
    movl ${gib}, %ecx
1:
    movl %eax, (%edi)
    addl $0x1000, %eax
    addl $8, %edi
    loop 1b

    /* 512 entries per GiB: present, writable, 2 MiB page (PS); EDX:EAX is the 64-bit entry. */
    movl $probe_pd, %edi
    movl $0x83, %eax
    xorl %edx, %edx
    movl ${gib} * 512, %ecx
2:
    movl %eax, (%edi)
    movl %edx, 4(%edi)
    addl $0x200000, %eax
    adcl $0, %edx
    addl $8, %edi
    loop 2b

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
    orl $0x80000001, %eax
    movl %eax, %cr0

    ljmp ${code64}, $probe_start64

    .code64
probe_start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    leaq probe_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    movl %ebx, %edi
    call probe_main
3:
    cli
    hlt
    jmp 3b

    .section .data.probe_gdt, "aw", @progbits
    .balign 16
probe_gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
probe_gdt_end:
    .balign 4
probe_gdt_ptr:
    .word probe_gdt_end - probe_gdt - 1
    .quad probe_gdt

    .section .bss.probe_tables, "aw", @nobits
    .balign 4096
probe_pml4:
    .skip 4096
probe_pdpt:
    .skip 4096
probe_pd:
    .skip {gib} * 4096

    .section .bss.probe_stack, "aw", @nobits
    .balign 16
probe_stack:
    .skip 65536
    .global probe_stack_top
probe_stack_top:

    .text
"#,
    code64 = const CODE64_SELECTOR,
    gib = const IDENTITY_MAP_GIB,
    options(att_syntax)
);
