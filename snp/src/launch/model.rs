//! A software SNP platform: takes the same calls as KVM, refuses what KVM or the firmware
//! would refuse, keeps an RMP-like state per guest page and computes the launch digest from
//! what it was actually given — an oracle for the plan's expected digest.
//!
//! Rules modelled (SEV-SNP Firmware ABI 56860 §8.16–8.18; KVM `sev.c`):
//! - order: INIT2 once, before vCPUs; LAUNCH_START once, after INIT2; LAUNCH_UPDATE only
//!   between START and FINISH; nothing after FINISH;
//! - INIT2 `vmsa_features` must be a subset of what the host offers (SNPActive is KVM's own);
//! - policy: reserved bits, must-be-one bit, SMT on an SMT host, ABI newer than firmware;
//! - LAUNCH_UPDATE: whole 4 KiB pages, inside a guest_memfd RAM slot, already private, not
//!   launched before (RMP: a launched page is assigned and validated); no VMSA type;
//! - CPUID pages: the table header and reserved fields are checked; a bad table is corrected
//!   in the caller's buffer and the call fails with INVALID_PARAM, as firmware does;
//! - LAUNCH_FINISH: one VMSA per vCPU (synthesised as KVM does) at 0xFFFF_FFFF_F000, then the
//!   ID block: LD and POLICY must match (else BAD_MEASUREMENT), version 1, P-384 keys.
//!   ECDSA signatures are not verified by the model.
//!
//! A range is checked completely before any of its pages is measured, so a refused call leaves
//! the model unchanged (firmware would have launched the pages before the bad one).

use super::{fw_status, FinishParams, LaunchBackend, LaunchError, RamSlot};
use crate::id_block::{ALGO_ECDSA_P384_SHA384, CURVE_P384, ID_BLOCK_VERSION};
use crate::page_info::{LaunchDigest, PageType, PAGE_SIZE, VMSA_GPA};
use crate::plan::{LaunchRange, RamRegion, PAGE_SIZE_U64};
use crate::policy::{GuestPolicy, PolicyError};
use crate::vp_context::{kvm_vmsa, VcpuState, SEV_FEATURE_DEBUG_SWAP};
use std::collections::BTreeMap;

/// Maximum entries of an SNP CPUID page (ABI §8.17.2, "CPUID Function Structure" table).
pub const CPUID_MAX_ENTRIES: u32 = 64;
const CPUID_HEADER: usize = 16;
const CPUID_ENTRY: usize = 48;

/// Platform properties of the model host.
#[derive(Debug, Clone, Copy)]
pub struct ModelConfig {
    /// Host SMT enabled (the policy must then allow SMT).
    pub host_smt: bool,
    /// Firmware ABI version (major, minor).
    pub fw_abi: (u8, u8),
    /// `KVM_X86_SEV_VMSA_FEATURES` of the host.
    pub vmsa_features: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            host_smt: true,
            fw_abi: (1, 55),
            vmsa_features: SEV_FEATURE_DEBUG_SWAP,
        }
    }
}

/// RMP view of one guest page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Hypervisor-owned (shared); the default for RAM.
    Shared,
    /// Private attribute set, not yet assigned by a launch.
    Private,
    /// Launched: assigned to the guest and validated, with the launch page type.
    Launched(PageType),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Initialized,
    Started,
    Finished,
}

/// The software SNP platform.
#[derive(Debug)]
pub struct ModelPlatform {
    cfg: ModelConfig,
    phase: Phase,
    vmsa_features: u64,
    ram: Vec<RamSlot>,
    pages: BTreeMap<u64, PageState>,
    vcpus: Vec<VcpuState>,
    policy: Option<GuestPolicy>,
    digest: LaunchDigest,
}

fn refused(op: &'static str, reason: impl Into<String>) -> LaunchError {
    LaunchError::Refused {
        op,
        reason: reason.into(),
    }
}

fn firmware(op: &'static str, status: u32, detail: impl Into<String>) -> LaunchError {
    LaunchError::Firmware {
        op,
        status,
        detail: detail.into(),
    }
}

impl ModelPlatform {
    /// A fresh platform.
    pub fn new(cfg: ModelConfig) -> Self {
        Self {
            cfg,
            phase: Phase::Created,
            vmsa_features: 0,
            ram: Vec::new(),
            pages: BTreeMap::new(),
            vcpus: Vec::new(),
            policy: None,
            digest: LaunchDigest::new(),
        }
    }

    /// The RMP state of the page at `gpa` (`None` outside RAM).
    pub fn page_state(&self, gpa: u64) -> Option<PageState> {
        let gfn = gpa / PAGE_SIZE_U64;
        self.in_ram(gpa, PAGE_SIZE_U64)
            .then(|| *self.pages.get(&gfn).unwrap_or(&PageState::Shared))
    }

    /// The digest so far.
    pub fn digest(&self) -> &LaunchDigest {
        &self.digest
    }

    fn in_ram(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.ram
            .iter()
            .any(|s| gpa >= s.region.gpa && end <= s.region.end())
    }

    fn check_page_range(&self, op: &'static str, gpa: u64, len: u64) -> Result<(), LaunchError> {
        if gpa % PAGE_SIZE_U64 != 0 || len % PAGE_SIZE_U64 != 0 || len == 0 {
            return Err(refused(
                op,
                format!("range {gpa:#x}+{len:#x} is not page aligned"),
            ));
        }
        Ok(())
    }
}

/// Check an SNP CPUID page; on error return the corrected page.
fn check_cpuid_page(page: &[u8]) -> Result<(), Vec<u8>> {
    let mut fixed = page.to_vec();
    fixed.resize(PAGE_SIZE, 0);
    let count = u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
    let mut bad = false;
    let clamped = count.min(CPUID_MAX_ENTRIES);
    if clamped != count {
        bad = true;
        fixed[0..4].copy_from_slice(&clamped.to_le_bytes());
    }
    if fixed[4..CPUID_HEADER].iter().any(|&b| b != 0) {
        bad = true;
        fixed[4..CPUID_HEADER].fill(0);
    }
    for i in 0..clamped as usize {
        let reserved = CPUID_HEADER + i * CPUID_ENTRY + 40;
        if fixed[reserved..reserved + 8].iter().any(|&b| b != 0) {
            bad = true;
            fixed[reserved..reserved + 8].fill(0);
        }
    }
    if bad {
        Err(fixed)
    } else {
        Ok(())
    }
}

impl LaunchBackend for ModelPlatform {
    fn init(&mut self, vmsa_features: u64) -> Result<(), LaunchError> {
        let op = "KVM_SEV_INIT2";
        if self.phase != Phase::Created {
            return Err(refused(op, "the VM is already initialised"));
        }
        if !self.vcpus.is_empty() {
            return Err(refused(op, "vCPUs exist already"));
        }
        if vmsa_features & !self.cfg.vmsa_features != 0 {
            return Err(refused(
                op,
                format!(
                    "vmsa_features {vmsa_features:#x} not offered by the host ({:#x})",
                    self.cfg.vmsa_features
                ),
            ));
        }
        self.vmsa_features = vmsa_features;
        self.phase = Phase::Initialized;
        Ok(())
    }

    fn add_ram(&mut self, ram: RamSlot) -> Result<(), LaunchError> {
        let op = "KVM_SET_USER_MEMORY_REGION2";
        self.check_page_range(op, ram.region.gpa, ram.region.size)?;
        let overlaps = |r: &RamRegion| ram.region.gpa < r.end() && r.gpa < ram.region.end();
        if self
            .ram
            .iter()
            .any(|s| s.slot == ram.slot || overlaps(&s.region))
        {
            return Err(refused(
                op,
                format!("slot {} overlaps an existing slot", ram.slot),
            ));
        }
        self.ram.push(ram);
        Ok(())
    }

    fn set_private(&mut self, gpa: u64, size: u64) -> Result<(), LaunchError> {
        let op = "KVM_SET_MEMORY_ATTRIBUTES";
        self.check_page_range(op, gpa, size)?;
        if !self.in_ram(gpa, size) {
            return Err(refused(
                op,
                format!("{gpa:#x}+{size:#x} is not guest_memfd RAM"),
            ));
        }
        if self.phase == Phase::Finished {
            log::debug!("model: private conversion after launch at {gpa:#x}");
        }
        let first = gpa / PAGE_SIZE_U64;
        for gfn in first..first + size / PAGE_SIZE_U64 {
            let state = self.pages.entry(gfn).or_insert(PageState::Shared);
            if *state == PageState::Shared {
                *state = PageState::Private;
            }
        }
        Ok(())
    }

    fn create_vcpu(&mut self, index: u32, state: &VcpuState) -> Result<(), LaunchError> {
        let op = "KVM_CREATE_VCPU";
        match self.phase {
            Phase::Created => return Err(refused(op, "KVM_SEV_INIT2 must come first")),
            Phase::Finished => return Err(refused(op, "the launch is finished")),
            Phase::Initialized | Phase::Started => {}
        }
        if index as usize != self.vcpus.len() {
            return Err(refused(op, format!("vCPU {index} created out of order")));
        }
        self.vcpus.push(*state);
        Ok(())
    }

    fn start(&mut self, policy: GuestPolicy) -> Result<(), LaunchError> {
        let op = "SNP_LAUNCH_START";
        match self.phase {
            Phase::Created => return Err(refused(op, "KVM_SEV_INIT2 must come first")),
            Phase::Started | Phase::Finished => {
                return Err(firmware(
                    op,
                    fw_status::INVALID_GUEST_STATE,
                    "already started",
                ))
            }
            Phase::Initialized => {}
        }
        policy
            .firmware_check(self.cfg.host_smt, self.cfg.fw_abi)
            .map_err(|e| {
                let status = match e {
                    PolicyError::ReservedBits { .. } | PolicyError::MustBeOneClear(_) => {
                        fw_status::INVALID_PARAM
                    }
                    _ => fw_status::POLICY_FAILURE,
                };
                firmware(op, status, e.to_string())
            })?;
        self.policy = Some(policy);
        self.phase = Phase::Started;
        Ok(())
    }

    fn update(&mut self, range: &mut LaunchRange) -> Result<(), LaunchError> {
        let op = "SNP_LAUNCH_UPDATE";
        match self.phase {
            Phase::Started => {}
            Phase::Finished => {
                return Err(firmware(
                    op,
                    fw_status::INVALID_GUEST_STATE,
                    "launch after finish",
                ))
            }
            _ => {
                return Err(firmware(
                    op,
                    fw_status::INVALID_GUEST_STATE,
                    "launch not started",
                ))
            }
        }
        if range.page_type == PageType::Vmsa {
            return Err(refused(
                op,
                "VMSA pages are issued by KVM at LAUNCH_FINISH only",
            ));
        }
        self.check_page_range(op, range.gpa, range.data.len() as u64)?;
        let first = range.gpa / PAGE_SIZE_U64;
        for (i, gfn) in (first..first + range.pages()).enumerate() {
            let gpa = gfn * PAGE_SIZE_U64;
            match self.page_state(gpa) {
                None => return Err(refused(op, format!("{gpa:#x} is not guest_memfd RAM"))),
                Some(PageState::Shared) => {
                    return Err(refused(op, format!("{gpa:#x} is not private")))
                }
                Some(PageState::Launched(_)) => {
                    return Err(firmware(
                        op,
                        fw_status::INVALID_PAGE_STATE,
                        format!("{gpa:#x} was already launched"),
                    ))
                }
                Some(PageState::Private) => {}
            }
            if range.page_type == PageType::Cpuid {
                let page = &mut range.data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];
                if let Err(fixed) = check_cpuid_page(page) {
                    page.copy_from_slice(&fixed);
                    return Err(firmware(
                        op,
                        fw_status::INVALID_PARAM,
                        format!("CPUID table at {gpa:#x} rejected and corrected"),
                    ));
                }
            }
        }
        for (i, chunk) in range.data.chunks(PAGE_SIZE).enumerate() {
            let gpa = range.gpa + (i * PAGE_SIZE) as u64;
            self.digest
                .extend(gpa, range.page_type, chunk)
                .map_err(|e| refused(op, e.to_string()))?;
            self.pages
                .insert(gpa / PAGE_SIZE_U64, PageState::Launched(range.page_type));
        }
        Ok(())
    }

    fn finish(&mut self, params: &FinishParams) -> Result<Option<LaunchDigest>, LaunchError> {
        let op = "SNP_LAUNCH_FINISH";
        if self.phase != Phase::Started {
            return Err(firmware(
                op,
                fw_status::INVALID_GUEST_STATE,
                "launch not started",
            ));
        }
        if self.vcpus.is_empty() {
            return Err(refused(op, "no vCPUs"));
        }
        let mut digest = self.digest.clone();
        for (i, state) in self.vcpus.iter().enumerate() {
            let vmsa = kvm_vmsa(state, self.vmsa_features)
                .map_err(|e| refused(op, format!("vCPU {i}: {e}")))?;
            digest
                .extend(VMSA_GPA, PageType::Vmsa, &vmsa)
                .map_err(|e| refused(op, e.to_string()))?;
        }
        if let Some((block, auth)) = &params.id {
            if block.ld != *digest.as_bytes() {
                return Err(firmware(
                    op,
                    fw_status::BAD_MEASUREMENT,
                    format!(
                        "ID block digest {} differs from the launch digest {digest}",
                        crate::hex::encode(&block.ld)
                    ),
                ));
            }
            if Some(block.policy) != self.policy {
                return Err(firmware(
                    op,
                    fw_status::BAD_MEASUREMENT,
                    format!(
                        "ID block policy {:#x} differs from the launch policy",
                        block.policy.0
                    ),
                ));
            }
            if block.version != ID_BLOCK_VERSION {
                return Err(firmware(op, fw_status::INVALID_PARAM, "ID block version"));
            }
            let key_ok =
                |algo: u32, curve: u32| algo == ALGO_ECDSA_P384_SHA384 && curve == CURVE_P384;
            if !key_ok(auth.id_key_algo, auth.id_key.curve)
                || (auth.author_key_en && !key_ok(auth.auth_key_algo, auth.author_key.curve))
            {
                return Err(firmware(
                    op,
                    fw_status::INVALID_PARAM,
                    "ID auth key algorithm",
                ));
            }
        }
        self.digest = digest;
        self.phase = Phase::Finished;
        log::debug!("model: launch finished, digest {}", self.digest);
        Ok(Some(self.digest.clone()))
    }
}

#[cfg(test)]
mod tests;
