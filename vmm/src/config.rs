//! What a VM is made of, parsed from user text and checked against the host before anything
//! is allocated.
//!
//! Both the CLI and the API hand the VMM a [`VmConfig`]; [`VmConfig::validate`] is the one
//! place that decides whether it can be built, so a refused configuration always exits with
//! status 2 and a single clear line, never a half-built VM. The parsers accept Cloud
//! Hypervisor's spellings (`boot=N`, `size=512M`, `tty`, `null`) next to the short ones.

use std::path::{Path, PathBuf};

use crate::layout;

pub mod disk;
pub mod fs;
pub mod rng;
pub mod vsock;

/// Kernel command line used when none is given: the serial console is the only console.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";
/// Default guest RAM.
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// Hard ceiling on vCPUs whatever KVM allows: xAPIC IDs are 8 bits and 0xff is broadcast,
/// so vCPUs 0..=254 (the same limit as [`crate::acpi::MAX_VCPUS`] for the MADT).
pub const MAX_VCPUS: u32 = 255;

/// Errors in user-supplied configuration (exit status 2).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid size {text:?}: {why}")]
    InvalidSize { text: String, why: &'static str },
    #[error("invalid vCPU count {text:?}: expected N or boot=N")]
    InvalidCpus { text: String },
    #[error("invalid serial setting {text:?}: expected stdout, file=PATH or off")]
    InvalidSerial { text: String },
    #[error("kernel {path:?}: {why}")]
    Kernel { path: PathBuf, why: String },
    #[error("initramfs {path:?}: {why}")]
    Initramfs { path: PathBuf, why: String },
    #[error("memory size {size} bytes is below the minimum of {min} bytes")]
    MemoryTooSmall { size: u64, min: u64 },
    #[error("memory size {size} bytes exceeds the host's {host} bytes of RAM")]
    MemoryTooLarge { size: u64, host: u64 },
    #[error("memory size {size} bytes is not a multiple of 4 KiB")]
    MemoryUnaligned { size: u64 },
    #[error("vCPU count must be at least 1")]
    NoVcpus,
    #[error("{count} vCPUs requested but at most {max} are supported on this host")]
    TooManyVcpus { count: u32, max: u32 },
    #[error("initramfs is {size} bytes, more than the {ram} bytes of guest RAM")]
    InitramfsLargerThanRam { size: u64, ram: u64 },
    #[error("command line is {len} bytes, the limit is {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("command line contains a NUL byte")]
    CmdlineNul,
    #[error(transparent)]
    Disk(#[from] disk::DiskConfigError),
    #[error(transparent)]
    Rng(#[from] rng::RngConfigError),
    #[error(transparent)]
    Fs(#[from] fs::FsConfigError),
}

/// Where the guest's COM1 output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOutput {
    Stdout,
    File(PathBuf),
    Off,
}

/// A VM description as given by the user; [`VmConfig::validate`] checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u32,
    pub memory: u64,
    /// RAM backed by a memfd that backends may map (`shared=on`); implied by any share.
    pub shared_memory: bool,
    pub serial: SerialOutput,
    /// virtio-blk disks, in PCI slot order.
    pub disks: Vec<disk::DiskConfig>,
    /// The virtio-vsock device (hybrid Unix-socket backend), placed after the disks.
    pub vsock: Option<vsock::VsockConfig>,
    /// virtio-fs shares (vhost-user), placed after vsock.
    pub fs: Vec<fs::FsConfig>,
    /// The virtio-rng device, placed after every other device.
    pub rng: Option<rng::RngConfig>,
}

impl VmConfig {
    /// A configuration with the defaults for everything but the kernel.
    pub fn new(kernel: PathBuf) -> Self {
        Self {
            kernel,
            initramfs: None,
            cmdline: DEFAULT_CMDLINE.to_owned(),
            vcpus: 1,
            memory: DEFAULT_MEMORY,
            shared_memory: false,
            serial: SerialOutput::Stdout,
            disks: Vec::new(),
            vsock: None,
            fs: Vec::new(),
            rng: None,
        }
    }

    /// Checks everything that can be known before building the VM: sizes against the host,
    /// the files exist and are regular files, the initramfs fits in RAM.
    pub fn validate(&self, host: &HostLimits) -> Result<(), ConfigError> {
        self.validate_machine(host)?;
        if self.cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        if self.cmdline.len() >= layout::CMDLINE_MAX_SIZE {
            return Err(ConfigError::CmdlineTooLong {
                len: self.cmdline.len(),
                max: layout::CMDLINE_MAX_SIZE - 1,
            });
        }
        file_size(&self.kernel).map_err(|why| ConfigError::Kernel {
            path: self.kernel.clone(),
            why,
        })?;
        if let Some(path) = &self.initramfs {
            let size = file_size(path).map_err(|why| ConfigError::Initramfs {
                path: path.clone(),
                why,
            })?;
            if size > self.memory {
                return Err(ConfigError::InitramfsLargerThanRam {
                    size,
                    ram: self.memory,
                });
            }
        }
        Ok(())
    }

    /// Everything but what the guest boots from (kernel, initramfs, command line): vCPUs,
    /// memory and devices. All a confidential VM, whose image is launched elsewhere, is
    /// checked for.
    pub fn validate_machine(&self, host: &HostLimits) -> Result<(), ConfigError> {
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        let max = host.max_vcpus.min(MAX_VCPUS);
        if self.vcpus > max {
            return Err(ConfigError::TooManyVcpus {
                count: self.vcpus,
                max,
            });
        }
        if self.memory < layout::MIN_MEMORY {
            return Err(ConfigError::MemoryTooSmall {
                size: self.memory,
                min: layout::MIN_MEMORY,
            });
        }
        if self.memory % 4096 != 0 {
            return Err(ConfigError::MemoryUnaligned { size: self.memory });
        }
        if self.memory > host.memory {
            return Err(ConfigError::MemoryTooLarge {
                size: self.memory,
                host: host.memory,
            });
        }
        if let Some(rng) = &self.rng {
            rng.validate()?;
        }
        disk::validate(&self.disks)?;
        fs::validate(&self.fs)?;
        Ok(())
    }

    /// Whether guest RAM must be shareable with another process: asked for, or needed by a
    /// vhost-user device.
    pub fn needs_shared_memory(&self) -> bool {
        self.shared_memory || !self.fs.is_empty()
    }
}

fn file_size(path: &Path) -> Result<u64, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() == 0 {
        return Err("file is empty".into());
    }
    Ok(meta.len())
}

/// What the host can give a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// `KVM_CAP_MAX_VCPUS`.
    pub max_vcpus: u32,
    /// Total host RAM in bytes.
    pub memory: u64,
}

impl HostLimits {
    /// Reads the host's RAM from `/proc/meminfo`; `max_vcpus` comes from KVM.
    pub fn probe(max_vcpus: usize) -> Result<Self, std::io::Error> {
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let memory = parse_meminfo_total(&meminfo).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no MemTotal line in /proc/meminfo",
            )
        })?;
        Ok(Self {
            max_vcpus: u32::try_from(max_vcpus).unwrap_or(u32::MAX),
            memory,
        })
    }
}

fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `--memory` as given: a size and whether RAM is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySpec {
    pub size: u64,
    pub shared: bool,
}

/// Parses a memory size: `536870912`, `512M`, `512MiB`, `1G`, or `size=512M`. Units are
/// binary (K = 1024).
pub fn parse_memory(text: &str) -> Result<u64, ConfigError> {
    let spec = parse_memory_spec(text)?;
    if spec.shared {
        return Err(ConfigError::InvalidSize {
            text: text.to_owned(),
            why: "only a size is accepted here",
        });
    }
    Ok(spec.size)
}

/// Parses `--memory`: a size as [`parse_memory`] takes it, optionally with Cloud
/// Hypervisor's `shared=on|off`.
pub fn parse_memory_spec(text: &str) -> Result<MemorySpec, ConfigError> {
    let bad = |why| ConfigError::InvalidSize {
        text: text.to_owned(),
        why,
    };
    let mut value = None;
    let mut shared = false;
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("size", v)) => value = Some(v),
            Some(("shared", "on" | "true")) => shared = true,
            Some(("shared", "off" | "false")) => shared = false,
            Some(("shared", _)) => return Err(bad("shared= takes on or off")),
            Some((_, _)) => return Err(bad("only the size= and shared= options are supported")),
            None => value = Some(part),
        }
    }
    let value = value.unwrap_or_default().trim();
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(digits_end);
    if digits.is_empty() {
        return Err(bad("expected a number"));
    }
    let number: u64 = digits.parse().map_err(|_| bad("number too large"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad("unknown unit (use K, M, G or T)")),
    };
    let size = number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| bad("number too large"))?;
    Ok(MemorySpec { size, shared })
}

/// The `key=value` pairs of a comma-separated option value (`--disk`, `--vsock`, `--fs`), each
/// key at most once; the error says what is wrong with the value.
pub(crate) fn key_values(text: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut seen = std::collections::BTreeSet::new();
    text.split(',')
        .map(|part| {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not key=value"))?;
            if !seen.insert(key) {
                return Err(format!("{key} given twice"));
            }
            Ok((key, value))
        })
        .collect()
}

/// Parses a vCPU count: `2` or `boot=2` (other Cloud Hypervisor options are refused).
pub fn parse_cpus(text: &str) -> Result<u32, ConfigError> {
    let bad = || ConfigError::InvalidCpus {
        text: text.to_owned(),
    };
    let value = match text.split_once('=') {
        Some(("boot", v)) => v,
        Some(_) => return Err(bad()),
        None => text,
    };
    value.trim().parse().map_err(|_| bad())
}

/// Parses the serial setting: `stdout` (or `tty`), `file=PATH`, `off` (or `null`).
pub fn parse_serial(text: &str) -> Result<SerialOutput, ConfigError> {
    match text {
        "stdout" | "tty" => Ok(SerialOutput::Stdout),
        "off" | "null" => Ok(SerialOutput::Off),
        _ => match text.strip_prefix("file=") {
            Some(path) if !path.is_empty() => Ok(SerialOutput::File(PathBuf::from(path))),
            _ => Err(ConfigError::InvalidSerial {
                text: text.to_owned(),
            }),
        },
    }
}

#[cfg(test)]
mod tests;
