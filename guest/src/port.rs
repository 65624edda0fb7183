//! x86 port I/O and the few privileged instructions the probe needs.
#![allow(unsafe_code)] // reason: port I/O, HLT, CPUID, RDTSC and MSR access are inline assembly.

use core::arch::asm;

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: a port write has no effect on Rust-visible memory; the probe owns the machine and
    // decides which device registers it touches.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a 16-bit value to an I/O port.
pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads one byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: a port read only writes the output register.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Reads a 32-bit value from an I/O port.
pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `inb`.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Stops this CPU for good: interrupts off, then HLT in a loop (an NMI or SMI would resume it).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI and HLT touch no memory.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Hints the CPU that this is a spin-wait loop.
pub fn spin_hint() {
    core::hint::spin_loop();
}

/// Result of the CPUID instruction.
#[derive(Debug, Clone, Copy)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes CPUID for `leaf` (sub-leaf 0).
pub fn cpuid(leaf: u32) -> Cpuid {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    Cpuid {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: RDTSC only writes EDX:EAX.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register. Callers check (via CPUID) that the MSR exists: writing an
/// unknown one raises #GP, which the exception handler reports as a probe error.
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the MSRs the probe writes (KVM clock) make the hypervisor write guest memory the
    // caller reserved for that purpose; nothing Rust holds a reference to changes behind its back.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags)
        )
    }
}

/// Reads a model-specific register (only architectural ones that always exist).
pub fn rdmsr(msr: u32) -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: RDMSR only writes EDX:EAX; callers pass MSRs that exist on every x86_64 CPU.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Enables interrupts and halts until the next one, then disables them again. STI delays
/// interrupt delivery by one instruction, so no interrupt can slip in before the HLT and leave
/// it sleeping.
pub fn wait_for_interrupt() {
    // SAFETY: the IDT has gates for every interrupt source the probe enables (APIC timer,
    // spurious vector); the handlers save what they use and return with IRETQ.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}
