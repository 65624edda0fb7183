//! `triple-fault`: ends the run with a deliberate triple fault — an empty IDT, then an
//! exception (podvisor exits with 4).

use super::Context;
use crate::power::Ending;

pub fn run(_: &Context) -> Ending {
    Ending::TripleFault
}
