//! SIGINT and SIGTERM in API mode end the process the way `vmm.shutdown` does: the VM is
//! stopped, the event monitor gets its last lines, replies in flight are flushed, status 0.
//!
//! The handler only writes to an eventfd (async-signal-safe); a thread named `signals` waits
//! on it and submits [`Request::VmmShutdown`] to the control loop like any API client.

use super::{ApiHandle, Backend, Request};
use crate::signals::{on_termination, SignalError};

/// Routes SIGINT and SIGTERM to a `vmm.shutdown` for the rest of the process's life.
pub fn shutdown_on_termination(api: ApiHandle) -> Result<(), SignalError> {
    on_termination("shutting down", move || {
        api.submit(
            Request::VmmShutdown,
            Box::new(|result| {
                if let Err(e) = result {
                    log::warn!("shutdown after a signal failed: {e}");
                }
            }),
        );
        true
    })
}
