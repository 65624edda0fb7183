//! Telling a client the process is out of descriptors instead of leaving it in the backlog.
//!
//! When `accept` fails with `EMFILE` the waiting client stays queued in the kernel, unanswered,
//! and the listener stays readable. The server keeps one descriptor in reserve: on `EMFILE` it
//! gives it up, accepts the client with it, answers `503` with a JSON error (Cloud
//! Hypervisor's style: a list of messages) and closes, then takes the reserve back. Other
//! clients and the VM are not affected; once descriptors free up, requests succeed again.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use tokio::net::UnixListener;

/// The reply to a client that could not be served for want of a descriptor.
const EXHAUSTED_REPLY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/json\r\n\
Content-Length: 55\r\n\
Connection: close\r\n\r\n\
[\"the VMM is out of file descriptors (RLIMIT_NOFILE)\"]\n";

/// A descriptor held back for [`FdReserve::refuse_one`]: a duplicate of the listener, which
/// needs no path (so Landlock cannot refuse it) and no system call beyond `fcntl`.
pub struct FdReserve(Option<OwnedFd>);

impl FdReserve {
    pub fn new(listener: &UnixListener) -> Self {
        Self(Self::take(listener))
    }

    fn take(listener: &UnixListener) -> Option<OwnedFd> {
        listener.as_fd().try_clone_to_owned().ok()
    }

    /// Whether `e` says the process (or the system) ran out of descriptors.
    pub fn is_exhaustion(e: &io::Error) -> bool {
        // EMFILE (24): this process; ENFILE (23): the whole system.
        matches!(e.raw_os_error(), Some(24) | Some(23))
    }

    /// Frees the reserve, accepts one waiting client, answers it 503 and closes it, then
    /// takes the reserve back. False if there was no reserve to give up.
    pub async fn refuse_one(&mut self, listener: &UnixListener) -> bool {
        if self.0.take().is_none() {
            self.0 = Self::take(listener);
            return false;
        }
        if let Ok((stream, _)) = listener.accept().await {
            // A fresh socket's send buffer takes the whole reply; a client that cannot take
            // it loses only its own answer.
            let _ = stream.try_write(EXHAUSTED_REPLY);
            log::warn!("API: out of file descriptors, a client got 503");
        }
        self.0 = Self::take(listener);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_is_well_formed_http() {
        let text = std::str::from_utf8(EXHAUSTED_REPLY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let parsed: Vec<String> = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.len(), 1);
    }
}
