//! `podvisor --api-socket …`: the process shims spawn, in Cloud Hypervisor's command-line
//! style. Binds the socket first (so `vmm.ping` answers within milliseconds of spawn), starts
//! the `api` thread, runs the control loop on the `vmm` thread and exits with its status once
//! the last reply is flushed.
//!
//! Exit statuses are those of `podvisor run` (see `vmm::exit`): after `vmm.shutdown` 0; when
//! the guest ends the VM by itself, the status of that ending.

// Taking ownership of a listening socket or file passed by the parent as `fd=N` has no safe
// std API; the one unsafe block is in `take_inherited_fd`.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use api_server::{ApiServer, VmmInfo};
use vmm::api::controller::{Controller, Policy};
use vmm::api::events::EventMonitor;
use vmm::api::{ApiHandle, SharedState};
use vmm::exit::{EXIT_INTERNAL_ERROR, EXIT_INVALID_CONFIG};

/// How long replies in flight get to reach their clients before the process exits.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// Errors setting up API mode (exit status 2 for bad arguments, 1 otherwise).
#[derive(Debug, thiserror::Error)]
pub enum ApiModeError {
    #[error("expected PATH, path=PATH or fd=N, got {0:?}")]
    BadTarget(String),
    #[error("fd {0} is not an open descriptor passed to this process")]
    BadFd(RawFd),
    #[error("fd {0} is not a Unix socket")]
    NotASocket(RawFd),
    #[error("cannot bind the API socket {path:?}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?} exists and is not a socket; refusing to replace it")]
    NotSocketPath { path: PathBuf },
    #[error("cannot open the event monitor {path:?}: {source}")]
    Monitor {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no subcommand and no --api-socket: use `podvisor run`, `podvisor measure` or `podvisor --api-socket PATH`")]
    NothingToDo,
    #[error(transparent)]
    Server(#[from] api_server::ServerError),
    #[error("cannot start the vmm thread: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Seccomp(vmm::seccomp::SeccompError),
    #[error(transparent)]
    FdLimit(#[from] vmm::fd_limit::FdLimitError),
}

/// Where something is: a path or a descriptor inherited from the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(PathBuf),
    Fd(RawFd),
}

/// Parses `PATH`, `path=PATH` or `fd=N`.
pub fn parse_target(text: &str) -> Result<Target, ApiModeError> {
    let bad = || ApiModeError::BadTarget(text.to_owned());
    match text.split_once('=') {
        Some(("path", p)) if !p.is_empty() => Ok(Target::Path(PathBuf::from(p))),
        Some(("fd", n)) => n.parse().map(Target::Fd).map_err(|_| bad()),
        Some(_) => Err(bad()),
        None if !text.is_empty() => Ok(Target::Path(PathBuf::from(text))),
        None => Err(bad()),
    }
}

/// The Cloud-Hypervisor-style top-level options.
#[derive(clap::Args, Debug, Default)]
pub struct ApiArgs {
    /// Serve the REST API on this Unix socket: PATH, path=PATH or fd=N (an inherited,
    /// listening socket).
    #[arg(long, value_name = "PATH|path=PATH|fd=N", value_parser = parse_target)]
    api_socket: Option<Target>,
    /// More log output (repeatable: -v debug, -vv trace).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    confinement: crate::confinement::ConfinementArgs,
    /// Write lifecycle events as JSON lines to path=FILE, FILE or fd=N.
    #[arg(long, value_name = "path=FILE|fd=N", value_parser = parse_target)]
    event_monitor: Option<Target>,
}

impl ApiArgs {
    /// The default log filter for the chosen verbosity (`RUST_LOG` still wins).
    pub fn log_filter(&self) -> &'static str {
        match self.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    }
}

pub fn main(args: ApiArgs) -> ExitCode {
    match serve(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("podvisor: error: {e}");
            let code = match e {
                ApiModeError::Server(_) | ApiModeError::Spawn(_) | ApiModeError::Seccomp(_) => {
                    EXIT_INTERNAL_ERROR
                }
                _ => EXIT_INVALID_CONFIG,
            };
            ExitCode::from(code)
        }
    }
}

fn serve(args: ApiArgs) -> Result<u8, ApiModeError> {
    let target = args.api_socket.clone().ok_or(ApiModeError::NothingToDo)?;
    if let (Target::Fd(a), Some(Target::Fd(b))) = (&target, &args.event_monitor) {
        if a == b {
            // One descriptor cannot be both; taking it twice would close it twice.
            return Err(ApiModeError::BadFd(*a));
        }
    }
    let (listener, socket_path) = listen(&target)?;
    let monitor = match &args.event_monitor {
        Some(target) => Some(open_monitor(target)?),
        None => None,
    };
    vmm::fd_limit::apply(
        args.confinement.rlimit_nofile,
        vmm::fd_limit::FdBudget::api_mode().total(),
    )?;
    vmm::seccomp::init(args.confinement.seccomp).map_err(ApiModeError::Seccomp)?;
    args.confinement.enable_landlock();
    let shared = SharedState::new();
    let (tx, rx) = mpsc::channel();
    let backend = Arc::new(ApiHandle::new(tx.clone(), shared.clone()));
    let server = ApiServer::start(listener, backend, vmm_info())?;
    let signals = ApiHandle::new(tx.clone(), shared.clone());
    if let Err(e) = vmm::api::termination::shutdown_on_termination(signals) {
        log::warn!("{e}; SIGINT/SIGTERM will end the process without stopping the VM");
    }
    let controller = Controller::new(
        shared,
        tx,
        rx,
        EventMonitor::new(monitor),
        Policy::default(),
    );
    // Confined before it starts the `vmm` thread, which inherits the filter rather than
    // installing a second copy (the API server's thread already runs under its own).
    vmm::seccomp::enter(vmm::seccomp::Role::Vmm);
    let vmm = std::thread::Builder::new()
        .name("vmm".into())
        .spawn(move || controller.run())
        .map_err(ApiModeError::Spawn)?;
    let code = vmm.join().unwrap_or_else(|_| {
        log::error!("the vmm thread panicked");
        EXIT_INTERNAL_ERROR
    });
    if let Err(e) = server.stop(FLUSH_GRACE) {
        log::warn!("{e}");
    }
    if let Some(path) = socket_path {
        // The socket file is ours; leaving it would only confuse the next spawn.
        let _ = std::fs::remove_file(path);
    }
    Ok(code)
}

// The descriptor budget counts one per API client; it must count as many as are served.
const _: () = assert!(api_server::MAX_CONNECTIONS as u64 == vmm::fd_limit::API_CLIENTS);

fn vmm_info() -> VmmInfo {
    let version = env!("CARGO_PKG_VERSION");
    VmmInfo {
        build_version: format!("v{version}"),
        version: version.to_owned(),
        pid: std::process::id(),
        features: vec!["kvm".to_owned()],
    }
}

/// Binds (or adopts) the API socket; returns the path to remove at exit.
fn listen(target: &Target) -> Result<(UnixListener, Option<PathBuf>), ApiModeError> {
    match target {
        Target::Fd(fd) => {
            let owned = take_inherited_fd(*fd)?;
            let listener = UnixListener::from(owned);
            listener
                .local_addr()
                .map_err(|_| ApiModeError::NotASocket(*fd))?;
            Ok((listener, None))
        }
        Target::Path(path) => {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(ApiModeError::NotSocketPath { path: path.clone() });
                }
                // A stale socket from an earlier run; bind would fail on it.
                let _ = std::fs::remove_file(path);
            }
            let listener = UnixListener::bind(path).map_err(|source| ApiModeError::Bind {
                path: path.clone(),
                source,
            })?;
            Ok((listener, Some(path.clone())))
        }
    }
}

fn open_monitor(target: &Target) -> Result<Box<dyn std::io::Write + Send>, ApiModeError> {
    Ok(match target {
        Target::Fd(fd) => Box::new(File::from(take_inherited_fd(*fd)?)),
        Target::Path(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ApiModeError::Monitor {
                    path: path.clone(),
                    source,
                })?,
        ),
    })
}

/// Takes ownership of descriptor `fd`, which the parent passed on the command line.
fn take_inherited_fd(fd: RawFd) -> Result<OwnedFd, ApiModeError> {
    // Standard streams are never handed over; anything else must be open right now.
    if fd < 3 || std::fs::read_link(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(ApiModeError::BadFd(fd));
    }
    // SAFETY: `fd` is open (checked just above through /proc/self/fd) and was inherited from
    // the parent for this purpose; no other object in this process owns it, and this function
    // is called at most once per command-line option before any other thread exists.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_in_every_spelling() {
        assert_eq!(
            parse_target("/run/a.sock").unwrap(),
            Target::Path("/run/a.sock".into())
        );
        assert_eq!(
            parse_target("path=/run/a.sock").unwrap(),
            Target::Path("/run/a.sock".into())
        );
        assert_eq!(parse_target("fd=7").unwrap(), Target::Fd(7));
        for bad in ["", "fd=x", "path=", "socket=/x"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn standard_streams_and_closed_fds_are_refused() {
        assert!(matches!(take_inherited_fd(0), Err(ApiModeError::BadFd(0))));
        assert!(matches!(
            take_inherited_fd(100_000),
            Err(ApiModeError::BadFd(_))
        ));
    }
}
