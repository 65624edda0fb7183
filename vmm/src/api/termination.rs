//! SIGINT and SIGTERM in API mode end the process the way `vmm.shutdown` does: the VM is
//! stopped, the event monitor gets its last lines, replies in flight are flushed, status 0.
//!
//! The handler only writes to an eventfd (async-signal-safe); a thread named `signals` waits
//! on it and submits [`Request::VmmShutdown`] to the control loop like any API client.

use std::sync::OnceLock;

use vmm_sys_util::eventfd::EventFd;

use super::{ApiHandle, Backend, Request};

static TERMINATE_FD: OnceLock<EventFd> = OnceLock::new();

/// Errors installing the handlers.
#[derive(Debug, thiserror::Error)]
pub enum TerminationError {
    #[error("cannot create the signal eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("termination signals are already routed elsewhere in this process")]
    AlreadyRouted,
    #[error("cannot install the handler for signal {signal}: {source}")]
    Handler {
        signal: libc::c_int,
        source: vmm_sys_util::errno::Error,
    },
    #[error("cannot start the signals thread: {0}")]
    Spawn(std::io::Error),
}

extern "C" fn on_terminate(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if let Some(fd) = TERMINATE_FD.get() {
        // Nothing can be done about a failed write inside a signal handler.
        let _ = fd.write(1);
    }
}

/// Routes SIGINT and SIGTERM to a `vmm.shutdown` for the rest of the process's life.
pub fn shutdown_on_termination(api: ApiHandle) -> Result<(), TerminationError> {
    let fd = EventFd::new(0).map_err(TerminationError::EventFd)?;
    let reader = fd.try_clone().map_err(TerminationError::EventFd)?;
    TERMINATE_FD
        .set(fd)
        .map_err(|_| TerminationError::AlreadyRouted)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            match reader.read() {
                Ok(_) => {
                    log::info!("termination signal received, shutting down");
                    api.submit(
                        Request::VmmShutdown,
                        Box::new(|result| {
                            if let Err(e) = result {
                                log::warn!("shutdown after a signal failed: {e}");
                            }
                        }),
                    );
                }
                // The handler is installed without SA_RESTART.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("signal eventfd failed, signals no longer shut down: {e}");
                    break;
                }
            }
        })
        .map_err(TerminationError::Spawn)?;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        vmm_sys_util::signal::register_signal_handler(signal, on_terminate)
            .map_err(|source| TerminationError::Handler { signal, source })?;
    }
    Ok(())
}
