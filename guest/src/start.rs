//! Startup code: from the PVH entry (32-bit protected mode, paging off, no stack) to
//! [`crate::probe_main`] in 64-bit long mode.
//!
//! PVH (the Xen x86/HVM direct boot ABI) enters at the address in the `XEN_ELFNOTE_PHYS32_ENTRY`
//! note (type 18) with flat 32-bit segments, paging disabled and EBX holding the physical address
//! of `hvm_start_info`. The code below sets a stack before anything can push, identity-maps the
//! first GiB with 2 MiB pages, enables long mode (CR4.PAE, EFER.LME, CR0.PG) and far-jumps into a
//! 64-bit code segment of its own GDT. There it zeroes `.bss` (the loader may leave it as it
//! found the memory) and extends the identity map to 4 GiB (RAM below the MMIO hole, the ACPI
//! tables, the hole itself) before calling Rust, which maps RAM above 4 GiB once it has read the
//! memory map.
//!
//! Under PVM guest instructions are expensive (measured here: a plain store loop runs at about
//! 10 us per iteration), so boot does as little as it can: `.bss` holds only small statics and
//! is cleared with one `rep stosq`; big buffers that need no clearing (stacks, page tables, the
//! DMA pool) sit in `.noinit`; page tables are filled only for memory that exists.
//!
//! Nothing here uses SSE, and CR4.OSFXSR stays clear: on hosts that emulate privileged
//! instructions, SSE in the guest ends the run with an emulation failure.
#![allow(unsafe_code)] // reason: the startup code is assembly (`global_asm!`).

/// Largest identity map in GiB: all RAM a test VM may have (also above the 32-bit MMIO hole)
/// plus the hole itself; page directories for all of it are reserved (256 KiB).
pub const IDENTITY_MAP_GIB: u64 = 64;
/// What the startup code maps: everything below 4 GiB (RAM, firmware tables, the MMIO hole).
/// [`crate::identity::map_ram`] extends the map to the RAM the memory map lists above it.
pub const BOOT_MAP_GIB: u64 = 4;

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

    /*
     * Until paging is on, hosts that emulate privileged instructions (PVM) may emulate every
     * memory access too, so this stage touches as little memory as it can: it clears the PML4
     * and the PDPT and maps the first GiB (the image, its stack) with one page directory. The
     * rest of the map and the zeroing of .bss happen in 64-bit code.
     */
    movl $probe_pml4, %edi
    movl $(2 * 4096 / 4), %ecx
    xorl %eax, %eax
    rep stosl

    movl $probe_pd, %eax
    orl $0x3, %eax
    movl %eax, probe_pdpt
    movl $probe_pdpt, %eax
    orl $0x3, %eax
    movl %eax, probe_pml4

    /* 512 entries: present, writable, 2 MiB page (PS). */
    movl $probe_pd, %edi
    movl $0x83, %eax
    movl $512, %ecx
1:
    movl %eax, (%edi)
    movl $0, 4(%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 1b

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
    /* Keep the start-info address (EBX) where CPUID and the loops below cannot clobber it. */
    movl %ebx, %r12d
    /*
     * Zero .bss before the first push (the boot stack is not in it, but Rust statics are).
     * One REP STOSQ: instructions are expensive under PVM, a string operation less so. Large
     * buffers that need no zeroing live in .noinit instead.
     */
    leaq __bss_start(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    shrq $3, %rcx
    xorl %eax, %eax
    rep stosq
    leaq probe_stack_top(%rip), %rsp
    xorl %ebp, %ebp

    /* The rest of the boot map, GiB 1..BOOT_GIB: PDPT entries and 2 MiB pages. */
    leaq probe_pdpt + 8(%rip), %rdi
    leaq probe_pd + 4096(%rip), %rax
    orq $0x3, %rax
    movl ${boot_gib} - 1, %ecx
2:
    movq %rax, (%rdi)
    addq $4096, %rax
    addq $8, %rdi
    loop 2b
    leaq probe_pd + 4096(%rip), %rdi
    movabsq $(0x40000000 | 0x83), %rax
    movl $(({boot_gib} - 1) * 512), %ecx
4:
    movq %rax, (%rdi)
    addq $0x200000, %rax
    addq $8, %rdi
    loop 4b

    movl %r12d, %edi
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

    /* Not zeroed with .bss: built before that, every used entry written explicitly. */
    .section .noinit.probe_tables, "aw", @nobits
    .balign 4096
probe_pml4:
    .skip 4096
probe_pdpt:
    .skip 4096
probe_pd:
    .skip {gib} * 4096

    .section .noinit.probe_stack, "aw", @nobits
    .balign 16
probe_stack:
    .skip 65536
    .global probe_stack_top
probe_stack_top:

    .text
"#,
    code64 = const CODE64_SELECTOR,
    gib = const IDENTITY_MAP_GIB,
    boot_gib = const BOOT_MAP_GIB,
    options(att_syntax)
);
