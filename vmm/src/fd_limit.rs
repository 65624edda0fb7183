//! The VMM's own ceiling on open file descriptors (`RLIMIT_NOFILE`).
//!
//! A guest can make the VMM open descriptors (vsock connections to host ports), and so can
//! host clients (API connections, hybrid-vsock connections). Without a ceiling of its own the
//! VMM inherits whatever the host gives it, often a soft limit of 1024 (too few for a vsock
//! device's 1023 connections) under a hard limit of a million (far more than it ever needs).
//! So at start-up, before any guest runs, the VMM sets both the soft and the hard limit to a
//! budget computed from its configuration: lowering the hard limit means a thread taken over
//! later cannot raise it again. When the budget is spent, only the request that wanted one
//! more descriptor fails (a vsock RST, a refused host connection, an API 503); the VM runs on.
//!
//! The budget ([`FdBudget::total`]) is the sum of:
//!
//! | part | descriptors |
//! | --- | --- |
//! | the process itself: stdio, `/dev/kvm`, the VM, guest RAM's memfd, the control loop's epoll and eventfds, signals, console, loader files, Landlock and seccomp set-up | [`BASE`] |
//! | per vCPU: its fd, its run mapping, its kick | [`PER_VCPU`] |
//! | per virtio queue: its ioeventfd and its irqfd | [`PER_QUEUE`] |
//! | per device: its worker's epoll and stop eventfd, the config-change irqfd, its backing file or socket, a spare | [`PER_DEVICE`] |
//! | vsock: one socket per connection, plus the listener | `devices::virtio::vsock::muxer::MAX_CONNECTIONS` + 1 |
//! | virtio-fs: per queue the kick and call eventfds given to the backend | 2 per queue |
//! | API mode: one per client connection, the listener, the event monitor, the runtime's own | [`API_CLIENTS`] + [`API_BASE`] |
//!
//! In API mode the VM is not known at start-up and devices come and go, so the budget is
//! the largest VM the API accepts ([`FdBudget::api_mode`]). `--rlimit-nofile N` replaces the
//! computed value.

use std::io;

use crate::config::{self, VmConfig};

/// Descriptors the process holds whatever the VM has.
pub const BASE: u64 = 64;
/// Descriptors per vCPU.
pub const PER_VCPU: u64 = 4;
/// Descriptors per virtio queue.
pub const PER_QUEUE: u64 = 2;
/// Descriptors per device beside its queues.
pub const PER_DEVICE: u64 = 6;
/// The API server's own descriptors beside one per client.
pub const API_BASE: u64 = 32;
/// A vsock device's queues (rx, tx, event).
const VSOCK_QUEUES: u64 = 3;
/// A virtio-rng device's queue.
const RNG_QUEUES: u64 = 1;
/// A virtio-fs device's high-priority queue, beside its request queues.
const FS_EXTRA_QUEUES: u64 = 1;
/// The most connections a vsock device holds (the muxer refuses more).
const VSOCK_CONNECTIONS: u64 = devices::virtio::vsock::muxer::MAX_CONNECTIONS as u64;
/// The most API connections served at once: `api_server::MAX_CONNECTIONS`, which this crate
/// cannot name (the API server sits on it); `src/api.rs` checks the two agree.
pub const API_CLIENTS: u64 = 256;
/// PCI slots for devices (slot 0 is the host bridge).
const DEVICE_SLOTS: u64 = 31;
/// The most queues a device the API can add may have.
const MAX_QUEUES_PER_DEVICE: u64 = config::disk::MAX_NUM_QUEUES as u64 + FS_EXTRA_QUEUES;

/// Errors applying the limit.
#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error("--rlimit-nofile {text:?}: expected a number of descriptors")]
    Parse { text: String },
    #[error(
        "--rlimit-nofile {wanted}: the process already has {open} descriptors open; give at \
         least {min}"
    )]
    BelowOpen { wanted: u64, open: u64, min: u64 },
    #[error(
        "--rlimit-nofile {wanted} is above the host's hard limit of {hard}; raising it needs \
         CAP_SYS_RESOURCE"
    )]
    AboveHard { wanted: u64, hard: u64 },
    #[error("cannot read the descriptor limit: {0}")]
    Get(io::Error),
    #[error("cannot set the descriptor limit to {wanted}: {source}")]
    Set { wanted: u64, source: io::Error },
}

/// What a VMM process serves, in the terms the budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FdBudget {
    pub vcpus: u64,
    pub devices: u64,
    pub queues: u64,
    pub vsock_devices: u64,
    pub fs_queues: u64,
    pub api_clients: u64,
}

impl FdBudget {
    /// The budget of `podvisor run` with this configuration.
    pub fn for_vm(vm: &VmConfig) -> Self {
        let disk_queues: u64 = vm.disks.iter().map(|d| u64::from(d.num_queues)).sum();
        let fs_queues: u64 = vm
            .fs
            .iter()
            .map(|f| u64::from(f.num_queues) + FS_EXTRA_QUEUES)
            .sum();
        let vsock = u64::from(vm.vsock.is_some());
        let rng = u64::from(vm.rng.is_some());
        Self {
            vcpus: u64::from(vm.vcpus),
            devices: vm.disks.len() as u64 + vm.fs.len() as u64 + vsock + rng,
            queues: disk_queues + fs_queues + vsock * VSOCK_QUEUES + rng * RNG_QUEUES,
            vsock_devices: vsock,
            fs_queues,
            api_clients: 0,
        }
    }

    /// The budget of API mode: the largest VM the API accepts (every vCPU, every slot
    /// holding a device with the most queues, one vsock device) and every API client.
    pub fn api_mode() -> Self {
        Self {
            vcpus: u64::from(config::MAX_VCPUS),
            devices: DEVICE_SLOTS,
            queues: DEVICE_SLOTS * MAX_QUEUES_PER_DEVICE,
            vsock_devices: 1,
            fs_queues: DEVICE_SLOTS * MAX_QUEUES_PER_DEVICE,
            api_clients: API_CLIENTS,
        }
    }

    /// The descriptor count the formula in the module documentation gives.
    pub fn total(&self) -> u64 {
        let api = if self.api_clients > 0 {
            self.api_clients + API_BASE
        } else {
            0
        };
        BASE + self.vcpus * PER_VCPU
            + self.devices * PER_DEVICE
            + self.queues * PER_QUEUE
            + self.vsock_devices * (VSOCK_CONNECTIONS + 1)
            + self.fs_queues * 2
            + api
    }
}

/// Parses `--rlimit-nofile N`.
pub fn parse_limit(text: &str) -> Result<u64, FdLimitError> {
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(FdLimitError::Parse {
            text: text.to_owned(),
        }),
    }
}

/// Sets the soft and hard `RLIMIT_NOFILE` of the process to `wanted` (given by the user) or
/// else to `computed`; returns the limit now in force. A computed budget above the host's
/// hard limit is cut to it (with a warning): the host's word is final. A given one above it,
/// or below what is already open, is an error.
pub fn apply(wanted: Option<u64>, computed: u64) -> Result<u64, FdLimitError> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).map_err(FdLimitError::Get)?;
    let limit = match wanted {
        Some(n) if n > hard => return Err(FdLimitError::AboveHard { wanted: n, hard }),
        Some(n) => {
            let open = open_descriptors();
            // Room for the few descriptors the start-up itself opens.
            let min = open + 8;
            if n < min {
                return Err(FdLimitError::BelowOpen {
                    wanted: n,
                    open,
                    min,
                });
            }
            n
        }
        None if computed > hard => {
            log::warn!(
                "descriptor budget {computed} is above the host's hard limit {hard}; using {hard}"
            );
            hard
        }
        None => computed,
    };
    rlimit::setrlimit(rlimit::Resource::NOFILE, limit, limit).map_err(|source| {
        FdLimitError::Set {
            wanted: limit,
            source,
        }
    })?;
    log::debug!("RLIMIT_NOFILE set to {limit}");
    Ok(limit)
}

/// How many descriptors the process has open now (0 if /proc cannot tell).
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count() as u64)
        .unwrap_or(0)
}

/// Whether an I/O error means the process (or the system) is out of descriptors.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_what_the_configuration_asks_for() {
        let mut vm = VmConfig::new("/k".into());
        vm.vcpus = 2;
        assert_eq!(FdBudget::for_vm(&vm).total(), BASE + 2 * PER_VCPU);
        vm.disks
            .push(config::disk::parse_disk("path=/a,num_queues=4").unwrap());
        vm.vsock = Some(config::vsock::parse_vsock("cid=3,socket=/v").unwrap());
        let b = FdBudget::for_vm(&vm);
        assert_eq!((b.devices, b.queues), (2, 4 + 3));
        assert_eq!(
            b.total(),
            BASE + 2 * PER_VCPU + 2 * PER_DEVICE + 7 * PER_QUEUE + 1024
        );
    }

    #[test]
    fn api_mode_covers_any_vm_the_api_accepts() {
        let api = FdBudget::api_mode().total();
        let mut vm = VmConfig::new("/k".into());
        vm.vcpus = config::MAX_VCPUS;
        vm.vsock = Some(config::vsock::parse_vsock("cid=3,socket=/v").unwrap());
        for _ in 0..30 {
            vm.disks
                .push(config::disk::parse_disk("path=/a,num_queues=16").unwrap());
        }
        assert!(api > FdBudget::for_vm(&vm).total() + API_CLIENTS);
    }

    #[test]
    fn limits_parse_as_positive_numbers() {
        assert_eq!(parse_limit("4096").unwrap(), 4096);
        for bad in ["", "0", "-1", "many", "1e3"] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
    }
}
