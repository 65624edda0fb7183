//! Scenarios: one module each, chosen by `probe.run=NAME` on the command line. A scenario prints
//! its `PROBE-RESULT` lines and says how the run should end; adding one means a module and a
//! line in [`REGISTRY`].

mod boot;
mod idle;
mod smp;

use crate::cmdline::Cmdline;
use crate::power::Ending;
use crate::start_info::StartInfo;

/// What a scenario gets to work with.
pub struct Context<'a> {
    /// `None` if the start info was unusable (already reported as a `PROBE-ERROR`).
    pub start_info: Option<StartInfo<'static>>,
    pub cmdline: &'a Cmdline,
}

impl Context<'_> {
    /// The RSDP address from the start info, 0 if unknown (ACPI then scans the BIOS area).
    pub fn rsdp_hint(&self) -> u64 {
        self.start_info.map_or(0, |s| s.rsdp_paddr)
    }
}

/// A named scenario.
pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&Context) -> Ending,
}

fn poweroff(_: &Context) -> Ending {
    Ending::PowerOff
}

fn reboot(_: &Context) -> Ending {
    Ending::Reboot
}

fn triple_fault(_: &Context) -> Ending {
    Ending::TripleFault
}

/// Reads an unmapped address: the page fault must reach the probe's handler, which reports it
/// as `PROBE-ERROR exception vector=14 ... cr2=0x...` and powers off. Checks that exceptions
/// are delivered through the guest's IDT and that probe faults stay distinguishable from the
/// deliberate triple fault.
fn page_fault(_: &Context) -> Ending {
    crate::idt::touch_unmapped();
    Ending::PowerOff
}

/// Every scenario the probe knows.
pub static REGISTRY: &[Scenario] = &[
    Scenario {
        name: "boot",
        run: boot::run,
    },
    Scenario {
        name: "poweroff",
        run: poweroff,
    },
    Scenario {
        name: "reboot",
        run: reboot,
    },
    Scenario {
        name: "triple-fault",
        run: triple_fault,
    },
    Scenario {
        name: "page-fault",
        run: page_fault,
    },
    Scenario {
        name: "idle",
        run: idle::run,
    },
    Scenario {
        name: "smp",
        run: smp::run,
    },
];

/// Looks a scenario up by name.
pub fn find(name: &[u8]) -> Option<&'static Scenario> {
    REGISTRY.iter().find(|s| s.name.as_bytes() == name)
}
