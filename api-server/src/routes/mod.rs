//! The route table and what every route shares: the [`Context`], command submission, body
//! decoding and long-polling. One file per resource: [`vmm`], [`vm`], [`sandbox`].
//!
//! Every path is `/api/v1/<resource>.<action>`. A known path with the wrong method answers 405
//! with `Allow`; an unknown path 404; neither reaches the VMM.

pub mod sandbox;
pub mod vm;
pub mod vmm;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::reply::{Family, HttpReply};
use crate::VmmInfo;
use ::vmm::api::{ApiError, Backend, ErrorCode, Request, Response, Snapshot};

/// Path prefix of every endpoint.
pub const PREFIX: &str = "/api/v1/";

/// Commands queued for the `vmm` thread beyond which `sandbox.*` answers BUSY.
pub const MAX_QUEUED_COMMANDS: usize = 16;

/// Errors decoding request bodies and queries.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{endpoint}: {why}")]
    BadBody { endpoint: &'static str, why: String },
    #[error("{endpoint}: bad query parameter {key:?}: {why}")]
    BadQuery {
        endpoint: &'static str,
        key: String,
        why: String,
    },
}

impl RouteError {
    pub fn reply(&self, family: Family) -> HttpReply {
        HttpReply::error(
            family,
            &ApiError::new(ErrorCode::InvalidArgument, self.to_string()),
        )
    }
}

/// One endpoint: method and name (the path after [`PREFIX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub name: &'static str,
}

const fn get(name: &'static str) -> Route {
    Route {
        method: "GET",
        name,
    }
}

const fn put(name: &'static str) -> Route {
    Route {
        method: "PUT",
        name,
    }
}

/// Every route the server answers, for the spec consistency check.
pub fn all() -> Vec<Route> {
    [vmm::ROUTES, vm::ROUTES, sandbox::ROUTES].concat()
}

/// What route handlers need.
pub struct Context {
    pub backend: Arc<dyn Backend>,
    pub info: VmmInfo,
    /// Woken after every state change the VMM publishes.
    changed: Arc<Notify>,
    queued: AtomicUsize,
}

impl Context {
    pub fn new(backend: Arc<dyn Backend>, info: VmmInfo) -> Self {
        let changed = Arc::new(Notify::new());
        let waker = changed.clone();
        backend
            .shared()
            .subscribe(Box::new(move || waker.notify_waiters()));
        Self {
            backend,
            info,
            changed,
            queued: AtomicUsize::new(0),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.backend.snapshot()
    }

    /// Sends `request` to the `vmm` thread and awaits its answer without blocking other
    /// connections.
    pub async fn submit(&self, request: Request) -> Result<Response, ApiError> {
        let name = request.name();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.backend.submit(
            request,
            Box::new(move |result| {
                // The connection may have gone away; the command still ran.
                let _ = tx.send(result);
            }),
        );
        let result = rx.await.unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::Internal,
                format!("{name}: the VMM dropped the request"),
            ))
        });
        self.queued.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Commands sent and not yet answered.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Re-evaluates `check` after every published change until it yields a value or
    /// `timeout` passes (then `None`). Holds no lock while waiting.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout.min(crate::MAX_POLL);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before checking, so a change between check and await is not lost.
            notified.as_mut().enable();
            if let Some(value) = check() {
                return Some(value);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// The error style of `path`.
pub fn family_of(path: &str) -> Family {
    if path.starts_with("/api/v1/sandbox.") {
        Family::Sandbox
    } else {
        Family::CloudHypervisor
    }
}

/// Routes one request.
pub async fn dispatch(
    ctx: &Context,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> HttpReply {
    let family = family_of(path);
    let name = path.strip_prefix(PREFIX).unwrap_or("");
    let routes = all();
    let Some(route) = routes.iter().find(|r| r.name == name) else {
        return HttpReply::http_error(
            family,
            StatusCode::NOT_FOUND,
            format!("no endpoint at {path:?}"),
        );
    };
    if route.method != method.as_str() {
        return HttpReply {
            allow: Some(route.method),
            ..HttpReply::http_error(
                family,
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{name} takes {}, not {method}", route.method),
            )
        };
    }
    let call = Call {
        ctx,
        name: route.name,
        query,
        body,
    };
    if name.starts_with("vmm.") {
        vmm::handle(call).await
    } else if name.starts_with("vm.") {
        vm::handle(call).await
    } else {
        sandbox::handle(call).await
    }
}

/// One routed request.
pub struct Call<'a> {
    pub ctx: &'a Context,
    pub name: &'static str,
    pub query: &'a str,
    pub body: &'a [u8],
}

impl Call<'_> {
    /// The body as `T`; unknown keys and `null`s are ignored; an empty body is an error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, RouteError> {
        ::vmm::api::config::from_json(self.body).map_err(|e| RouteError::BadBody {
            endpoint: self.name,
            why: e.to_string(),
        })
    }

    /// Like [`Call::json`], but an empty body means `T::default()`.
    pub fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, RouteError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        self.json()
    }

    /// `key=value` pairs of the query string, values as unsigned numbers.
    pub fn query_u64(&self, key: &str) -> Result<Option<u64>, RouteError> {
        let Some(value) = self
            .query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
        else {
            return Ok(None);
        };
        value
            .parse()
            .map(Some)
            .map_err(|e: std::num::ParseIntError| RouteError::BadQuery {
                endpoint: self.name,
                key: key.to_owned(),
                why: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests;
