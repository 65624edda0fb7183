//! `--disk path=FILE[,readonly=on][,num_queues=N][,queue_size=N][,id=NAME]`: one virtio-blk
//! disk, in Cloud Hypervisor's spelling. Disks land on PCI bus 0 in the order given (slot 1
//! for the first), so the same command line always yields the same `0000:00:XX.0` addresses.

use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

/// Queue size when none is given (Cloud Hypervisor's default).
pub const DEFAULT_QUEUE_SIZE: u16 = 128;
/// Largest queue size accepted.
pub const MAX_QUEUE_SIZE: u16 = devices::virtio::block::MAX_QUEUE_SIZE;
/// Most queues per disk.
pub const MAX_NUM_QUEUES: u16 = devices::virtio::block::MAX_QUEUES;
/// Longest id: what GET_ID can return.
pub const MAX_ID_BYTES: usize = devices::virtio::block::request::ID_BYTES;
/// Most disks one VM takes: bus 0 has 32 slots and the host bridge holds slot 0.
pub const MAX_DISKS: usize = 31;

/// Errors in a `--disk` value or the set of disks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskConfigError {
    #[error("invalid disk {text:?}: {why}")]
    Syntax { text: String, why: String },
    #[error("disk {path:?}: {why}")]
    File { path: PathBuf, why: String },
    #[error("two disks are named {0:?}")]
    DuplicateId(String),
    #[error("{0} disks given, at most {MAX_DISKS} fit on the PCI bus")]
    TooMany(usize),
}

/// One disk as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub readonly: bool,
    pub num_queues: u16,
    pub queue_size: u16,
    /// Name for GET_ID, logs and the worker thread; `diskN` (N = position) when not given.
    pub id: Option<String>,
}

impl DiskConfig {
    /// A read-write disk with one queue of the default size.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            readonly: false,
            num_queues: 1,
            queue_size: DEFAULT_QUEUE_SIZE,
            id: None,
        }
    }

    /// The id of the disk at position `index` among the VM's disks.
    pub fn id_or_default(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("disk{index}"))
    }
}

fn parse_bool(text: &str, key: &str, value: &str) -> Result<bool, DiskConfigError> {
    match value {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(DiskConfigError::Syntax {
            text: text.to_owned(),
            why: format!("{key} must be on or off"),
        }),
    }
}

/// Parses one `--disk` value.
pub fn parse_disk(text: &str) -> Result<DiskConfig, DiskConfigError> {
    let syntax = |why: String| DiskConfigError::Syntax {
        text: text.to_owned(),
        why,
    };
    let mut disk = DiskConfig::new(PathBuf::new());
    for (key, value) in super::key_values(text).map_err(syntax)? {
        let number = |max: u16| {
            value
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| syntax(format!("{key} must be a number from 1 to {max}")))
        };
        match key {
            "path" if !value.is_empty() => disk.path = PathBuf::from(value),
            "readonly" => disk.readonly = parse_bool(text, key, value)?,
            "num_queues" => disk.num_queues = number(MAX_NUM_QUEUES)?,
            "queue_size" => {
                let n = number(MAX_QUEUE_SIZE)?;
                if !n.is_power_of_two() || n < 2 {
                    return Err(syntax(format!(
                        "queue_size must be a power of two from 2 to {MAX_QUEUE_SIZE}"
                    )));
                }
                disk.queue_size = n;
            }
            "id" => {
                if value.is_empty() || value.len() > MAX_ID_BYTES || !value.is_ascii() {
                    return Err(syntax(format!(
                        "id must be 1 to {MAX_ID_BYTES} ASCII characters"
                    )));
                }
                disk.id = Some(value.to_owned());
            }
            "path" => return Err(syntax("path is empty".into())),
            other => return Err(syntax(format!("unknown option {other:?}"))),
        }
    }
    if disk.path.as_os_str().is_empty() {
        return Err(syntax("path=FILE is required".into()));
    }
    Ok(disk)
}

/// Checks the set of disks: each path is a regular file or block device of at least one
/// sector, readable (and writable unless read-only); ids are unique; they fit on the bus.
pub fn validate(disks: &[DiskConfig]) -> Result<(), DiskConfigError> {
    if disks.len() > MAX_DISKS {
        return Err(DiskConfigError::TooMany(disks.len()));
    }
    let mut ids = BTreeSet::new();
    for (i, disk) in disks.iter().enumerate() {
        let id = disk.id_or_default(i);
        if !ids.insert(id.clone()) {
            return Err(DiskConfigError::DuplicateId(id));
        }
        let file = |why: String| DiskConfigError::File {
            path: disk.path.clone(),
            why,
        };
        let meta = std::fs::metadata(&disk.path).map_err(|e| file(e.to_string()))?;
        let kind = meta.file_type();
        if !kind.is_file() && !kind.is_block_device() {
            return Err(file("not a regular file or block device".into()));
        }
        if kind.is_file() && meta.len() < 512 {
            return Err(file("smaller than one 512-byte sector".into()));
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(!disk.readonly)
            .open(&disk.path)
            .map_err(|e| file(format!("cannot open: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cloud_hypervisor_spellings() {
        let d =
            parse_disk("path=/tmp/a.img,readonly=on,num_queues=4,queue_size=256,id=root").unwrap();
        assert_eq!(
            d,
            DiskConfig {
                path: "/tmp/a.img".into(),
                readonly: true,
                num_queues: 4,
                queue_size: 256,
                id: Some("root".into()),
            }
        );
        let d = parse_disk("path=/x").unwrap();
        assert_eq!((d.readonly, d.num_queues, d.queue_size), (false, 1, 128));
        assert_eq!(d.id_or_default(3), "disk3");
        assert!(!parse_disk("path=/x,readonly=off").unwrap().readonly);
    }

    #[test]
    fn refuses_bad_values() {
        for bad in [
            "",
            "/tmp/a.img",
            "readonly=on",
            "path=",
            "path=/x,readonly=yes",
            "path=/x,num_queues=0",
            "path=/x,num_queues=17",
            "path=/x,queue_size=100",
            "path=/x,queue_size=2048",
            "path=/x,queue_size=1",
            "path=/x,id=",
            "path=/x,id=123456789012345678901",
            "path=/x,direct=on",
            "path=/x,path=/y",
        ] {
            assert!(
                matches!(parse_disk(bad), Err(DiskConfigError::Syntax { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn validates_files_and_ids() {
        let dir = crate::test_scratch::ScratchDir::new("diskcfg");
        let img = dir.join("a.img");
        std::fs::write(&img, vec![0u8; 4096]).unwrap();
        let tiny = dir.join("tiny.img");
        std::fs::write(&tiny, [0u8; 100]).unwrap();
        let a = DiskConfig::new(img.clone());
        assert_eq!(validate(&[a.clone(), a.clone()]), Ok(()));
        let named = DiskConfig {
            id: Some("disk1".into()),
            ..a.clone()
        };
        assert_eq!(
            validate(&[named, a.clone()]),
            Err(DiskConfigError::DuplicateId("disk1".into()))
        );
        assert!(matches!(
            validate(&[DiskConfig::new(dir.join("missing"))]),
            Err(DiskConfigError::File { .. })
        ));
        assert!(matches!(
            validate(&[DiskConfig::new(dir.path().to_path_buf())]),
            Err(DiskConfigError::File { .. })
        ));
        assert!(matches!(
            validate(&[DiskConfig::new(tiny)]),
            Err(DiskConfigError::File { .. })
        ));
        assert_eq!(
            validate(&vec![a; MAX_DISKS + 1]),
            Err(DiskConfigError::TooMany(MAX_DISKS + 1))
        );
    }
}
