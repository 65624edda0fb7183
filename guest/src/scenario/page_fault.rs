//! `page-fault`: reads an unmapped address. The page fault must reach the probe's handler, which
//! reports it as `PROBE-ERROR exception vector=14 ... cr2=0x1000000000` and powers off. Checks
//! that exceptions are delivered through the guest's IDT and that a probe fault stays
//! distinguishable from the deliberate triple fault.

use super::Context;
use crate::power::Ending;

pub fn run(_: &Context) -> Ending {
    crate::idt::touch_unmapped();
    Ending::PowerOff
}
