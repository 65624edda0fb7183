//! The `signals` thread: waits on the eventfd the SIGINT/SIGTERM handler writes, then asks
//! the VM (run mode) or the control loop (API mode) to stop, which may kick the vCPUs with a
//! signal.

use super::Rules;

pub(super) fn rules() -> Rules {
    let mut r = Rules::default();
    r.allow(&[libc::SYS_read]);
    r
}
