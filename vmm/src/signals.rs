//! SIGINT and SIGTERM stop the VM the same way an API request does, so an interrupted run
//! still stops every vCPU, prints its boot timeline and exits with a documented status.
//!
//! The handler only writes to an eventfd (async-signal-safe); a small thread named
//! `signals` waits on it and forwards the request to the control loop.

use std::sync::OnceLock;

use vmm_sys_util::eventfd::EventFd;

use crate::vm::VmHandle;

static STOP_FD: OnceLock<EventFd> = OnceLock::new();

/// Errors installing the termination handlers.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot create the signal eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("cannot install the handler for signal {signal}: {source}")]
    Handler {
        signal: libc::c_int,
        source: vmm_sys_util::errno::Error,
    },
    #[error("cannot start the signals thread: {0}")]
    Spawn(std::io::Error),
}

extern "C" fn on_terminate(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if let Some(fd) = STOP_FD.get() {
        // Nothing can be done about a failed write inside a signal handler.
        let _ = fd.write(1);
    }
}

/// Routes SIGINT and SIGTERM to `handle.stop()` for the rest of the process's life.
pub fn stop_on_termination(handle: VmHandle) -> Result<(), SignalError> {
    let fd = EventFd::new(0).map_err(SignalError::EventFd)?;
    let reader = fd.try_clone().map_err(SignalError::EventFd)?;
    if STOP_FD.set(fd).is_err() {
        log::debug!("termination signals already routed; keeping the first route");
        return Ok(());
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                match reader.read() {
                    Ok(_) => {
                        log::info!("termination signal received, stopping the VM");
                        if !handle.stop() {
                            break;
                        }
                    }
                    // The handler is installed without SA_RESTART.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("signal eventfd failed, signals no longer stop the VM: {e}");
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
