//! SIGINT and SIGTERM end the run the same way a request does: in `podvisor run` they stop the
//! VM (every vCPU stops, the boot timeline is printed, the exit status is documented); in API
//! mode they become a `vmm.shutdown`.
//!
//! The handler only writes to an eventfd (async-signal-safe); a small thread named `signals`
//! waits on it and runs the caller's action outside signal context.

use std::sync::OnceLock;

use vmm_sys_util::eventfd::EventFd;

use crate::vm::VmHandle;

static TERMINATE_FD: OnceLock<EventFd> = OnceLock::new();

/// Errors installing the termination handlers.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
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

/// Runs `action` on the `signals` thread each time SIGINT or SIGTERM arrives, for the rest of
/// the process's life or until `action` returns false. `what` names the action in logs.
/// One route per process: a second call answers [`SignalError::AlreadyRouted`].
pub fn on_termination<F>(what: &'static str, mut action: F) -> Result<(), SignalError>
where
    F: FnMut() -> bool + Send + 'static,
{
    let fd = EventFd::new(0).map_err(SignalError::EventFd)?;
    let reader = fd.try_clone().map_err(SignalError::EventFd)?;
    TERMINATE_FD
        .set(fd)
        .map_err(|_| SignalError::AlreadyRouted)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            crate::seccomp::enter(crate::seccomp::Role::Signals);
            loop {
                match reader.read() {
                    Ok(_) => {
                        log::info!("termination signal received, {what}");
                        if !action() {
                            break;
                        }
                    }
                    // The handler is installed without SA_RESTART.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("signal eventfd failed, signals no longer end the run: {e}");
                        break;
                    }
                }
            }
        })
        .map_err(SignalError::Spawn)?;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        vmm_sys_util::signal::register_signal_handler(signal, on_terminate)
            .map_err(|source| SignalError::Handler { signal, source })?;
    }
    Ok(())
}

/// Routes SIGINT and SIGTERM to `handle.stop()`; the route ends once the VM is torn down.
pub fn stop_on_termination(handle: VmHandle) -> Result<(), SignalError> {
    on_termination("stopping the VM", move || handle.stop())
}
