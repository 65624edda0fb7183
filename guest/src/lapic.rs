//! A periodic local APIC timer tick, so waits can sleep in HLT instead of spinning a host CPU.
//! The tick only wakes the CPU; time itself comes from [`crate::clock`], so the tick rate (which
//! depends on the APIC bus frequency the hypervisor emulates) need not be known.
//!
//! Registers: Intel SDM Vol. 3A §11.4 (base MSR), §11.5.4 (timer), §11.9 (spurious vector).

use crate::identity::write;
use crate::idt::{SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::port::{cpuid, outb, rdmsr};

const IA32_APIC_BASE: u32 = 0x1B;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const REG_EOI: u64 = 0xB0;
const REG_SPURIOUS: u64 = 0xF0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_LVT_LINT0: u64 = 0x350;
const REG_LVT_LINT1: u64 = 0x360;
const REG_INITIAL_COUNT: u64 = 0x380;
const REG_DIVIDE: u64 = 0x3E0;
const SPURIOUS_APIC_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const DIVIDE_BY_1: u32 = 0xB;
/// Initial count per tick: 10 ms at the 1 GHz APIC bus KVM emulates by default.
const TICK_COUNT: u32 = 10_000_000;

/// A running periodic tick; stopped on drop.
pub struct Ticker {
    base: u64,
}

fn reg(base: u64, offset: u64, value: u32) -> bool {
    write(base + offset, 4, u64::from(value)).is_ok()
}

impl Ticker {
    /// Starts the tick, or `None` if the CPU has no enabled local APIC (the caller then spins).
    pub fn start() -> Option<Self> {
        if cpuid(1).edx & (1 << 9) == 0 {
            return None;
        }
        let msr = rdmsr(IA32_APIC_BASE);
        if msr & APIC_BASE_ENABLE == 0 {
            return None;
        }
        let base = msr & 0x000F_FFFF_FFFF_F000;
        // Mask the legacy PICs: the probe programs no legacy interrupt source and their
        // power-on vector base would alias CPU exceptions.
        outb(0x21, 0xFF);
        outb(0xA1, 0xFF);
        crate::idt::set_eoi_address(base + REG_EOI);
        let ok = reg(
            base,
            REG_SPURIOUS,
            SPURIOUS_APIC_ENABLE | u32::from(SPURIOUS_VECTOR),
        ) && reg(base, REG_LVT_LINT0, LVT_MASKED)
            && reg(base, REG_LVT_LINT1, LVT_MASKED)
            && reg(base, REG_DIVIDE, DIVIDE_BY_1)
            && reg(
                base,
                REG_LVT_TIMER,
                LVT_TIMER_PERIODIC | u32::from(TIMER_VECTOR),
            )
            && reg(base, REG_INITIAL_COUNT, TICK_COUNT);
        ok.then_some(Self { base })
    }

    /// Sleeps until the next interrupt (at the latest the next tick).
    pub fn wait(&self) {
        crate::port::wait_for_interrupt();
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        reg(
            self.base,
            REG_LVT_TIMER,
            LVT_MASKED | u32::from(TIMER_VECTOR),
        );
        reg(self.base, REG_INITIAL_COUNT, 0);
    }
}
