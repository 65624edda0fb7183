//! `--fs tag=NAME,socket=PATH[,num_queues=N][,queue_size=N][,id=NAME]`: one virtio-fs share
//! served by a vhost-user backend (`virtiofsd`) listening on `PATH`, in Cloud Hypervisor's
//! spelling. The guest mounts it by `NAME` (`mount -t virtiofs NAME /mnt`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use devices::virtio::fs::{FsOptions, MAX_QUEUE_SIZE};

/// Queue size when none is given (Cloud Hypervisor's default for virtio-fs).
pub const DEFAULT_QUEUE_SIZE: u16 = MAX_QUEUE_SIZE;

/// Errors in an `--fs` value or the set of shares.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FsConfigError {
    #[error("invalid fs {text:?}: {why}")]
    Syntax { text: String, why: String },
    #[error("fs {tag:?}: {why}")]
    Invalid { tag: String, why: String },
    #[error("two shares use the tag {0:?}")]
    DuplicateTag(String),
    #[error("two shares are named {0:?}")]
    DuplicateId(String),
}

/// One share as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    pub tag: String,
    pub socket: PathBuf,
    /// Request queues (the high-priority queue comes on top).
    pub num_queues: u16,
    pub queue_size: u16,
    /// `fsN` (N = position among the shares) when not given.
    pub id: Option<String>,
}

impl FsConfig {
    pub fn new(tag: impl Into<String>, socket: PathBuf) -> Self {
        Self {
            tag: tag.into(),
            socket,
            num_queues: 1,
            queue_size: DEFAULT_QUEUE_SIZE,
            id: None,
        }
    }

    pub fn id_or_default(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("fs{index}"))
    }

    /// What the device is built from.
    pub fn options(&self, index: usize) -> FsOptions {
        FsOptions {
            id: self.id_or_default(index),
            tag: self.tag.clone(),
            socket: self.socket.clone(),
            num_request_queues: self.num_queues,
            queue_size: self.queue_size,
        }
    }
}

/// Parses one `--fs` value.
pub fn parse_fs(text: &str) -> Result<FsConfig, FsConfigError> {
    let syntax = |why: String| FsConfigError::Syntax {
        text: text.to_owned(),
        why,
    };
    let mut tag = None;
    let mut socket = None;
    let mut num_queues = 1;
    let mut queue_size = DEFAULT_QUEUE_SIZE;
    let mut id = None;
    for (key, value) in super::key_values(text).map_err(syntax)? {
        let number = |what: &str| {
            value
                .parse::<u16>()
                .map_err(|_| syntax(format!("{what} {value:?} is not a number")))
        };
        match key {
            "tag" => tag = Some(value.to_owned()),
            "socket" if !value.is_empty() => socket = Some(PathBuf::from(value)),
            "socket" => return Err(syntax("socket path is empty".to_owned())),
            "num_queues" => num_queues = number("num_queues")?,
            "queue_size" => queue_size = number("queue_size")?,
            "id" if !value.is_empty() => id = Some(value.to_owned()),
            "id" => return Err(syntax("id is empty".to_owned())),
            _ => return Err(syntax(format!("unknown key {key:?}"))),
        }
    }
    let config = FsConfig {
        tag: tag.ok_or_else(|| syntax("tag= is required".to_owned()))?,
        socket: socket.ok_or_else(|| syntax("socket= is required".to_owned()))?,
        num_queues,
        queue_size,
        id,
    };
    check_one(&config, 0)?;
    Ok(config)
}

fn check_one(config: &FsConfig, index: usize) -> Result<(), FsConfigError> {
    config
        .options(index)
        .validate()
        .map_err(|e| FsConfigError::Invalid {
            tag: config.tag.clone(),
            why: e.to_string(),
        })
}

/// Checks the set of shares: each valid on its own, tags and ids distinct. Whether each
/// socket answers is checked when the device connects, before the guest runs.
pub fn validate(shares: &[FsConfig]) -> Result<(), FsConfigError> {
    let mut tags = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (i, share) in shares.iter().enumerate() {
        check_one(share, i)?;
        if !tags.insert(share.tag.as_str()) {
            return Err(FsConfigError::DuplicateTag(share.tag.clone()));
        }
        let id = share.id_or_default(i);
        if !ids.insert(id.clone()) {
            return Err(FsConfigError::DuplicateId(id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_hypervisor_spelling() {
        let f = parse_fs("tag=myfs,socket=/run/virtiofsd.sock").unwrap();
        assert_eq!(f.tag, "myfs");
        assert_eq!(f.socket, PathBuf::from("/run/virtiofsd.sock"));
        assert_eq!((f.num_queues, f.queue_size), (1, DEFAULT_QUEUE_SIZE));
        assert_eq!(f.id_or_default(2), "fs2");
        let f = parse_fs("socket=/s,tag=t,num_queues=2,queue_size=512,id=share0").unwrap();
        assert_eq!((f.num_queues, f.queue_size), (2, 512));
        assert_eq!(f.id.as_deref(), Some("share0"));
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "",
            "tag=x",
            "socket=/s",
            "tag=x,socket=",
            "tag=,socket=/s",
            "tag=x,socket=/s,tag=y",
            "tag=x,socket=/s,num_queues=0",
            "tag=x,socket=/s,num_queues=lots",
            "tag=x,socket=/s,queue_size=100",
            "tag=x,socket=/s,cache=always",
            "tag=0123456789012345678901234567890123456,socket=/s",
        ] {
            assert!(parse_fs(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tags_and_ids_are_distinct() {
        let a = FsConfig::new("a", PathBuf::from("/a"));
        let b = FsConfig::new("b", PathBuf::from("/b"));
        assert!(validate(&[a.clone(), b.clone()]).is_ok());
        assert_eq!(
            validate(&[a.clone(), a.clone()]),
            Err(FsConfigError::DuplicateTag("a".into()))
        );
        let named = |c: &FsConfig| FsConfig {
            id: Some("same".into()),
            ..c.clone()
        };
        assert_eq!(
            validate(&[named(&a), named(&b)]),
            Err(FsConfigError::DuplicateId("same".into()))
        );
    }
}
