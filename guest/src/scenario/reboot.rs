//! `reboot`: ends the run with a reset request — the FADT reset register, then the i8042
//! (podvisor exits with 3).

use super::Context;
use crate::power::Ending;

pub fn run(_: &Context) -> Ending {
    Ending::Reboot
}
