//! HTTP/1.1 REST API on a Unix socket, compatible with Cloud Hypervisor's, plus the pod-sandbox
//! layer. Requests become `vmm` commands; nothing here touches the VM directly.
//!
//! Where it sits (design.md § Threads, data flow 1): the `api` thread runs a small
//! current-thread tokio runtime with hyper's HTTP/1 server. Each connection is its own task,
//! so a slow or idle client never holds up another. A route either answers from the VMM's
//! published snapshot ([`vmm::api::Snapshot`]: `vmm.ping`, `vm.info`, `vm.counters`,
//! `sandbox.status`/`wait`/`events`/...) — never waiting for a command in flight — or turns
//! the request into a [`vmm::api::Request`] for the `vmm` thread and awaits its reply.
//!
//! Client input is hostile: bodies are bounded ([`BODY_LIMIT`]) and read under a deadline,
//! JSON is decoded into typed values (unknown keys and `null`s ignored), and every failure is
//! an HTTP error with a body, never a panic or a hang. Cloud Hypervisor endpoints answer
//! errors as a JSON array of strings (the message, then its causes); `sandbox.*` endpoints
//! answer `{"code", "message", "causes"}` with a stable code.

mod fd_reserve;
mod reply;
pub mod routes;
mod server;
mod stream;

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

pub use reply::HttpReply;

/// Largest request body accepted (a `VmConfig` is a few KiB).
pub const BODY_LIMIT: usize = 1 << 20;
/// Time a client gets to send a request's headers, then its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a long-poll (`sandbox.wait`, `sandbox.events`) is held open.
pub const MAX_POLL: Duration = Duration::from_secs(300);
/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 256;

/// Errors starting or stopping the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot build the API runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot use the API socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot start the api thread: {0}")]
    Spawn(std::io::Error),
    #[error("the api thread panicked")]
    Panicked,
}

/// What `vmm.ping` reports about this build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmmInfo {
    pub build_version: String,
    pub version: String,
    pub pid: u32,
    pub features: Vec<String>,
}

/// The running `api` thread.
pub struct ApiServer {
    /// `Some(grace)` asks the thread to stop.
    stop: watch::Sender<Option<Duration>>,
    thread: JoinHandle<()>,
}

impl ApiServer {
    /// Serves `listener` on a new thread named `api` until [`ApiServer::stop`].
    pub fn start(
        listener: UnixListener,
        backend: Arc<dyn vmm::api::Backend>,
        info: VmmInfo,
    ) -> Result<Self, ServerError> {
        listener
            .set_nonblocking(true)
            .map_err(ServerError::Socket)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ServerError::Runtime)?;
        let (stop, stopped) = watch::channel(None);
        let ctx = routes::Context::new(backend, info);
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                vmm::seccomp::enter(vmm::seccomp::Role::Api);
                runtime.block_on(server::serve(listener, ctx, stopped))
            })
            .map_err(ServerError::Spawn)?;
        Ok(Self { stop, thread })
    }

    /// Stops accepting, lets requests in flight finish (their replies are flushed) for up to
    /// `grace`, then closes every connection and joins the thread.
    pub fn stop(self, grace: Duration) -> Result<(), ServerError> {
        // The receiver lives as long as the thread; if it is gone the thread has ended.
        let _ = self.stop.send(Some(grace));
        self.thread.join().map_err(|_| ServerError::Panicked)
    }
}
