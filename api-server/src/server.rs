//! The accept loop and one task per connection, with graceful stop.
//!
//! hyper parses HTTP/1.1 (keep-alive, pipelining, requests split over many writes); this
//! module bounds what a client can hold: the header-read deadline, the body size and the body
//! deadline, and the number of connections. On stop, each connection finishes the request it
//! is answering (so a `vmm.shutdown` reply is flushed before the process exits), then closes.

use std::convert::Infallible;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::fd_reserve::FdReserve;
use crate::reply::{Family, HttpReply};
use crate::routes::{self, Context};
use crate::stream::ApiStream;
use crate::{BODY_LIMIT, MAX_CONNECTIONS, READ_TIMEOUT};

/// Errors reading a request body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {BODY_LIMIT} bytes")]
    TooLarge,
    #[error("request body not received within {READ_TIMEOUT:?}")]
    Timeout,
    #[error("cannot read the request body: {0}")]
    Read(String),
}

/// Serves until `stop` carries a grace period, then drains connections for at most that long.
pub async fn serve(
    listener: StdUnixListener,
    ctx: Context,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("API socket unusable, the API is off: {e}");
            return;
        }
    };
    let ctx = Arc::new(ctx);
    let active = Arc::new(AtomicUsize::new(0));
    let mut reserve = FdReserve::new(&listener);
    let mut tasks = tokio::task::JoinSet::new();
    let grace = loop {
        tokio::select! {
            changed = stop.changed() => {
                match (changed, *stop.borrow()) {
                    (Ok(()), Some(grace)) => break grace,
                    (Ok(()), None) => continue,
                    (Err(_), _) => break Duration::ZERO,
                }
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) if FdReserve::is_exhaustion(&e) && reserve.refuse_one(&listener).await => {
                        continue;
                    }
                    Err(e) => {
                        log::warn!("API accept failed: {e}");
                        // Out of fds or similar: give the system a moment instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    log::warn!("API: {MAX_CONNECTIONS} connections open, refusing another");
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let (ctx, active, stop) = (ctx.clone(), active.clone(), stop.clone());
                tasks.spawn(async move {
                    connection(stream, ctx, stop).await;
                    active.fetch_sub(1, Ordering::Relaxed);
                });
                // Reap finished connection tasks so the set does not grow.
                while tasks.try_join_next().is_some() {}
            }
        }
    };
    drop((listener, reserve));
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        log::debug!("API: closing connections still open after {grace:?}");
    }
    tasks.shutdown().await;
}

async fn connection(
    stream: tokio::net::UnixStream,
    ctx: Arc<Context>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let service = service_fn(move |request| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, request).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .serve_connection(TokioIo::new(ApiStream(stream)), service);
    tokio::pin!(conn);
    let mut stopping = stop.borrow().is_some();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    log::debug!("API connection ended: {e}");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || stop.borrow().is_some() {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// One request: read the bounded body, route, encode.
async fn handle(ctx: &Context, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let family = routes::family_of(path);
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let reply = if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        body_error(family, &BodyError::TooLarge)
    } else {
        match read_body(body).await {
            Ok(bytes) => {
                let query = parts.uri.query().unwrap_or("");
                routes::dispatch(ctx, &parts.method, path, query, &bytes).await
            }
            Err(e) => body_error(family, &e),
        }
    };
    log::debug!("API {} {path} -> {}", parts.method, reply.status);
    encode(reply)
}

async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    // Most requests (every GET) have no body: no deadline timer to arm and cancel for them.
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let collect = Limited::new(body, BODY_LIMIT).collect();
    match tokio::time::timeout(READ_TIMEOUT, collect).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
    }
}

fn body_error(family: Family, error: &BodyError) -> HttpReply {
    let status = match error {
        BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
        BodyError::Read(_) => StatusCode::BAD_REQUEST,
    };
    HttpReply::http_error(family, status, error.to_string())
}

fn encode(reply: HttpReply) -> Response<Full<Bytes>> {
    let has_body = reply.body.is_some();
    let mut response = Response::new(Full::new(Bytes::from(reply.body.unwrap_or_default())));
    *response.status_mut() = reply.status;
    if has_body {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some(allow) = reply.allow {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    response
}
