//! A monotonic clock for scenarios that wait: the KVM paravirtual clock (`kvmclock`, Linux
//! `Documentation/virt/kvm/x86/msr.rst`) when the hypervisor advertises it, else the TSC with its
//! frequency from CPUID leaves 0x15/0x16 or the hypervisor timing leaf 0x40000010.
//!
//! The probe runs with interrupts off and programs no timer device, so it depends on no
//! particular VMM device model for time.
#![allow(unsafe_code)] // reason: the hypervisor writes the kvmclock structure behind Rust's back.

use crate::port::{cpuid, rdtsc, wrmsr};
use core::cell::UnsafeCell;

const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d]; // "KVMKVMKVM\0\0\0"
const KVM_FEATURE_CLOCKSOURCE: u32 = 1 << 0;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

#[derive(Debug, Clone, Copy)]
pub enum ClockError {
    NoSource,
}

impl ClockError {
    pub fn report(&self, out: crate::serial::Out) -> crate::serial::Out {
        match self {
            ClockError::NoSource => {
                out.s("clock: no kvmclock and no TSC frequency in CPUID (0x15, 0x16, 0x40000010)")
            }
        }
    }
}

/// `struct pvclock_vcpu_time_info`, 32 bytes, written by the hypervisor.
#[repr(C, align(64))]
struct PvClockArea(UnsafeCell<[u32; 8]>);

// SAFETY: only the boot CPU runs the probe; the hypervisor is the only other writer and the
// version protocol below tolerates its concurrent updates.
unsafe impl Sync for PvClockArea {}

static PVCLOCK: PvClockArea = PvClockArea(UnsafeCell::new([0; 8]));

fn pvclock_word(index: usize) -> u32 {
    let base = PVCLOCK.0.get() as *const u32;
    // SAFETY: `index < 8` at every call site, inside the static; volatile because the hypervisor
    // updates the structure outside the program's view.
    unsafe { core::ptr::read_volatile(base.add(index)) }
}

/// The time source chosen at start.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    KvmClock,
    Tsc { hz: u64 },
}

fn kvm_features() -> Option<u32> {
    if cpuid(1).ecx & (1 << 31) == 0 {
        return None;
    }
    let leaf = cpuid(0x4000_0000);
    if [leaf.ebx, leaf.ecx, leaf.edx] != KVM_SIGNATURE || leaf.eax < 0x4000_0001 {
        return None;
    }
    Some(cpuid(0x4000_0001).eax)
}

fn tsc_hz() -> Option<u64> {
    let max = cpuid(0).eax;
    if max >= 0x15 {
        let l = cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return Some(u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax));
        }
    }
    if max >= 0x16 {
        let mhz = cpuid(0x16).eax & 0xffff;
        if mhz != 0 {
            return Some(u64::from(mhz) * 1_000_000);
        }
    }
    if cpuid(1).ecx & (1 << 31) != 0 && cpuid(0x4000_0000).eax >= 0x4000_0010 {
        let khz = cpuid(0x4000_0010).eax;
        if khz != 0 {
            return Some(u64::from(khz) * 1000);
        }
    }
    None
}

impl Clock {
    /// Picks and starts a time source.
    pub fn start() -> Result<Self, ClockError> {
        if let Some(features) = kvm_features() {
            let msr = if features & KVM_FEATURE_CLOCKSOURCE2 != 0 {
                Some(MSR_KVM_SYSTEM_TIME_NEW)
            } else if features & KVM_FEATURE_CLOCKSOURCE != 0 {
                Some(MSR_KVM_SYSTEM_TIME)
            } else {
                None
            };
            if let Some(msr) = msr {
                // Bit 0 enables updates; the identity map makes the static's address physical.
                wrmsr(msr, PVCLOCK.0.get() as u64 | 1);
                return Ok(Clock::KvmClock);
            }
        }
        tsc_hz()
            .map(|hz| Clock::Tsc { hz })
            .ok_or(ClockError::NoSource)
    }

    /// Nanoseconds since an arbitrary origin.
    pub fn now_ns(&self) -> u64 {
        match *self {
            Clock::KvmClock => loop {
                let version = pvclock_word(0);
                if version & 1 != 0 {
                    continue;
                }
                let tsc_timestamp = u64::from(pvclock_word(2)) | u64::from(pvclock_word(3)) << 32;
                let system_time = u64::from(pvclock_word(4)) | u64::from(pvclock_word(5)) << 32;
                let mul = pvclock_word(6);
                let shift = (pvclock_word(7) & 0xff) as u8 as i8;
                let tsc = rdtsc();
                if pvclock_word(0) != version {
                    continue;
                }
                let mut delta = tsc.wrapping_sub(tsc_timestamp);
                if shift < 0 {
                    delta >>= u32::from(shift.unsigned_abs()).min(63);
                } else {
                    delta <<= u32::from(shift.unsigned_abs()).min(63);
                }
                let scaled = ((u128::from(delta) * u128::from(mul)) >> 32) as u64;
                break system_time.wrapping_add(scaled);
            },
            Clock::Tsc { hz } => {
                // Split to stay in 64-bit arithmetic (128-bit division is a runtime-library call).
                let hz = hz.max(1);
                let t = rdtsc();
                let (secs, rem) = (t / hz, t % hz);
                secs.wrapping_mul(1_000_000_000)
                    .wrapping_add(rem.saturating_mul(1_000_000_000) / hz)
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Clock::KvmClock => "kvmclock",
            Clock::Tsc { .. } => "tsc",
        }
    }
}
