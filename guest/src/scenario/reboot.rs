//! `reboot`: ends the run with a reset request (podvisor exits with 3). `probe.reset=acpi`
//! (default) uses the FADT reset register and falls back to the i8042; `probe.reset=i8042`
//! pulses the i8042 reset line directly, so both reset devices of a VMM can be exercised.

use super::Context;
use crate::power::Ending;
use crate::serial::error;

pub fn run(ctx: &Context) -> Ending {
    match ctx.cmdline.get("probe.reset") {
        None | Some(b"acpi") => Ending::Reboot,
        Some(b"i8042") => Ending::KeyboardReset,
        Some(other) => {
            error()
                .s("probe.reset must be acpi or i8042, not ")
                .bytes(other)
                .nl();
            Ending::PowerOff
        }
    }
}
