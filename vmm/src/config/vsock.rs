//! `--vsock cid=N,socket=PATH[,id=NAME]`: the virtio-vsock device, in Cloud Hypervisor's
//! spelling. The guest gets CID `N` (Kata uses 3); the host side is a hybrid-vsock Unix socket
//! listening on `PATH`, and guest connections to host port `P` go to `PATH_P`.

use std::path::PathBuf;

use devices::virtio::vsock::{MAX_GUEST_CID, MIN_GUEST_CID};

/// Errors in a `--vsock` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VsockConfigError {
    #[error("invalid vsock {text:?}: {why}")]
    Syntax { text: String, why: String },
}

/// The vsock device as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    pub cid: u64,
    pub socket: PathBuf,
    pub id: Option<String>,
}

/// Parses one `--vsock` value.
pub fn parse_vsock(text: &str) -> Result<VsockConfig, VsockConfigError> {
    let syntax = |why: String| VsockConfigError::Syntax {
        text: text.to_owned(),
        why,
    };
    let mut cid = None;
    let mut socket = None;
    let mut id = None;
    for (key, value) in super::key_values(text).map_err(syntax)? {
        match key {
            "cid" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| syntax(format!("cid {value:?} is not a number")))?;
                if !(MIN_GUEST_CID..=MAX_GUEST_CID).contains(&n) {
                    return Err(syntax(format!(
                        "cid must be between {MIN_GUEST_CID} and {MAX_GUEST_CID}"
                    )));
                }
                cid = Some(n);
            }
            "socket" => {
                if value.is_empty() {
                    return Err(syntax("socket path is empty".to_owned()));
                }
                socket = Some(PathBuf::from(value));
            }
            "id" => id = Some(value.to_owned()),
            _ => return Err(syntax(format!("unknown key {key:?}"))),
        }
    }
    Ok(VsockConfig {
        cid: cid.ok_or_else(|| syntax("cid= is required".to_owned()))?,
        socket: socket.ok_or_else(|| syntax("socket= is required".to_owned()))?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_hypervisor_spelling() {
        let v = parse_vsock("cid=3,socket=/run/kata/vsock.sock").unwrap();
        assert_eq!(v.cid, 3);
        assert_eq!(v.socket, PathBuf::from("/run/kata/vsock.sock"));
        let v = parse_vsock("socket=/s,cid=4294967294,id=vsock0").unwrap();
        assert_eq!((v.cid, v.id.as_deref()), (0xffff_fffe, Some("vsock0")));
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "",
            "cid=3",
            "socket=/s",
            "cid=2,socket=/s",
            "cid=4294967295,socket=/s",
            "cid=x,socket=/s",
            "cid=3,socket=",
            "cid=3,cid=4,socket=/s",
            "cid=3,socket=/s,color=red",
            "cid=3,socket",
        ] {
            assert!(parse_vsock(bad).is_err(), "{bad:?} accepted");
        }
    }
}
