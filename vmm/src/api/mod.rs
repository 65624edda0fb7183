//! The VMM's side of the REST API: what a client may ask ([`Request`]), what it gets back
//! ([`Response`], [`ApiError`]), the state snapshot reads are answered from ([`state`]) and the
//! control loop that serializes every state change ([`controller`]).
//!
//! ```text
//! api thread ──Request + reply callback──► channel ──► vmm thread (controller::run)
//!     ▲                                                    │ Vm::build, Vm::run on `vm`
//!     └──── Snapshot (Arc swap, read without waiting) ◄────┘ publishes every change
//! ```
//!
//! Reads never enter the channel: the API thread clones the latest [`state::Snapshot`] behind
//! a briefly held lock, so `vmm.ping` and `vm.info` answer while a boot is in flight. The HTTP
//! side lives in the `api-server` crate; it only sees the [`Backend`] trait, which tests fake.

pub mod agent;
pub mod confidential;
pub mod config;
pub mod controller;
pub mod devices;
pub mod events;
pub mod sandbox;
pub mod state;
pub mod termination;

use std::sync::mpsc::Sender;
use std::sync::Arc;

use serde::Serialize;

pub use state::{SharedState, Snapshot, VmState};

/// A state-changing command, executed in order by the `vmm` thread.
#[derive(Debug)]
pub enum Request {
    VmCreate(Box<config::ApiVmConfig>),
    VmBoot,
    VmShutdown,
    VmReboot,
    VmPause,
    VmResume,
    VmDelete,
    VmPowerButton,
    VmAddDisk(devices::ApiDiskConfig),
    VmAddFs(devices::ApiFsConfig),
    VmAddVsock(devices::ApiVsockConfig),
    VmRemoveDevice(String),
    VmmShutdown,
    SandboxCreate(Box<sandbox::SandboxSpec>),
    SandboxStart(sandbox::StartOptions),
    SandboxStop,
    SandboxShutdown,
}

impl Request {
    /// The endpoint name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::VmCreate(_) => "vm.create",
            Request::VmBoot => "vm.boot",
            Request::VmShutdown => "vm.shutdown",
            Request::VmReboot => "vm.reboot",
            Request::VmPause => "vm.pause",
            Request::VmResume => "vm.resume",
            Request::VmDelete => "vm.delete",
            Request::VmPowerButton => "vm.power-button",
            Request::VmAddDisk(_) => "vm.add-disk",
            Request::VmAddFs(_) => "vm.add-fs",
            Request::VmAddVsock(_) => "vm.add-vsock",
            Request::VmRemoveDevice(_) => "vm.remove-device",
            Request::VmmShutdown => "vmm.shutdown",
            Request::SandboxCreate(_) => "sandbox.create",
            Request::SandboxStart(_) => "sandbox.start",
            Request::SandboxStop => "sandbox.stop",
            Request::SandboxShutdown => "sandbox.shutdown",
        }
    }
}

/// A successful answer: nothing (HTTP 204) or a JSON body (HTTP 200).
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Empty,
    Json(serde_json::Value),
}

/// Error classes with stable names; the HTTP layer maps them to status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request itself is wrong (bad JSON, bad value).
    InvalidArgument,
    /// Valid, but not in the VM's current state (boot before create, create twice).
    InvalidState,
    /// Nothing of that name exists.
    NotFound,
    /// Another command holds the VMM; try again.
    Busy,
    /// A bounded wait ran out.
    Timeout,
    /// This build has no such device or feature.
    Unsupported,
    /// The VMM failed.
    Internal,
}

/// A failed request: a stable code, a message and the chain of causes (outermost first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub causes: Vec<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// An error whose causes are read from `source`'s `Error::source` chain.
    pub fn with_source(
        code: ErrorCode,
        message: impl Into<String>,
        source: &dyn std::error::Error,
    ) -> Self {
        let mut causes = vec![source.to_string()];
        let mut next = source.source();
        while let Some(e) = next {
            causes.push(e.to_string());
            next = e.source();
        }
        Self {
            code,
            message: message.into(),
            causes,
        }
    }

    /// The message followed by its causes, as Cloud Hypervisor's error bodies list them.
    pub fn chain(&self) -> Vec<String> {
        let mut all = vec![self.message.clone()];
        all.extend(self.causes.iter().cloned());
        all
    }
}

/// Called once with the result of a [`Request`]; runs on the `vmm` thread, so it must only
/// hand the result over (e.g. complete a channel), never block.
pub type Reply = Box<dyn FnOnce(Result<Response, ApiError>) + Send>;

/// What the HTTP server needs from the VMM; the real one is [`ApiHandle`].
pub trait Backend: Send + Sync + 'static {
    /// The latest published state; never waits for a command in flight.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// Queues a command for the `vmm` thread; `reply` is called when it is done.
    fn submit(&self, request: Request, reply: Reply);
    /// The shared state, for long-polls (events, wait) and change notification.
    fn shared(&self) -> &Arc<SharedState>;
}

/// What the `vmm` thread's channel carries.
pub enum ControlMsg {
    Api(Request, Reply),
    /// The `vm` thread finished `Vm::run` for the VM of the given generation.
    VmEnded {
        generation: u64,
        result: Result<crate::exit::ExitReason, String>,
    },
}

/// The API thread's handle on the `vmm` thread.
#[derive(Clone)]
pub struct ApiHandle {
    tx: Sender<ControlMsg>,
    shared: Arc<SharedState>,
}

impl ApiHandle {
    pub fn new(tx: Sender<ControlMsg>, shared: Arc<SharedState>) -> Self {
        Self { tx, shared }
    }
}

impl Backend for ApiHandle {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot()
    }

    fn submit(&self, request: Request, reply: Reply) {
        if let Err(std::sync::mpsc::SendError(ControlMsg::Api(request, reply))) =
            self.tx.send(ControlMsg::Api(request, reply))
        {
            reply(Err(ApiError::new(
                ErrorCode::Internal,
                format!("{}: the VMM control loop has stopped", request.name()),
            )));
        }
    }

    fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }
}
