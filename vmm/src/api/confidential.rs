//! Confidential (SEV-SNP) VMs through the API: `payload.igvm`, `payload.host_data` and
//! `platform.sev_snp`, the rules a confidential VM lives by, and what `sandbox.attestation`
//! tells the sandbox's owner to expect in the guest's attestation report.
//!
//! The launch plan is computed when the VM is created, from the same IGVM file, RAM layout,
//! vCPU count and HOST_DATA that `vm.boot` launches with, so the expected measurement is known
//! before anything runs (as `podvisor measure --igvm` computes it). Rules, because the host
//! must not be able to read or change what runs inside:
//! - no virtio-fs share and no `memory.shared`: a vhost-user backend maps all of guest RAM;
//! - no serial console: the guest policy never has DEBUG (the launch refuses it), and the
//!   console is off unless the policy allows debugging;
//! - `vm.add-fs` is refused before and after boot for the same reason as `fs[]`.

use std::path::PathBuf;

use serde::Serialize;
use snp::id_block::HostData;

use super::config::{ApiConfigError, ApiVmConfig, ConsoleMode};
use crate::snp_launch::{SnpConfig, SnpPlatform};

/// What the guest's attestation report must carry, published for `sandbox.attestation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedAttestation {
    /// The launch digest (MEASUREMENT), 96 hex digits.
    pub measurement: String,
    /// HOST_DATA, 64 hex digits.
    pub host_data: String,
    /// The guest policy from the image, as `0x…`.
    pub policy: String,
    pub vcpus: u32,
    pub memory: u64,
    pub igvm: PathBuf,
}

/// A confidential VM's launch inputs and expected report.
#[derive(Debug, Clone)]
pub struct Confidential {
    pub launch: SnpConfig,
    pub expected: ExpectedAttestation,
}

fn invalid(field: &'static str, why: impl Into<String>) -> ApiConfigError {
    ApiConfigError::Invalid {
        field,
        why: why.into(),
    }
}

/// `None` for an ordinary VM; for a confidential one, checks the rules above and plans the
/// launch (a bad image is an error here, at `vm.create`).
pub fn plan(config: &ApiVmConfig) -> Result<Option<Confidential>, ApiConfigError> {
    let payload = &config.payload;
    if !config.platform.sev_snp {
        if payload.igvm.is_some() || payload.host_data.is_some() || payload.snp_certs.is_some() {
            return Err(invalid(
                "payload.igvm",
                "an IGVM image (and host_data, snp_certs) needs platform.sev_snp=true",
            ));
        }
        return Ok(None);
    }
    let igvm = payload
        .igvm
        .clone()
        .ok_or_else(|| invalid("payload.igvm", "platform.sev_snp=true needs an IGVM image"))?;
    if payload.kernel.is_some() || payload.initramfs.is_some() || payload.cmdline.is_some() {
        return Err(invalid(
            "payload",
            "with an IGVM image, kernel, initramfs and cmdline come from the image",
        ));
    }
    if config.fs.as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(invalid(
            "fs",
            "a confidential VM cannot have virtio-fs shares: the backend would map all of \
             guest memory",
        ));
    }
    if config.memory.shared {
        return Err(invalid(
            "memory.shared",
            "a confidential VM's memory cannot be shared with other processes",
        ));
    }
    let host_data = match &payload.host_data {
        Some(hex) => {
            HostData::from_hex(hex).map_err(|e| invalid("payload.host_data", e.to_string()))?
        }
        None => HostData::default(),
    };
    let launch = SnpConfig {
        platform: SnpPlatform::On,
        igvm: igvm.clone(),
        host_data,
        vcpus: config.cpus.boot_vcpus,
        memory: config.memory.size,
        empty_pages: snp::plan::EmptyPages::default(),
        certs: match &payload.snp_certs {
            Some(path) => Some(std::sync::Arc::new(
                snp::certs::CertTable::load(path)
                    .map_err(|e| invalid("payload.snp_certs", e.to_string()))?,
            )),
            None => None,
        },
    };
    let plan =
        crate::snp_launch::plan(&launch).map_err(|e| invalid("payload.igvm", e.to_string()))?;
    let digest = plan
        .expected_digest()
        .map_err(|e| invalid("payload.igvm", e.to_string()))?;
    let expected = ExpectedAttestation {
        measurement: digest.to_hex(),
        host_data: snp::hex::encode(&host_data.0),
        policy: format!("{:#x}", plan.policy.0),
        vcpus: launch.vcpus,
        memory: launch.memory,
        igvm,
    };
    Ok(Some(Confidential { launch, expected }))
}

/// Whether the serial console stays on: never for a confidential VM (see the module docs).
pub fn console_allowed(config: &ApiVmConfig) -> bool {
    !config.platform.sev_snp || matches!(config.serial.mode, ConsoleMode::Off | ConsoleMode::Null)
}
