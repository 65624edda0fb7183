//! Running a [`LaunchPlan`] against an SNP platform: the [`LaunchBackend`] trait and the one
//! driver that issues a plan through it (data flow 4, "SNP launch").
//!
//! The sequence follows Linux `Documentation/virt/kvm/x86/amd-memory-encryption.rst` (6.11+):
//! KVM_SEV_INIT2 → guest_memfd + KVM_SET_USER_MEMORY_REGION2 per RAM region → launch ranges set
//! private (KVM_SET_MEMORY_ATTRIBUTES) → vCPUs created with their register state →
//! KVM_SEV_SNP_LAUNCH_START → KVM_SEV_SNP_LAUNCH_UPDATE per range, in plan order →
//! KVM_SEV_SNP_LAUNCH_FINISH (which measures one VMSA per vCPU).
//!
//! Backends: [`kvm::KvmBackend`] (the real uAPI, behind the [`kvm_sys::SnpVmIoctls`] seam, with
//! [`recording::RecordingIoctls`] as the fake that checks the exact calls) and
//! [`model::ModelPlatform`], a software SNP platform that enforces what firmware and KVM
//! enforce and computes the digest itself.

pub mod kvm;
pub mod kvm_sys;
pub mod model;
pub mod recording;
pub mod req_certs;
pub mod timing;

use crate::id_block::{HostData, IdAuth, IdBlock};
use crate::page_info::{LaunchDigest, PageType};
use crate::plan::{LaunchPlan, LaunchRange, PlanError, RamRegion};
use crate::policy::GuestPolicy;
use crate::vp_context::VcpuState;

/// SEV firmware status codes (Linux `include/uapi/linux/psp-sev.h`, `sev_ret_code`), the value
/// KVM reports in `kvm_sev_cmd.error`.
pub mod fw_status {
    /// The platform is in the wrong state for the command.
    pub const INVALID_PLATFORM_STATE: u32 = 0x01;
    /// The guest is in the wrong state for the command.
    pub const INVALID_GUEST_STATE: u32 = 0x02;
    /// A length is wrong.
    pub const INVALID_LENGTH: u32 = 0x04;
    /// The guest policy is not allowed on this platform.
    pub const POLICY_FAILURE: u32 = 0x07;
    /// An address is invalid.
    pub const INVALID_ADDRESS: u32 = 0x09;
    /// A signature did not verify.
    pub const BAD_SIGNATURE: u32 = 0x0A;
    /// The ID block digest or policy does not match the launch.
    pub const BAD_MEASUREMENT: u32 = 0x0B;
    /// A parameter is invalid (also: a CPUID table the firmware corrected).
    pub const INVALID_PARAM: u32 = 0x16;
    /// The page is in the wrong RMP state.
    pub const INVALID_PAGE_STATE: u32 = 0x1A;

    /// A name for log lines and errors.
    pub fn name(code: u32) -> &'static str {
        match code {
            0 => "SUCCESS",
            INVALID_PLATFORM_STATE => "INVALID_PLATFORM_STATE",
            INVALID_GUEST_STATE => "INVALID_GUEST_STATE",
            INVALID_LENGTH => "INVALID_LENGTH",
            POLICY_FAILURE => "POLICY_FAILURE",
            INVALID_ADDRESS => "INVALID_ADDRESS",
            BAD_SIGNATURE => "BAD_SIGNATURE",
            BAD_MEASUREMENT => "BAD_MEASUREMENT",
            INVALID_PARAM => "INVALID_PARAM",
            INVALID_PAGE_STATE => "INVALID_PAGE_STATE",
            _ => "unknown firmware status",
        }
    }
}

/// Errors of a launch, whichever backend ran it.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The SNP firmware refused a command.
    #[error("{op} failed: firmware status {status:#x} ({name}): {detail}", name = fw_status::name(*status))]
    Firmware {
        op: &'static str,
        status: u32,
        detail: String,
    },
    /// KVM (or the model of it) refused a call before reaching firmware.
    #[error("{op} refused: {reason}")]
    Refused { op: &'static str, reason: String },
    /// A host system call failed.
    #[error("{op} failed: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The host cannot run SNP guests at all.
    #[error("SEV-SNP is not available on this host: {0}")]
    Unavailable(String),
    /// The plan is inconsistent.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// A RAM region and the slot it occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamSlot {
    /// KVM memory slot number.
    pub slot: u32,
    /// Guest physical range.
    pub region: RamRegion,
}

/// Inputs of SNP_LAUNCH_FINISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishParams {
    /// ID block and auth, if the image carries one.
    pub id: Option<(IdBlock, IdAuth)>,
    /// HOST_DATA.
    pub host_data: HostData,
}

/// One SNP launch platform. Calls arrive in the order of [`launch`]; a backend refuses calls
/// out of order the way KVM and firmware do.
pub trait LaunchBackend {
    /// KVM_SEV_INIT2 with `vmsa_features` (SEV_FEATURES minus SNPActive), plus enabling the
    /// page-conversion hypercall exit.
    fn init(&mut self, vmsa_features: u64) -> Result<(), LaunchError>;
    /// Back `ram.region` with a guest_memfd and register the slot.
    fn add_ram(&mut self, ram: RamSlot) -> Result<(), LaunchError>;
    /// Set `[gpa, gpa + size)` private.
    fn set_private(&mut self, gpa: u64, size: u64) -> Result<(), LaunchError>;
    /// Create vCPU `index` with `state`.
    fn create_vcpu(&mut self, index: u32, state: &VcpuState) -> Result<(), LaunchError>;
    /// SNP_LAUNCH_START.
    fn start(&mut self, policy: GuestPolicy) -> Result<(), LaunchError>;
    /// SNP_LAUNCH_UPDATE of one range. Firmware may rewrite a CPUID range's data.
    fn update(&mut self, range: &mut LaunchRange) -> Result<(), LaunchError>;
    /// SNP_LAUNCH_FINISH. Returns the launch digest when the backend can see it (the model).
    fn finish(&mut self, params: &FinishParams) -> Result<Option<LaunchDigest>, LaunchError>;
}

/// What a launch produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchReport {
    /// The digest computed from the plan beforehand.
    pub expected: LaunchDigest,
    /// The digest the platform reports, when it can be seen.
    pub platform: Option<LaunchDigest>,
    /// Number of SNP_LAUNCH_UPDATE ranges issued.
    pub ranges: usize,
    /// Wall time per phase.
    pub timing: timing::LaunchTiming,
}

/// The slots the driver uses for `plan.ram`: one per region, numbered from `first_slot`.
pub fn ram_slots(plan: &LaunchPlan, first_slot: u32) -> Vec<RamSlot> {
    plan.ram
        .regions()
        .iter()
        .zip(first_slot..)
        .map(|(&region, slot)| RamSlot { slot, region })
        .collect()
}

/// Issue `plan` through `backend`, in the order KVM requires, and check that the platform's
/// digest (if visible) is the expected one.
pub fn launch(
    plan: &LaunchPlan,
    backend: &mut dyn LaunchBackend,
) -> Result<LaunchReport, LaunchError> {
    let mut time = timing::LaunchTiming::default();
    let expected = timing::timed(&mut time.digest, || plan.expected_digest())?;
    plan.policy
        .launch_check()
        .map_err(|e| LaunchError::Refused {
            op: "SNP_LAUNCH_START",
            reason: e.to_string(),
        })?;
    timing::timed(&mut time.init2, || backend.init(plan.vmsa_features))?;
    let mut ranges = plan.ranges();
    timing::timed(&mut time.memory, || -> Result<(), LaunchError> {
        for slot in ram_slots(plan, 0) {
            backend.add_ram(slot)?;
        }
        for r in &ranges {
            backend.set_private(r.gpa, r.data.len() as u64)?;
        }
        Ok(())
    })?;
    timing::timed(&mut time.vcpus, || -> Result<(), LaunchError> {
        for index in 0..plan.vcpus {
            backend.create_vcpu(index, &plan.vcpu_state)?;
        }
        Ok(())
    })?;
    timing::timed(&mut time.launch_start, || backend.start(plan.policy))?;
    timing::timed(&mut time.launch_update, || -> Result<(), LaunchError> {
        for r in &mut ranges {
            match backend.update(r) {
                Err(LaunchError::Firmware { status, detail, .. })
                    if r.page_type == PageType::Cpuid && status == fw_status::INVALID_PARAM =>
                {
                    // Firmware wrote its corrected table into the range; retry once with it.
                    log::warn!(
                        "firmware rejected the CPUID page at {:#x} ({detail}); retrying once \
                         with the table it corrected",
                        r.gpa
                    );
                    backend.update(r)?;
                }
                other => other?,
            }
        }
        Ok(())
    })?;
    time.update_ranges = ranges.len();
    let platform = timing::timed(&mut time.finish, || {
        backend.finish(&FinishParams {
            id: plan.id.clone(),
            host_data: plan.host_data,
        })
    })?;
    if let Some(got) = &platform {
        if *got != expected {
            return Err(LaunchError::Refused {
                op: "SNP_LAUNCH_FINISH",
                reason: format!("platform digest {got} differs from the expected {expected}"),
            });
        }
    }
    log::info!(
        "SNP launch finished: {} ranges, {} vCPUs, expected digest {expected}",
        ranges.len(),
        plan.vcpus
    );
    Ok(LaunchReport {
        expected,
        platform,
        ranges: ranges.len(),
        timing: time,
    })
}
