//! `poweroff`: does nothing but end the run with an ACPI power-off (podvisor exits with 0).

use super::Context;
use crate::power::Ending;

pub fn run(_: &Context) -> Ending {
    Ending::PowerOff
}
