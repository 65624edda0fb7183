//! Device sections of the API's `VmConfig` (`disks[]`, `fs[]`, `vsock`) and of `vm.add-disk`
//! / `vm.add-fs` / `vm.add-vsock`, in Cloud Hypervisor's JSON spelling, mapped onto the VMM's device
//! configuration. Values are range-checked here; cross-device rules (duplicate ids, how many
//! fit on the PCI bus) are checked by the VMM's own validation when the VM is built.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::disk::{DiskConfig, DEFAULT_QUEUE_SIZE};
use crate::config::fs::FsConfig;
use crate::config::vsock::VsockConfig;

/// Errors in a device section.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceConfigError {
    #[error("disk: path is required")]
    NoDiskPath,
    #[error("disk {0:?}: vhost-user disks are not supported")]
    VhostUser(PathBuf),
    #[error("vsock: cid {cid} is outside {min}..={max}")]
    BadCid { cid: u64, min: u64, max: u64 },
    #[error("vsock: socket is required")]
    NoVsockSocket,
    #[error("fs: tag is required")]
    NoFsTag,
    #[error("fs {0:?}: socket is required")]
    NoFsSocket(String),
    #[error("fs {tag:?}: {why}")]
    Fs { tag: String, why: String },
    #[error("the VM already has a {0} device")]
    AlreadyPresent(&'static str),
}

fn one() -> u16 {
    1
}

fn default_queue_size() -> u16 {
    DEFAULT_QUEUE_SIZE
}

/// One `disks[]` entry / the `vm.add-disk` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiDiskConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default = "one")]
    pub num_queues: u16,
    #[serde(default = "default_queue_size")]
    pub queue_size: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub vhost_user: bool,
}

impl ApiDiskConfig {
    pub fn to_disk(&self) -> Result<DiskConfig, DeviceConfigError> {
        let path = self.path.clone().ok_or(DeviceConfigError::NoDiskPath)?;
        if self.vhost_user {
            return Err(DeviceConfigError::VhostUser(path));
        }
        let mut disk = DiskConfig::new(path);
        disk.readonly = self.readonly;
        disk.num_queues = self.num_queues;
        disk.queue_size = self.queue_size;
        disk.id = self.id.clone();
        Ok(disk)
    }
}

fn default_fs_queue_size() -> u16 {
    crate::config::fs::DEFAULT_QUEUE_SIZE
}

/// One `fs[]` entry / the `vm.add-fs` body: a share served by a vhost-user backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiFsConfig {
    #[serde(default)]
    pub tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(default = "one")]
    pub num_queues: u16,
    #[serde(default = "default_fs_queue_size")]
    pub queue_size: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl ApiFsConfig {
    pub fn to_fs(&self) -> Result<FsConfig, DeviceConfigError> {
        if self.tag.is_empty() {
            return Err(DeviceConfigError::NoFsTag);
        }
        let socket = self
            .socket
            .clone()
            .filter(|s| !s.as_os_str().is_empty())
            .ok_or_else(|| DeviceConfigError::NoFsSocket(self.tag.clone()))?;
        let fs = FsConfig {
            tag: self.tag.clone(),
            socket,
            num_queues: self.num_queues,
            queue_size: self.queue_size,
            id: self.id.clone(),
        };
        crate::config::fs::validate(std::slice::from_ref(&fs)).map_err(|e| {
            DeviceConfigError::Fs {
                tag: self.tag.clone(),
                why: e.to_string(),
            }
        })?;
        Ok(fs)
    }
}

/// The `vsock` section / the `vm.add-vsock` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVsockConfig {
    pub cid: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl ApiVsockConfig {
    pub fn to_vsock(&self) -> Result<VsockConfig, DeviceConfigError> {
        use devices::virtio::vsock::{MAX_GUEST_CID, MIN_GUEST_CID};
        if !(MIN_GUEST_CID..=MAX_GUEST_CID).contains(&self.cid) {
            return Err(DeviceConfigError::BadCid {
                cid: self.cid,
                min: MIN_GUEST_CID,
                max: MAX_GUEST_CID,
            });
        }
        let socket = self
            .socket
            .clone()
            .filter(|s| !s.as_os_str().is_empty())
            .ok_or(DeviceConfigError::NoVsockSocket)?;
        Ok(VsockConfig {
            cid: self.cid,
            socket,
            id: self.id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::config::from_json;

    #[test]
    fn disks_take_cloud_hypervisor_defaults() {
        let d: ApiDiskConfig = from_json(br#"{"path":"/d","id":"root","direct":true}"#).unwrap();
        let disk = d.to_disk().unwrap();
        assert_eq!(disk.path, PathBuf::from("/d"));
        assert_eq!((disk.num_queues, disk.queue_size), (1, DEFAULT_QUEUE_SIZE));
        assert_eq!(disk.id.as_deref(), Some("root"));
        assert!(!disk.readonly);
        let d: ApiDiskConfig = from_json(br#"{"readonly":true}"#).unwrap();
        assert_eq!(d.to_disk(), Err(DeviceConfigError::NoDiskPath));
        let d: ApiDiskConfig = from_json(br#"{"path":"/s","vhost_user":true}"#).unwrap();
        assert!(matches!(d.to_disk(), Err(DeviceConfigError::VhostUser(_))));
    }

    #[test]
    fn shares_take_cloud_hypervisor_defaults() {
        let f: ApiFsConfig =
            from_json(br#"{"tag":"kataShared","socket":"/run/vfs.sock","pci_segment":0}"#).unwrap();
        let fs = f.to_fs().unwrap();
        assert_eq!(fs.tag, "kataShared");
        assert_eq!((fs.num_queues, fs.queue_size), (1, 1024));
        let f: ApiFsConfig = from_json(br#"{"socket":"/s"}"#).unwrap();
        assert_eq!(f.to_fs(), Err(DeviceConfigError::NoFsTag));
        let f: ApiFsConfig = from_json(br#"{"tag":"t"}"#).unwrap();
        assert_eq!(f.to_fs(), Err(DeviceConfigError::NoFsSocket("t".into())));
        let f: ApiFsConfig = from_json(br#"{"tag":"t","socket":"/s","queue_size":1000}"#).unwrap();
        assert!(matches!(f.to_fs(), Err(DeviceConfigError::Fs { .. })));
    }

    #[test]
    fn vsock_needs_a_guest_cid_and_a_socket() {
        let v: ApiVsockConfig = from_json(br#"{"cid":3,"socket":"/run/v.sock"}"#).unwrap();
        assert_eq!(v.to_vsock().unwrap().cid, 3);
        let v: ApiVsockConfig = from_json(br#"{"cid":2,"socket":"/run/v.sock"}"#).unwrap();
        assert!(matches!(
            v.to_vsock(),
            Err(DeviceConfigError::BadCid { .. })
        ));
        let v: ApiVsockConfig = from_json(br#"{"cid":3}"#).unwrap();
        assert_eq!(v.to_vsock(), Err(DeviceConfigError::NoVsockSocket));
        assert!(from_json::<ApiVsockConfig>(br#"{"socket":"/x"}"#).is_err());
    }
}
