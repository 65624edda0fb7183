//! Optional Landlock confinement of the files a running VM may open (`--landlock`): once the
//! VM is built, the thread that runs it — and every thread it starts: vCPUs, console — and
//! the device workers (which the seccomp spawner starts outside that tree, see
//! [`confine_worker`]) may open only the VM's configured files (kernel, initramfs, disks, entropy source,
//! serial file) and what `--landlock-rules path=P,access=r|rw` adds (e.g. a directory that
//! disks hot-plugged later will come from). Everything the VM needed to start is open by then,
//! so a thread an attacker takes over through guest input cannot read or write other host
//! files. Sockets are not files for Landlock: vsock and vhost-user connections keep working.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};

use crate::config::VmConfig;

/// Errors in rules or while confining.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("invalid --landlock-rules {text:?}: {why}")]
    Rule { text: String, why: String },
    #[error("Landlock: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("Landlock is not supported by this kernel; run without --landlock")]
    Unsupported,
}

/// One extra path and whether it may be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockRule {
    pub path: PathBuf,
    pub write: bool,
}

/// Parses `path=P,access=r|rw` (Cloud Hypervisor's `--landlock-rules` spelling).
pub fn parse_rule(text: &str) -> Result<LandlockRule, LandlockError> {
    let bad = |why: &str| LandlockError::Rule {
        text: text.to_owned(),
        why: why.to_owned(),
    };
    let mut path = None;
    let mut write = None;
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
            Some(("access", "r")) => write = Some(false),
            Some(("access", "rw")) => write = Some(true),
            Some(("access", _)) => return Err(bad("access is r or rw")),
            _ => return Err(bad("expected path=P,access=r|rw")),
        }
    }
    Ok(LandlockRule {
        path: path.ok_or_else(|| bad("path= is required"))?,
        write: write.ok_or_else(|| bad("access= is required"))?,
    })
}

/// The process-wide choice: `None` without `--landlock`, else the extra rules.
static POLICY: OnceLock<Option<Vec<LandlockRule>>> = OnceLock::new();

/// Turns confinement on with `extra` rules (first call wins).
pub fn enable(extra: Vec<LandlockRule>) {
    let _ = POLICY.set(Some(extra));
}

/// The paths a VM built from `config` may open while it runs, plus the extra rules.
pub fn rules_for(config: &VmConfig, extra: &[LandlockRule]) -> Vec<LandlockRule> {
    let read = |p: &Path| LandlockRule {
        path: p.to_owned(),
        write: false,
    };
    // A confidential VM has no kernel file: its image was launched before the VM runs.
    let kernel = Some(config.kernel.as_path()).filter(|k| !k.as_os_str().is_empty());
    let mut rules: Vec<LandlockRule> = kernel.map(read).into_iter().collect();
    rules.extend(config.initramfs.as_deref().map(read));
    rules.extend(config.disks.iter().map(|d| LandlockRule {
        path: d.path.clone(),
        write: !d.readonly,
    }));
    rules.extend(config.rng.as_ref().map(|r| read(&r.src)));
    if let crate::config::SerialOutput::File(path) = &config.serial {
        rules.push(LandlockRule {
            path: path.clone(),
            write: true,
        });
    }
    rules.extend(extra.iter().cloned());
    rules
}

/// With `--landlock`, the rules a VM built from `config` runs under; `None` without it.
pub fn plan(config: &VmConfig) -> Option<Vec<LandlockRule>> {
    match POLICY.get() {
        Some(Some(extra)) => Some(rules_for(config, extra)),
        _ => None,
    }
}

/// The rules of the VM that confined itself last; device workers started for it outside
/// its thread tree take them on.
static ACTIVE: Mutex<Option<Vec<LandlockRule>>> = Mutex::new(None);

/// Confines the thread running a VM (and the threads it starts) to `rules`, and has later
/// device workers confine themselves the same way.
pub fn confine_vm(rules: &[LandlockRule]) -> Result<(), LandlockError> {
    restrict(rules)?;
    *ACTIVE.lock().unwrap_or_else(PoisonError::into_inner) = Some(rules.to_vec());
    Ok(())
}

/// Called first thing in a device worker started outside the VM's thread tree: takes on the
/// running VM's confinement, if there is one.
pub fn confine_worker() {
    let rules = ACTIVE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if let Some(rules) = rules {
        if let Err(e) = restrict(&rules) {
            log::error!("device worker: {e}");
        }
    }
}

/// Confines the calling thread to `rules`; an error unless the kernel enforces it fully.
pub fn restrict(rules: &[LandlockRule]) -> Result<(), LandlockError> {
    let abi = ABI::V3;
    let read_paths: Vec<&Path> = rules
        .iter()
        .filter(|r| !r.write)
        .map(|r| r.path.as_path())
        .collect();
    let write_paths: Vec<&Path> = rules
        .iter()
        .filter(|r| r.write)
        .map(|r| r.path.as_path())
        .collect();
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(read_paths, AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(write_paths, AccessFs::from_all(abi)))?
        .restrict_self()?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(()),
        RulesetStatus::PartiallyEnforced | RulesetStatus::NotEnforced => {
            Err(LandlockError::Unsupported)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_as_cloud_hypervisor_spells_them() {
        assert_eq!(
            parse_rule("path=/srv/images,access=r").unwrap(),
            LandlockRule {
                path: PathBuf::from("/srv/images"),
                write: false
            }
        );
        assert!(parse_rule("access=rw,path=/d").unwrap().write);
        for bad in [
            "",
            "path=/d",
            "access=rw",
            "path=,access=r",
            "path=/d,access=x",
            "p=/d",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_confined_thread_opens_only_its_files() {
        let dir = crate::test_scratch::ScratchDir::new("landlock");
        std::fs::create_dir_all(dir.join("allowed")).unwrap();
        let inside = dir.join("allowed/disk.img");
        let outside = dir.join("other.img");
        std::fs::write(&inside, b"in").unwrap();
        std::fs::write(&outside, b"out").unwrap();
        let kernel = dir.join("kernel");
        std::fs::write(&kernel, b"k").unwrap();
        let mut config = VmConfig::new(kernel.clone());
        config
            .disks
            .push(crate::config::disk::DiskConfig::new(inside.clone()));
        let rules = rules_for(&config, &[]);
        // Landlock confines the calling thread and its children only: a thread of its own.
        std::thread::spawn(move || {
            restrict(&rules).unwrap();
            std::fs::read(&kernel).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&inside)
                .unwrap();
            assert!(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&kernel)
                    .is_err(),
                "the kernel is read-only"
            );
            let denied = std::fs::read(&outside).unwrap_err();
            assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(std::fs::read("/etc/hostname").is_err());
            // Threads started later are confined too.
            std::thread::spawn(move || assert!(std::fs::read(&outside).is_err()))
                .join()
                .unwrap();
        })
        .join()
        .unwrap();
        // A worker started outside the VM's thread tree takes on the VM's confinement.
        let vm_rules = rules_for(&config, &[]);
        std::thread::spawn(move || confine_vm(&vm_rules).unwrap())
            .join()
            .unwrap();
        let (outside, inside) = (dir.join("other.img"), dir.join("allowed/disk.img"));
        std::thread::spawn(move || {
            confine_worker();
            assert!(std::fs::read(&outside).is_err());
            std::fs::read(&inside).unwrap();
        })
        .join()
        .unwrap();
        *ACTIVE.lock().unwrap() = None;
    }
}
