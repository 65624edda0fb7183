//! `--rng src=PATH`: the virtio-rng device and its host entropy source, in Cloud Hypervisor's
//! spelling (Kata passes `/dev/urandom`).

use std::path::PathBuf;

/// Errors in an `--rng` value or its source.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RngConfigError {
    #[error("invalid rng {text:?}: {why}")]
    Syntax { text: String, why: String },
    #[error("rng source {path:?}: {why}")]
    Source { path: PathBuf, why: String },
}

/// The entropy device as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RngConfig {
    pub src: PathBuf,
}

/// Parses one `--rng` value.
pub fn parse_rng(text: &str) -> Result<RngConfig, RngConfigError> {
    let syntax = |why: String| RngConfigError::Syntax {
        text: text.to_owned(),
        why,
    };
    let mut src = None;
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("src", "")) => return Err(syntax("src path is empty".to_owned())),
            Some(("src", value)) if src.is_none() => src = Some(PathBuf::from(value)),
            Some(("src", _)) => return Err(syntax("src given twice".to_owned())),
            Some((key, _)) => return Err(syntax(format!("unknown key {key:?}"))),
            None => return Err(syntax(format!("{part:?} is not key=value"))),
        }
    }
    Ok(RngConfig {
        src: src.ok_or_else(|| syntax("src= is required".to_owned()))?,
    })
}

impl RngConfig {
    /// The source must open for reading; a directory is refused (reads would fail later).
    pub fn validate(&self) -> Result<(), RngConfigError> {
        let bad = |why: String| RngConfigError::Source {
            path: self.src.clone(),
            why,
        };
        let file = std::fs::File::open(&self.src).map_err(|e| bad(e.to_string()))?;
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if meta.is_dir() {
            return Err(bad("is a directory".to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_hypervisor_spelling_and_bad_values() {
        assert_eq!(
            parse_rng("src=/dev/urandom").unwrap().src,
            PathBuf::from("/dev/urandom")
        );
        for bad in [
            "",
            "src=",
            "path=/dev/urandom",
            "src=/a,src=/b",
            "/dev/urandom",
        ] {
            assert!(parse_rng(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_rng("src=/dev/urandom").unwrap().validate().is_ok());
        assert!(parse_rng("src=/nonexistent/entropy")
            .unwrap()
            .validate()
            .is_err());
        assert!(parse_rng("src=/").unwrap().validate().is_err());
    }
}
