//! Waiting for the in-guest agent: `sandbox.start` with `wait_for_agent` answers once the
//! agent's vsock port accepts a connection, measured through the hybrid-vsock Unix socket the
//! way the shim itself will connect (`CONNECT <port>\n`, answered `OK <host port>\n`).
//!
//! A refused or dropped attempt (the guest is still booting, or the agent does not listen
//! yet) is retried every [`RETRY`] until the deadline; each attempt is bounded so a guest that
//! accepts and then stays silent cannot hold the control loop past the deadline.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Pause between attempts.
pub const RETRY: Duration = Duration::from_millis(20);

/// Errors waiting for the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the agent on vsock port {port} did not accept a connection within {waited:?} (last attempt: {last})")]
    Timeout {
        port: u32,
        waited: Duration,
        last: String,
    },
    #[error("the VM ended before the agent on vsock port {port} accepted a connection (last attempt: {last})")]
    VmEnded { port: u32, last: String },
}

/// Connects through `socket` to guest port `port` until the handshake succeeds, `timeout`
/// passes or `vm_alive` says the VM has ended; returns how long it took.
pub fn wait_for_agent(
    socket: &Path,
    port: u32,
    timeout: Duration,
    vm_alive: &dyn Fn() -> bool,
) -> Result<Duration, AgentError> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match attempt(socket, port, left.max(Duration::from_millis(1))) {
            Ok(()) => return Ok(started.elapsed()),
            Err(why) => why,
        };
        if !vm_alive() {
            return Err(AgentError::VmEnded { port, last });
        }
        if Instant::now() + RETRY >= deadline {
            return Err(AgentError::Timeout {
                port,
                waited: started.elapsed(),
                last,
            });
        }
        std::thread::sleep(RETRY);
    }
}

/// One hybrid-vsock handshake; the connection is closed afterwards.
fn attempt(socket: &Path, port: u32, bound: Duration) -> Result<(), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(bound))
        .and_then(|()| stream.set_write_timeout(Some(bound)))
        .map_err(|e| format!("socket options: {e}"))?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| format!("send CONNECT: {e}"))?;
    let mut line = String::new();
    // A short line is all the protocol sends; `take` bounds what a hostile peer can make us
    // buffer.
    BufReader::new(std::io::Read::take(&mut stream, 64))
        .read_line(&mut line)
        .map_err(|e| format!("read answer: {e}"))?;
    match line.strip_prefix("OK ") {
        Some(rest) if rest.trim().parse::<u32>().is_ok() => Ok(()),
        _ if line.is_empty() => Err("connection closed (nobody listening)".into()),
        _ => Err(format!("unexpected answer {:?}", line.trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("podvisor-agent-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A muxer stand-in: refuses (closes) the first `refusals` connections, then answers OK.
    fn fake_muxer(listener: UnixListener, refusals: usize, answer: &'static str) {
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut line = String::new();
                let _ = BufReader::new(&mut stream).read_line(&mut line);
                assert!(line.starts_with("CONNECT 1024"), "{line:?}");
                if n >= refusals {
                    let _ = stream.write_all(answer.as_bytes());
                }
            }
        });
    }

    #[test]
    fn retries_until_the_agent_listens() {
        let d = dir("ok");
        let socket = d.join("vsock.sock");
        fake_muxer(UnixListener::bind(&socket).unwrap(), 3, "OK 1073741824\n");
        let took = wait_for_agent(&socket, 1024, Duration::from_secs(30), &|| true).unwrap();
        assert!(took >= RETRY * 3, "{took:?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn gives_up_at_the_deadline_with_the_last_reason() {
        let d = dir("timeout");
        let socket = d.join("vsock.sock");
        let err = wait_for_agent(&socket, 1024, Duration::from_millis(100), &|| true).unwrap_err();
        assert!(err.to_string().contains("connect"), "{err}");
        let err = wait_for_agent(&socket, 1024, Duration::from_secs(60), &|| false).unwrap_err();
        assert!(matches!(err, AgentError::VmEnded { .. }), "{err}");
        fake_muxer(UnixListener::bind(&socket).unwrap(), 0, "NOPE\n");
        let err = wait_for_agent(&socket, 1024, Duration::from_millis(100), &|| true).unwrap_err();
        assert!(err.to_string().contains("NOPE"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
