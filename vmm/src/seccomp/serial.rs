//! The `serial` role: the `console-in` thread copying host stdin into the UART's receive
//! FIFO (a locked call into the device and an interrupt through its irqfd).

use super::Rules;

pub(super) fn rules() -> Rules {
    let mut r = Rules::default();
    r.allow(&[libc::SYS_read, libc::SYS_poll, libc::SYS_ppoll]);
    r
}
