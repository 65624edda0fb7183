//! Confidential VM creation from an IGVM image (data flow 4, "SNP launch"): picks the launch
//! platform, checks the host before anything is created, turns the image into a launch plan
//! for this VM's RAM layout and vCPU count, and runs the launch.
//!
//! Platforms:
//! - `sev_snp=on`: KVM's SEV-SNP uAPI. Requires `/dev/sev` and `KVM_X86_SNP_VM`; a host without
//!   them is refused up front with one line naming what is missing. The launch and the VM that
//!   runs the guest afterwards are built by [`crate::confidential_vm::build`].
//! - `sev_snp=model`: the software SNP platform (`snp::launch::model`) takes the very calls KVM
//!   would get, enforces firmware rules and reports the launch digest; no guest code runs.

use snp::id_block::HostData;
use snp::igvm_plan::{plan_from_igvm, read_igvm_file, IgvmPlanError};
use snp::launch::model::{ModelConfig, ModelPlatform};
use snp::launch::{launch, LaunchError, LaunchReport};
use snp::plan::{LaunchPlan, PlanError, RamLayout, VmConfig as PlanConfig};
use std::path::PathBuf;

use crate::exit::{EXIT_INTERNAL_ERROR, EXIT_INVALID_CONFIG};

/// The confidential platform a VM is launched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnpPlatform {
    /// KVM SEV-SNP.
    On,
    /// The software SNP platform model.
    Model,
}

/// Parse `--platform`: `sev_snp=on` or `sev_snp=model`.
pub fn parse_platform(s: &str) -> Result<SnpPlatform, String> {
    match s {
        "sev_snp=on" => Ok(SnpPlatform::On),
        "sev_snp=model" => Ok(SnpPlatform::Model),
        other => Err(format!(
            "unknown platform {other:?}; expected sev_snp=on or sev_snp=model"
        )),
    }
}

/// Parse `--host-data`: 64 hex digits.
pub fn parse_host_data(s: &str) -> Result<HostData, String> {
    HostData::from_hex(s).map_err(|e| e.to_string())
}

/// Parse `--snp-certs`: reads and checks the certificate table in the file.
pub fn parse_certs(path: &str) -> Result<std::sync::Arc<snp::certs::CertTable>, String> {
    snp::certs::CertTable::load(std::path::Path::new(path))
        .map(std::sync::Arc::new)
        .map_err(|e| format!("certificate table {path}: {e}"))
}

/// A confidential VM configuration.
#[derive(Debug, Clone)]
pub struct SnpConfig {
    /// Launch platform.
    pub platform: SnpPlatform,
    /// IGVM image.
    pub igvm: PathBuf,
    /// HOST_DATA for SNP_LAUNCH_FINISH.
    pub host_data: HostData,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// How IGVM pages without data are measured and issued.
    pub empty_pages: snp::plan::EmptyPages,
    /// Certificate table for the guest's extended guest requests (`--snp-certs`); with it,
    /// KVM's certificate-request exit is enabled at launch and answered from it.
    pub certs: Option<std::sync::Arc<snp::certs::CertTable>>,
}

/// Errors of a confidential launch.
#[derive(Debug, thiserror::Error)]
pub enum SnpLaunchError {
    /// The host cannot run SNP guests; nothing was created.
    #[error("{0}")]
    Unavailable(String),
    /// The image does not fit this VM or is invalid.
    #[error("{0}")]
    Image(#[from] IgvmPlanError),
    /// The VM configuration is invalid.
    #[error("{0}")]
    Config(#[from] PlanError),
    /// The platform refused the launch.
    #[error("{0}")]
    Launch(LaunchError),
}

impl SnpLaunchError {
    /// Process exit status (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            SnpLaunchError::Image(_) | SnpLaunchError::Config(_) => EXIT_INVALID_CONFIG,
            SnpLaunchError::Unavailable(_) | SnpLaunchError::Launch(_) => EXIT_INTERNAL_ERROR,
        }
    }
}

impl From<LaunchError> for SnpLaunchError {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::Unavailable(reason) => SnpLaunchError::Unavailable(format!(
                "SEV-SNP is not available on this host: {reason}"
            )),
            other => SnpLaunchError::Launch(other),
        }
    }
}

/// The launch plan of `cfg` (pure: reads the image, touches no platform), from which the
/// expected measurement follows.
pub fn plan(cfg: &SnpConfig) -> Result<LaunchPlan, SnpLaunchError> {
    let bytes = read_igvm_file(&cfg.igvm)?;
    let plan_cfg = PlanConfig {
        empty_pages: cfg.empty_pages,
        ram: RamLayout::pc(cfg.memory)?,
        vcpus: cfg.vcpus,
        cmdline: None,
        host_data: cfg.host_data,
    };
    Ok(plan_from_igvm(&bytes, &plan_cfg)?)
}

/// Runs the launch of `cfg` on the software SNP platform model and returns its report; nothing
/// runs after it. (A KVM launch goes through [`crate::confidential_vm::build`], which goes on to
/// run the guest.)
pub fn run_model(cfg: &SnpConfig) -> Result<LaunchReport, SnpLaunchError> {
    let plan = plan(cfg)?;
    let mut model = ModelPlatform::new(ModelConfig::default());
    let report = launch(&plan, &mut model)?;
    // Read by scripts/bench/all --snp, like the boot-timing line.
    eprintln!("{}", report.timing);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_and_host_data_parsing() {
        assert_eq!(parse_platform("sev_snp=on"), Ok(SnpPlatform::On));
        assert_eq!(parse_platform("sev_snp=model"), Ok(SnpPlatform::Model));
        assert!(parse_platform("sev_snp=off").is_err());
        assert!(parse_platform("tdx=on").is_err());
        assert!(parse_host_data(&"ab".repeat(32)).is_ok());
        assert!(parse_host_data(&"ab".repeat(31)).is_err());
    }

    #[test]
    fn plan_layout_matches_the_vm_layout() {
        assert_eq!(snp::plan::MMIO32_START, crate::layout::MMIO32_START);
        assert_eq!(snp::plan::HIGH_RAM_START, crate::layout::HIGH_RAM_START);
    }
}
