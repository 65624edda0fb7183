//! virtio-fs (VIRTIO 1.2 §5.11) as a vhost-user front end: the pod's shared directories are
//! served by a separate `virtiofsd` process that reads and writes the queues in guest memory
//! directly. The VMM keeps what the guest sees of the device — its identity, the tag and
//! number of request queues in the configuration space, the PCI transport — and hands the
//! queues over on activation ([`session`]); a small relay thread turns the backend's
//! completions into the transport's interrupts and watches for the backend dying ([`relay`]).
//!
//! Guest memory must be shareable (file-backed) for this: the VMM builds RAM from a memfd
//! whenever a vhost-user device is configured.

pub mod relay;
pub mod session;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use self::relay::{Relay, RelayPlan};
use self::session::{Session, SessionError};
use super::{
    ActivateError, Activation, VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1,
};

/// Device type (§5.11.1).
pub const TYPE_FS: u32 = 26;
/// Bytes of the tag field in the configuration space; a tag may use all of them (no NUL).
pub const TAG_LEN: usize = 36;
/// Most request queues a share may have.
pub const MAX_REQUEST_QUEUES: u16 = 16;
/// Largest queue `virtiofsd` accepts, and the default.
pub const MAX_QUEUE_SIZE: u16 = 1024;

/// Errors creating a virtio-fs device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("tag {0:?} must be 1 to {TAG_LEN} bytes")]
    Tag(String),
    #[error("num_queues {0} must be between 1 and {MAX_REQUEST_QUEUES}")]
    Queues(u16),
    #[error("queue_size {0} must be a power of two between 2 and {MAX_QUEUE_SIZE}")]
    QueueSize(u16),
    #[error("vhost-user backend on {socket}: {source}")]
    Backend {
        socket: PathBuf,
        source: SessionError,
    },
}

/// A share as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsOptions {
    pub id: String,
    pub tag: String,
    pub socket: PathBuf,
    /// Request queues; the device has one more, the high-priority queue 0.
    pub num_request_queues: u16,
    pub queue_size: u16,
}

impl FsOptions {
    /// Checks the values the device can check without the backend.
    pub fn validate(&self) -> Result<(), FsError> {
        if self.tag.is_empty() || self.tag.len() > TAG_LEN {
            return Err(FsError::Tag(self.tag.clone()));
        }
        if !(1..=MAX_REQUEST_QUEUES).contains(&self.num_request_queues) {
            return Err(FsError::Queues(self.num_request_queues));
        }
        if !self.queue_size.is_power_of_two() || !(2..=MAX_QUEUE_SIZE).contains(&self.queue_size) {
            return Err(FsError::QueueSize(self.queue_size));
        }
        Ok(())
    }
}

/// The device configuration space: the tag, NUL-padded, then `num_request_queues`.
fn config_space(tag: &str, num_request_queues: u16) -> [u8; TAG_LEN + 4] {
    let mut config = [0u8; TAG_LEN + 4];
    let bytes = tag.as_bytes();
    let n = bytes.len().min(TAG_LEN);
    config[..n].copy_from_slice(&bytes[..n]);
    config[TAG_LEN..].copy_from_slice(&u32::from(num_request_queues).to_le_bytes());
    config
}

struct Running {
    relay: Relay,
    indices: Vec<u16>,
}

/// A virtio-fs device connected to its backend.
pub struct Fs {
    id: String,
    config: [u8; TAG_LEN + 4],
    queue_sizes: Vec<u16>,
    session: Session,
    running: Option<Running>,
    failed: Arc<AtomicBool>,
}

impl Fs {
    /// Connects to the backend at `options.socket` and negotiates with it; any problem is an
    /// error here, before the guest runs.
    pub fn connect(options: &FsOptions) -> Result<Self, FsError> {
        options.validate()?;
        let queues = options.num_request_queues + 1;
        let session =
            Session::connect(&options.socket, queues).map_err(|source| FsError::Backend {
                socket: options.socket.clone(),
                source,
            })?;
        Ok(Self {
            id: options.id.clone(),
            config: config_space(&options.tag, options.num_request_queues),
            queue_sizes: vec![options.queue_size; usize::from(queues)],
            session,
            running: None,
            failed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Set once the backend went away or refused the queues; shared so the VMM can report it.
    pub fn failed_flag(&self) -> Arc<AtomicBool> {
        self.failed.clone()
    }

    fn fail(&self, what: &str, e: &SessionError) -> ActivateError {
        log::error!(
            "virtio-fs {}: {what}: {e}; the device has failed (the rest of the VM carries on)",
            self.id
        );
        self.failed.store(true, Ordering::Release);
        ActivateError::Backend(e.to_string())
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        // Ring features are implemented by the backend; offer only those it has.
        self.session.backend_features() & (F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.running.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(ActivateError::Backend(
                "the vhost-user backend has gone".into(),
            ));
        }
        if activation.queues.is_empty() {
            return Err(ActivateError::BadQueues(0));
        }
        let mut calls = Vec::new();
        for _ in &activation.queues {
            calls.push(EventFd::new(libc::EFD_NONBLOCK)?);
        }
        if let Err(e) = self.session.start(
            &activation.mem,
            activation.features,
            &activation.queues,
            &calls,
        ) {
            return Err(self.fail("cannot start the queues", &e));
        }
        let indices: Vec<u16> = activation.queues.iter().map(|q| q.index).collect();
        let plan = RelayPlan {
            calls: indices.iter().copied().zip(calls).collect(),
            interrupt: activation.interrupt,
            socket: self.session.watch().try_clone()?,
            failed: self.failed.clone(),
            label: format!("virtio-fs {}", self.id),
        };
        let relay = match Relay::spawn(format!("fs-{}", self.id), plan) {
            Ok(relay) => relay,
            Err(e) => {
                if let Err(stop) = self.session.stop(&indices) {
                    log::warn!("virtio-fs {}: {stop}", self.id);
                }
                return Err(ActivateError::Worker(e));
            }
        };
        self.running = Some(Running { relay, indices });
        Ok(())
    }

    fn reset(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        running.relay.stop();
        if let Err(e) = self.session.stop(&running.indices) {
            if !self.failed.load(Ordering::Acquire) {
                let _ = self.fail("cannot stop the queues", &e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> FsOptions {
        FsOptions {
            id: "fs0".into(),
            tag: "hostshare".into(),
            socket: PathBuf::from("/nonexistent.sock"),
            num_request_queues: 1,
            queue_size: 1024,
        }
    }

    #[test]
    fn configuration_space_holds_the_tag_and_queue_count() {
        let c = config_space("myfs", 3);
        assert_eq!(&c[..4], b"myfs");
        assert!(c[4..TAG_LEN].iter().all(|&b| b == 0));
        assert_eq!(&c[TAG_LEN..], &[3, 0, 0, 0]);
        let full = "t".repeat(TAG_LEN);
        assert_eq!(&config_space(&full, 1)[..TAG_LEN], full.as_bytes());
    }

    #[test]
    fn options_are_checked_before_connecting() {
        assert!(options().validate().is_ok());
        let bad = [
            FsOptions {
                tag: String::new(),
                ..options()
            },
            FsOptions {
                tag: "x".repeat(TAG_LEN + 1),
                ..options()
            },
            FsOptions {
                num_request_queues: 0,
                ..options()
            },
            FsOptions {
                num_request_queues: MAX_REQUEST_QUEUES + 1,
                ..options()
            },
            FsOptions {
                queue_size: 1000,
                ..options()
            },
            FsOptions {
                queue_size: 2048,
                ..options()
            },
        ];
        for o in bad {
            assert!(o.validate().is_err(), "{o:?} accepted");
            assert!(Fs::connect(&o).is_err());
        }
        let Err(e) = Fs::connect(&options()) else {
            panic!("connected to a missing socket");
        };
        assert!(e.to_string().contains("/nonexistent.sock"), "{e}");
    }
}
