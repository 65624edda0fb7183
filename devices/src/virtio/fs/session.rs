//! One vhost-user connection to a file-system backend (`virtiofsd`), driven with the `vhost`
//! crate's front end.
//!
//! The session is opened and negotiated when the device is created, before the guest runs, so
//! a missing socket or a process that does not speak vhost-user is a configuration error, not
//! a surprise at the guest's first request. On activation it hands the backend what it needs
//! to run the queues itself — the memory table (the RAM's file descriptors), each ring's host
//! addresses and its kick and call eventfds — and on reset it takes the rings back.
//!
//! Every read on the socket has a timeout: a backend that stops answering fails the device
//! instead of hanging the vCPU that wrote `DRIVER_OK`.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::super::{ActiveQueue, GuestMemory as Memory, F_VERSION_1};

/// How long the front end waits for any one answer from the backend.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol features the front end can use; the rest are never acknowledged.
fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

/// Errors talking to the backend.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up the socket: {0}")]
    Socket(std::io::Error),
    #[error("{op}: {source}")]
    Protocol {
        op: &'static str,
        source: vhost::Error,
    },
    #[error("the backend does not offer VIRTIO_F_VERSION_1 (features {0:#x})")]
    NotModern(u64),
    #[error("the backend serves {have} queues, the device needs {need}")]
    TooFewQueues { have: u64, need: u64 },
    #[error(
        "guest RAM region at {0:#x} is not backed by a file (start the VM with shared memory)"
    )]
    PrivateMemory(u64),
    #[error("queue {0} lies outside guest RAM")]
    QueueOutsideRam(u16),
}

fn protocol(op: &'static str) -> impl FnOnce(vhost::Error) -> SessionError {
    move |source| SessionError::Protocol { op, source }
}

/// A negotiated connection.
pub struct Session {
    frontend: Frontend,
    /// A second handle on the socket, watched for the backend hanging up.
    watch: UnixStream,
    /// The backend's virtio features (vhost-user's own bit 30 included).
    backend_features: u64,
    /// Whether `VHOST_USER_F_PROTOCOL_FEATURES` is in use (rings then need `SET_VRING_ENABLE`).
    protocol_features: bool,
}

impl Session {
    /// Connects to `path` and negotiates features for a device with `queues` queues.
    pub fn connect(path: &Path, queues: u16) -> Result<Self, SessionError> {
        let stream = UnixStream::connect(path).map_err(|source| SessionError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(SessionError::Socket)?;
        Self::from_stream(stream, queues)
    }

    /// Negotiates over an already connected `stream` (what [`Self::connect`] does after
    /// connecting); everything the backend answers is untrusted input.
    pub fn from_stream(stream: UnixStream, queues: u16) -> Result<Self, SessionError> {
        let watch = stream.try_clone().map_err(SessionError::Socket)?;
        let mut frontend = Frontend::from_stream(stream, u64::from(queues));
        frontend.set_owner().map_err(protocol("SET_OWNER"))?;
        let backend_features = frontend.get_features().map_err(protocol("GET_FEATURES"))?;
        if backend_features & F_VERSION_1 == 0 {
            return Err(SessionError::NotModern(backend_features));
        }
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let protocol_features = backend_features & protocol_bit != 0;
        if protocol_features {
            // GET_PROTOCOL_FEATURES is only valid once the bit was seen in GET_FEATURES.
            let offered = frontend
                .get_protocol_features()
                .map_err(protocol("GET_PROTOCOL_FEATURES"))?;
            let acked = offered & wanted_protocol_features();
            frontend
                .set_protocol_features(acked)
                .map_err(protocol("SET_PROTOCOL_FEATURES"))?;
            if acked.contains(VhostUserProtocolFeatures::MQ) {
                let have = frontend
                    .get_queue_num()
                    .map_err(protocol("GET_QUEUE_NUM"))?;
                if have < u64::from(queues) {
                    return Err(SessionError::TooFewQueues {
                        have,
                        need: u64::from(queues),
                    });
                }
            }
            if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // Every request that has no reply of its own is acknowledged, so a failure
                // (a memory table the backend cannot map) is seen where it happens.
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
        Ok(Self {
            frontend,
            watch,
            backend_features,
            protocol_features,
        })
    }

    /// The virtio features the backend implements.
    pub fn backend_features(&self) -> u64 {
        self.backend_features
    }

    /// The socket, for watching it hang up (never read from).
    pub fn watch(&self) -> &UnixStream {
        &self.watch
    }

    /// Hands the backend the memory, the driver's features and the rings, then starts them.
    /// `calls` holds one eventfd per queue in `queues`, signalled by the backend when it used
    /// buffers.
    pub fn start(
        &mut self,
        mem: &Memory,
        features: u64,
        queues: &[ActiveQueue],
        calls: &[EventFd],
    ) -> Result<(), SessionError> {
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let acked = features | (self.backend_features & protocol_bit);
        self.frontend
            .set_features(acked)
            .map_err(protocol("SET_FEATURES"))?;
        let regions = memory_table(mem)?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(protocol("SET_MEM_TABLE"))?;
        for (q, call) in queues.iter().zip(calls) {
            let index = usize::from(q.index);
            let queue = &q.queue;
            let host = |gpa: u64| -> Result<u64, SessionError> {
                mem.get_host_address(GuestAddress(gpa))
                    .map(|p| p as u64)
                    .map_err(|_| SessionError::QueueOutsideRam(q.index))
            };
            let config = VringConfigData {
                queue_max_size: queue.max_size(),
                queue_size: queue.size(),
                flags: 0,
                desc_table_addr: host(queue.desc_table())?,
                used_ring_addr: host(queue.used_ring())?,
                avail_ring_addr: host(queue.avail_ring())?,
                log_addr: None,
            };
            self.frontend
                .set_vring_num(index, queue.size())
                .map_err(protocol("SET_VRING_NUM"))?;
            self.frontend
                .set_vring_addr(index, &config)
                .map_err(protocol("SET_VRING_ADDR"))?;
            self.frontend
                .set_vring_base(index, queue.next_avail())
                .map_err(protocol("SET_VRING_BASE"))?;
            self.frontend
                .set_vring_call(index, call)
                .map_err(protocol("SET_VRING_CALL"))?;
            self.frontend
                .set_vring_kick(index, &q.kick)
                .map_err(protocol("SET_VRING_KICK"))?;
            if self.protocol_features {
                self.frontend
                    .set_vring_enable(index, true)
                    .map_err(protocol("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }

    /// Stops the rings `indices` (the backend finishes what it is doing and lets go of them).
    /// Errors are returned after trying every ring.
    pub fn stop(&mut self, indices: &[u16]) -> Result<(), SessionError> {
        let mut first_error = None;
        for &index in indices {
            let index = usize::from(index);
            if self.protocol_features {
                if let Err(e) = self.frontend.set_vring_enable(index, false) {
                    first_error.get_or_insert(protocol("SET_VRING_ENABLE")(e));
                }
            }
            // GET_VRING_BASE is what stops a ring in vhost-user.
            if let Err(e) = self.frontend.get_vring_base(index) {
                first_error.get_or_insert(protocol("GET_VRING_BASE")(e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The memory table: every RAM region with the file descriptor and offset that map it.
fn memory_table(mem: &Memory) -> Result<Vec<VhostUserMemoryRegionInfo>, SessionError> {
    mem.iter()
        .map(|region| {
            VhostUserMemoryRegionInfo::from_guest_region(region)
                .map_err(|_| SessionError::PrivateMemory(region.start_addr().0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let Err(e) = Session::connect(Path::new("/nonexistent/virtiofsd.sock"), 2) else {
            panic!("connected to nothing");
        };
        let text = e.to_string();
        assert!(text.contains("/nonexistent/virtiofsd.sock"), "{text}");
    }

    #[test]
    fn a_peer_that_hangs_up_is_a_protocol_error() {
        let dir = std::env::temp_dir().join(format!("podvisor-fs-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("closing.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            // Accept and close at once: not a vhost-user backend.
            drop(listener.accept());
        });
        let Err(e) = Session::connect(&path, 2) else {
            panic!("negotiated with a closed socket");
        };
        server.join().unwrap();
        assert!(
            matches!(e, SessionError::Protocol { .. }),
            "unexpected error {e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn anonymous_ram_cannot_be_shared() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert!(matches!(
            memory_table(&mem),
            Err(SessionError::PrivateMemory(0))
        ));
    }
}
