//! Scenarios: one module each, chosen by `probe.run=NAME` on the command line. A scenario prints
//! its `PROBE-RESULT` lines and says how the run should end; adding one means a module and a
//! line in [`REGISTRY`].

mod agent;
mod blk_bench;
mod blk_common;
mod blk_read;
mod blk_stream;
mod blk_write;
mod boot;
mod fs_bench;
mod fs_rw;
mod hostile;
mod hostile_queues;
mod hotplug;
mod idle;
mod memory;
mod page_fault;
mod pci;
mod pci_fuzz;
mod power_button;
mod poweroff;
mod reboot;
mod rng;
mod serial_echo;
mod smp;
mod triple_fault;
mod vsock_echo;

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
    /// The number `key=N` on the command line, `default` without one, or `None` after
    /// reporting a value that does not parse (the scenario then gives up).
    pub fn number_or(&self, key: &str, default: u64) -> Option<u64> {
        match self.cmdline.number(key) {
            Ok(v) => Some(v.unwrap_or(default)),
            Err(e) => {
                e.report(crate::serial::error().s(key).s(": ")).nl();
                None
            }
        }
    }

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

/// Every scenario the probe knows.
pub static REGISTRY: &[Scenario] = &[
    Scenario {
        name: "boot",
        run: boot::run,
    },
    Scenario {
        name: "poweroff",
        run: poweroff::run,
    },
    Scenario {
        name: "reboot",
        run: reboot::run,
    },
    Scenario {
        name: "triple-fault",
        run: triple_fault::run,
    },
    Scenario {
        name: "page-fault",
        run: page_fault::run,
    },
    Scenario {
        name: "idle",
        run: idle::run,
    },
    Scenario {
        name: "smp",
        run: smp::run,
    },
    Scenario {
        name: "memory",
        run: memory::run,
    },
    Scenario {
        name: "pci",
        run: pci::run,
    },
    Scenario {
        name: "pci-fuzz",
        run: pci_fuzz::run,
    },
    Scenario {
        name: "power-button",
        run: power_button::run,
    },
    Scenario {
        name: "rng",
        run: rng::run,
    },
    Scenario {
        name: "serial-echo",
        run: serial_echo::run,
    },
    Scenario {
        name: "blk-write",
        run: blk_write::run,
    },
    Scenario {
        name: "blk-stream",
        run: blk_stream::run,
    },
    Scenario {
        name: "hostile",
        run: hostile::run,
    },
    Scenario {
        name: "blk-read",
        run: blk_read::run,
    },
    Scenario {
        name: "blk-bench",
        run: blk_bench::run,
    },
    Scenario {
        name: "vsock-echo",
        run: vsock_echo::run,
    },
    Scenario {
        name: "agent",
        run: agent::run,
    },
    Scenario {
        name: "fs-bench",
        run: fs_bench::run,
    },
    Scenario {
        name: "fs-rw",
        run: fs_rw::run,
    },
    Scenario {
        name: "hotplug",
        run: hotplug::run,
    },
];

/// Looks a scenario up by name.
pub fn find(name: &[u8]) -> Option<&'static Scenario> {
    REGISTRY.iter().find(|s| s.name.as_bytes() == name)
}
