//! Ending the run: ACPI power-off, reset, or a deliberate triple fault, each preceded by the
//! final boot-progress marker. If a request does not take effect the probe says so and halts.

use crate::acpi::{self, AcpiError, Fadt, Gas, Tables};
use crate::identity::MEMORY;
use crate::port::{outb, outl, outw};
use crate::serial::{error, out};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// PM1 control: SLP_TYPx is bits 10-12, SLP_EN bit 13 (ACPI 6.5 §4.8.4.2.1).
const PM1_SLP_TYP_SHIFT: u32 = 10;
const PM1_SLP_EN: u64 = 1 << 13;
/// Sleep control register: SLP_TYPx is bits 2-4, SLP_EN bit 5 (ACPI 6.5 §4.8.3.7).
const SLEEP_CTL_SLP_TYP_SHIFT: u32 = 2;
const SLEEP_CTL_SLP_EN: u64 = 1 << 5;
/// i8042 command port and its "pulse reset line" command.
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xFE;
/// Busy-wait iterations after a request before declaring that it did not take effect. The
/// register write traps to the VMM synchronously, so a working VMM never lets us get here.
const SETTLE_SPINS: u32 = 1_000_000;

/// The RSDP address from the start info, kept for [`abort`] (0: scan the BIOS area).
static RSDP_HINT: AtomicU64 = AtomicU64::new(0);
/// Set by the first [`abort`]; a fatal error while aborting halts instead of recursing.
static ABORTING: AtomicBool = AtomicBool::new(false);

/// Remembers where the ACPI tables are for [`abort`].
pub fn remember_rsdp(hint: u64) {
    RSDP_HINT.store(hint, Ordering::SeqCst);
}

/// Ends the run after a fatal error (exception, panic) that was already reported as a
/// `PROBE-ERROR`: powers off, so a test sees the failure at once instead of at its timeout.
pub fn abort() -> ! {
    if ABORTING.swap(true, Ordering::SeqCst) {
        crate::port::halt_forever()
    }
    finish(Ending::PowerOff, RSDP_HINT.load(Ordering::SeqCst))
}

/// How a scenario wants the run to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    PowerOff,
    /// FADT reset register, falling back to the i8042.
    Reboot,
    /// The i8042 reset line only.
    KeyboardReset,
    TripleFault,
}

#[derive(Debug, Clone, Copy)]
pub enum PowerError {
    Acpi(AcpiError),
    NoSleepRegister,
    NoResetRegister,
    UnsupportedSpace(u8),
    Register(crate::phys::PhysError),
}

impl PowerError {
    fn report(&self, o: crate::serial::Out) -> crate::serial::Out {
        match *self {
            PowerError::Acpi(e) => e.report(o),
            PowerError::NoSleepRegister => o.s("the FADT names no sleep or PM1 control register"),
            PowerError::NoResetRegister => o.s("the FADT names no reset register"),
            PowerError::UnsupportedSpace(s) => o
                .s("register in unsupported address space ")
                .dec(u64::from(s)),
            PowerError::Register(e) => e.report(o),
        }
    }
}

impl From<AcpiError> for PowerError {
    fn from(e: AcpiError) -> Self {
        PowerError::Acpi(e)
    }
}

/// Writes `value` to the register a GAS names (I/O or memory space).
fn write_gas(gas: &Gas, value: u64) -> Result<(), PowerError> {
    let width = gas.width();
    match gas.space {
        acpi::SPACE_IO => {
            let port =
                u16::try_from(gas.address).map_err(|_| PowerError::UnsupportedSpace(gas.space))?;
            match width {
                1 => outb(port, value as u8),
                2 => outw(port, value as u16),
                _ => outl(port, value as u32),
            }
            Ok(())
        }
        acpi::SPACE_MEMORY => {
            crate::identity::write(gas.address, width, value).map_err(PowerError::Register)
        }
        other => Err(PowerError::UnsupportedSpace(other)),
    }
}

fn fadt(rsdp_hint: u64) -> Result<Fadt, PowerError> {
    let tables = Tables::discover(&MEMORY, rsdp_hint)?;
    Ok(Fadt::parse(&tables.find(b"FACP")?))
}

fn request_power_off(rsdp_hint: u64) -> Result<(), PowerError> {
    let fadt = fadt(rsdp_hint)?;
    let dsdt = acpi::Table::read(&MEMORY, fadt.dsdt, Some(b"DSDT"))?;
    let slp_typ = u64::from(acpi::s5_sleep_type(&dsdt)?);
    out().s("probe: ACPI power-off, SLP_TYP=").dec(slp_typ).nl();
    crate::marker::write(crate::marker::ENDING);
    if fadt.flags & acpi::FLAG_HW_REDUCED_ACPI != 0 {
        let reg = fadt.sleep_control.ok_or(PowerError::NoSleepRegister)?;
        write_gas(
            &reg,
            (slp_typ << SLEEP_CTL_SLP_TYP_SHIFT) | SLEEP_CTL_SLP_EN,
        )
    } else {
        let value = (slp_typ << PM1_SLP_TYP_SHIFT) | PM1_SLP_EN;
        let pm1a = fadt.pm1a_cnt.ok_or(PowerError::NoSleepRegister)?;
        write_gas(&pm1a, value)?;
        if let Some(pm1b) = fadt.pm1b_cnt {
            write_gas(&pm1b, value)?;
        }
        Ok(())
    }
}

fn request_reset(rsdp_hint: u64) -> Result<(), PowerError> {
    let fadt = fadt(rsdp_hint)?;
    match fadt.reset_reg {
        Some(reg) if fadt.flags & acpi::FLAG_RESET_REG_SUP != 0 => {
            out()
                .s("probe: ACPI reset, RESET_VALUE=")
                .hex(u64::from(fadt.reset_value))
                .nl();
            crate::marker::write(crate::marker::ENDING);
            write_gas(&reg, u64::from(fadt.reset_value))
        }
        _ => Err(PowerError::NoResetRegister),
    }
}

fn settle() {
    for _ in 0..SETTLE_SPINS {
        crate::port::spin_hint();
    }
}

/// Ends the run as asked. Never returns: if the request has no effect, the probe reports a
/// `PROBE-ERROR` and halts with interrupts off.
pub fn finish(ending: Ending, rsdp_hint: u64) -> ! {
    match ending {
        Ending::PowerOff => match request_power_off(rsdp_hint) {
            Ok(()) => {
                settle();
                error().s("ACPI power-off request did not take effect").nl();
            }
            Err(e) => e.report(error().s("cannot power off: ")).nl(),
        },
        Ending::Reboot | Ending::KeyboardReset => {
            if ending == Ending::Reboot {
                match request_reset(rsdp_hint) {
                    Ok(()) => settle(),
                    Err(e) => e
                        .report(out().s("probe: no ACPI reset register ("))
                        .s(")")
                        .nl(),
                }
            }
            out().s("probe: i8042 reset").nl();
            crate::marker::write(crate::marker::ENDING);
            outb(I8042_COMMAND, I8042_RESET);
            settle();
            error().s("reset request did not take effect").nl();
        }
        Ending::TripleFault => {
            out().s("probe: triple fault").nl();
            crate::marker::write(crate::marker::ENDING);
            crate::idt::load_empty();
            crate::idt::raise_invalid_opcode();
            error().s("triple fault did not end the machine").nl();
        }
    }
    crate::port::halt_forever()
}
