//! The `vm.create` body: Cloud Hypervisor's `VmConfig` JSON, and its mapping onto the VMM's
//! own [`VmConfig`].
//!
//! Parsing is lenient the way clients expect (unknown keys and `null`s are ignored, missing
//! sections take defaults); mapping is strict: anything this VMM cannot build (firmware boot,
//! devices whose models are not wired, console modes without a backend) is refused with a
//! message that names it, never silently dropped. The accepted, normalized value is what
//! `vm.info` echoes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::devices::{ApiDiskConfig, ApiVsockConfig, DeviceConfigError};
use crate::config::{SerialOutput, VmConfig, DEFAULT_MEMORY};

/// Errors in a `vm.create` body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiConfigError {
    #[error("invalid VmConfig JSON: {0}")]
    Json(String),
    #[error("payload.kernel is required")]
    NoKernel,
    #[error("{0} is not supported by this VMM")]
    Unsupported(String),
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error(transparent)]
    Device(#[from] DeviceConfigError),
}

/// `payload`: what to boot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Payload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub igvm: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_data: Option<String>,
    /// Certificate table for the guest's extended guest requests (as `run --snp-certs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snp_certs: Option<PathBuf>,
}

/// `cpus.topology`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuTopology {
    pub threads_per_core: u32,
    pub cores_per_die: u32,
    pub dies_per_package: u32,
    pub packages: u32,
}

/// `cpus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpusConfig {
    pub boot_vcpus: u32,
    pub max_vcpus: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<CpuTopology>,
}

impl Default for CpusConfig {
    fn default() -> Self {
        Self {
            boot_vcpus: 1,
            max_vcpus: 0,
            topology: None,
        }
    }
}

/// `memory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryConfig {
    pub size: u64,
    pub shared: bool,
    pub hugepages: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotplug_size: Option<u64>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            size: DEFAULT_MEMORY,
            shared: false,
            hugepages: false,
            hotplug_size: None,
        }
    }
}

/// Cloud Hypervisor's console modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ConsoleMode {
    #[default]
    Off,
    Pty,
    Tty,
    File,
    Socket,
    Null,
}

/// `serial` and `console`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsoleConfig {
    pub mode: ConsoleMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

/// `platform`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlatformConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_pci_segments: Option<u16>,
    pub sev_snp: bool,
}

/// `rng`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RngConfig {
    pub src: PathBuf,
}

impl Default for RngConfig {
    fn default() -> Self {
        Self {
            src: PathBuf::from("/dev/urandom"),
        }
    }
}

/// The accepted `vm.create` body, with defaults filled in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiVmConfig {
    pub payload: Payload,
    pub cpus: CpusConfig,
    pub memory: MemoryConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<ApiDiskConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<Vec<super::devices::ApiFsConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsock: Option<ApiVsockConfig>,
    pub serial: ConsoleConfig,
    pub console: ConsoleConfig,
    pub platform: PlatformConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rng: Option<RngConfig>,
}

/// Removes every `null` member of every object, so `"x": null` means "not given".
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Decodes a JSON document into `T`, ignoring unknown keys and `null`s.
pub fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiConfigError> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| ApiConfigError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiConfigError::Json("expected a JSON object".into()));
    }
    strip_nulls(&mut value);
    serde_json::from_value(value).map_err(|e| ApiConfigError::Json(e.to_string()))
}

fn non_empty<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

impl ApiVmConfig {
    /// Fills derived defaults (max_vcpus = boot_vcpus) and checks what can be checked
    /// without touching the host; returns the VMM configuration to build.
    pub fn normalize(&mut self) -> Result<VmConfig, ApiConfigError> {
        if self.cpus.max_vcpus == 0 {
            self.cpus.max_vcpus = self.cpus.boot_vcpus;
        }
        if self.cpus.max_vcpus < self.cpus.boot_vcpus {
            return Err(ApiConfigError::Invalid {
                field: "cpus.max_vcpus",
                why: format!(
                    "{} is below boot_vcpus {}",
                    self.cpus.max_vcpus, self.cpus.boot_vcpus
                ),
            });
        }
        if self.cpus.max_vcpus != self.cpus.boot_vcpus {
            log::warn!("vCPU hot-plug is not supported; the VM keeps its boot vCPUs");
        }
        if let Some(t) = &self.cpus.topology {
            let product = [
                t.threads_per_core,
                t.cores_per_die,
                t.dies_per_package,
                t.packages,
            ]
            .iter()
            .try_fold(1u32, |acc, n| acc.checked_mul(*n));
            if product != Some(self.cpus.max_vcpus) {
                return Err(ApiConfigError::Invalid {
                    field: "cpus.topology",
                    why: format!(
                        "threads × cores × dies × packages must equal max_vcpus ({})",
                        self.cpus.max_vcpus
                    ),
                });
            }
        }
        self.check_unsupported()?;
        // A confidential VM boots from its IGVM image (see `confidential`); the kernel path
        // stays empty because such a VM is never built from this configuration.
        let kernel = match self.platform.sev_snp {
            true => PathBuf::new(),
            false => self
                .payload
                .kernel
                .clone()
                .ok_or(ApiConfigError::NoKernel)?,
        };
        // Built from `VmConfig::new` so fields added later (devices) start empty here until
        // this mapping fills them.
        let mut vm = VmConfig::new(kernel);
        vm.initramfs = self.payload.initramfs.clone();
        if let Some(cmdline) = &self.payload.cmdline {
            vm.cmdline = cmdline.clone();
        }
        vm.vcpus = self.cpus.boot_vcpus;
        vm.memory = self.memory.size;
        vm.shared_memory = self.memory.shared;
        vm.serial = if super::confidential::console_allowed(self) {
            serial_output(&self.serial)?
        } else {
            log::warn!("confidential VM: the serial console is off (the policy forbids DEBUG)");
            SerialOutput::Off
        };
        for disk in self.disks.iter().flatten() {
            vm.disks.push(disk.to_disk()?);
        }
        for share in self.fs.iter().flatten() {
            vm.fs.push(share.to_fs()?);
        }
        vm.vsock = self
            .vsock
            .as_ref()
            .map(ApiVsockConfig::to_vsock)
            .transpose()?;
        vm.rng = self
            .rng
            .as_ref()
            .map(|r| crate::config::rng::RngConfig { src: r.src.clone() });
        Ok(vm)
    }

    /// Refuses what this VMM cannot build yet, naming it.
    fn check_unsupported(&self) -> Result<(), ApiConfigError> {
        let unsupported = |what: &str| Err(ApiConfigError::Unsupported(what.to_owned()));
        if self.payload.firmware.is_some() {
            return unsupported("payload.firmware (firmware boot)");
        }
        if self.platform.num_pci_segments.is_some_and(|n| n > 1) {
            return unsupported("more than one PCI segment");
        }
        if self.memory.hotplug_size.is_some_and(|n| n > 0) {
            return unsupported("memory.hotplug_size (memory hot-plug)");
        }
        for (present, what) in [
            (non_empty(&self.net), "net (no virtio-net device)"),
            (non_empty(&self.devices), "devices (no VFIO passthrough)"),
        ] {
            if present {
                return unsupported(what);
            }
        }
        match self.console.mode {
            ConsoleMode::Off | ConsoleMode::Null => {}
            other => {
                return unsupported(&format!(
                    "console mode {other:?} (no virtio-console device)"
                ))
            }
        }
        Ok(())
    }
}

fn serial_output(serial: &ConsoleConfig) -> Result<SerialOutput, ApiConfigError> {
    match serial.mode {
        ConsoleMode::Off | ConsoleMode::Null => Ok(SerialOutput::Off),
        ConsoleMode::Tty => Ok(SerialOutput::Stdout),
        ConsoleMode::File => match &serial.file {
            Some(path) => Ok(SerialOutput::File(path.clone())),
            None => Err(ApiConfigError::Invalid {
                field: "serial.file",
                why: "mode File needs a file".into(),
            }),
        },
        other => Err(ApiConfigError::Unsupported(format!(
            "serial mode {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests;
