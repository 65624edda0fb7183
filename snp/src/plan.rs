//! The typed SNP launch plan: everything a launch backend issues, in order, and the digest the
//! firmware will compute for it (data flow 4 "SNP launch" in the design).
//!
//! A [`LaunchPlan`] is produced from an IGVM file by [`crate::igvm`]; the expected launch
//! digest is a pure function of the plan ([`LaunchPlan::expected_digest`]), and every backend
//! (KVM or the software model) consumes the same plan, so the digest a launcher produces and
//! the one printed by `podvisor measure` cannot drift apart.
//!
//! Order of measurement (SEV-SNP Firmware ABI 56860 §8.17; KVM `snp_launch_finish`):
//! 1. the launch ranges, in IGVM directive order, one PAGE_INFO per 4 KiB page;
//! 2. one VMSA per vCPU, in vCPU index order, all at GPA `0xFFFF_FFFF_F000`, synthesised by
//!    KVM from each vCPU's register state at SNP_LAUNCH_FINISH (see [`crate::vp_context`]).
//!    Every vCPU gets the BSP state of the IGVM VP context, so the AP VMSAs equal the BSP's.
//!    APs do not run from that state: they wait for INIT/SIPI or for the guest's GHCB AP
//!    creation with a VMSA of its own; the launch-time AP VMSAs only enter the measurement,
//!    which is why the digest depends on the vCPU count.
//!
//! Empty IGVM pages: an IGVM `PageData` without data is a page of zeros that the IGVM format
//! defines as *measured* like any other normal page. The plan keeps it as a NORMAL page with
//! an all-zero source, and launchers issue exactly that (a NORMAL LAUNCH_UPDATE of a zeroed
//! buffer), never the firmware ZERO type. This matches the `igvm` crate's own SNP measurement;
//! it differs from loaders that issue ZERO pages (Cloud Hypervisor on KVM, `igvmmeasure
//! --native-zero`), whose digests therefore differ for files with empty pages.
//! [`EmptyPages::Zero`] selects that other convention for the whole pipeline: the plan then
//! types those pages ZERO, so the expected digest and every launcher (KVM, model) agree on it.

use crate::id_block::{HostData, IdAuth, IdBlock};
use crate::page_info::{LaunchDigest, PageInfoError, PageType, PAGE_SIZE, VMSA_GPA};
use crate::policy::GuestPolicy;
use crate::vp_context::{kvm_vmsa, VcpuState, VpContextError};

/// Size of a launch page as a u64, for address arithmetic.
pub const PAGE_SIZE_U64: u64 = PAGE_SIZE as u64;

/// Errors while building a plan or computing its digest.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// RAM regions must be page aligned, non-empty and must not overlap.
    #[error("invalid RAM region at {gpa:#x} (+{size:#x}): {reason}")]
    BadRamRegion {
        gpa: u64,
        size: u64,
        reason: &'static str,
    },
    /// A page or range lies (partly) outside the VM's RAM.
    #[error("{what} at GPA {gpa:#x} (+{len:#x}) lies outside the VM's RAM")]
    OutsideRam {
        what: &'static str,
        gpa: u64,
        len: u64,
    },
    /// Two directives place a page at the same GPA; firmware refuses to launch a page twice.
    #[error("page at GPA {gpa:#x} is loaded twice (overlapping IGVM pages)")]
    Overlap { gpa: u64 },
    /// Launch pages are 4 KiB; an unaligned GPA cannot be issued.
    #[error("page GPA {gpa:#x} is not 4 KiB aligned")]
    Unaligned { gpa: u64 },
    /// A page carries more than 4 KiB of data.
    #[error("page at GPA {gpa:#x} carries {len} bytes, more than one 4 KiB page")]
    PageTooLarge { gpa: u64, len: usize },
    /// The VM needs at least one vCPU; KVM creates at most a few hundred.
    #[error("invalid vCPU count {0} (must be 1..={max})", max = MAX_VCPUS)]
    BadVcpuCount(u32),
    /// The PAGE_INFO chain refused a page.
    #[error("measuring the launch: {0}")]
    Measure(#[from] PageInfoError),
    /// The vCPU state cannot be turned into a VMSA.
    #[error("building the VMSA: {0}")]
    Vmsa(#[from] VpContextError),
}

/// Upper bound on vCPUs of one utility VM (KVM's default KVM_MAX_VCPUS is far higher; a pod VM
/// never needs more, and the bound keeps measurement work bounded on hostile input).
pub const MAX_VCPUS: u32 = 512;

/// One guest RAM region: the guest physical range backed by memory (and, under SNP, by one
/// guest_memfd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    /// First guest physical address (page aligned).
    pub gpa: u64,
    /// Size in bytes (page multiple, non-zero).
    pub size: u64,
}

impl RamRegion {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.gpa.saturating_add(self.size)
    }
}

/// The VM's RAM layout, sorted by GPA, regions disjoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamLayout {
    regions: Vec<RamRegion>,
}

/// Start of the 32-bit MMIO hole of the PC layout used by the VMM (`vmm::layout`).
pub const MMIO32_START: u64 = 0xC000_0000;
/// RAM above the hole resumes at 4 GiB.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;

impl RamLayout {
    /// Validates and sorts the regions.
    pub fn new(mut regions: Vec<RamRegion>) -> Result<Self, PlanError> {
        regions.sort_by_key(|r| r.gpa);
        let mut prev_end = 0u64;
        for (i, r) in regions.iter().enumerate() {
            let bad = |reason| PlanError::BadRamRegion {
                gpa: r.gpa,
                size: r.size,
                reason,
            };
            if r.size == 0 {
                return Err(bad("empty"));
            }
            if r.gpa % PAGE_SIZE_U64 != 0 || r.size % PAGE_SIZE_U64 != 0 {
                return Err(bad("not 4 KiB aligned"));
            }
            if r.gpa.checked_add(r.size).is_none() {
                return Err(bad("wraps the address space"));
            }
            if i > 0 && r.gpa < prev_end {
                return Err(bad("overlaps the previous region"));
            }
            prev_end = r.end();
        }
        Ok(Self { regions })
    }

    /// The VMM's PC layout for `bytes` of RAM: low RAM from 0 up to the 32-bit MMIO hole at
    /// 3 GiB, the rest from 4 GiB.
    pub fn pc(bytes: u64) -> Result<Self, PlanError> {
        let low = bytes.min(MMIO32_START);
        let mut regions = vec![RamRegion { gpa: 0, size: low }];
        if bytes > low {
            regions.push(RamRegion {
                gpa: HIGH_RAM_START,
                size: bytes - low,
            });
        }
        Self::new(regions)
    }

    /// The regions, sorted by GPA.
    pub fn regions(&self) -> &[RamRegion] {
        &self.regions
    }

    /// Whether `[gpa, gpa + len)` lies inside a single RAM region.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.regions.iter().any(|r| gpa >= r.gpa && end <= r.end())
    }

    /// Error unless `[gpa, gpa + len)` is RAM.
    pub fn check(&self, what: &'static str, gpa: u64, len: u64) -> Result<(), PlanError> {
        if self.contains(gpa, len) {
            Ok(())
        } else {
            Err(PlanError::OutsideRam { what, gpa, len })
        }
    }
}

/// One 4 KiB launch page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPage {
    /// Guest physical address (page aligned).
    pub gpa: u64,
    /// Firmware page type; never [`PageType::Vmsa`] (KVM issues those itself).
    pub page_type: PageType,
    /// Source bytes (at most 4 KiB, zero-padded to a page when issued). Only NORMAL and CPUID
    /// pages carry meaningful data; it is kept for UNMEASURED pages (parameter areas) too,
    /// because they are encrypted into the guest even though not hashed.
    pub data: Vec<u8>,
}

/// A run of consecutive pages of one type, as one SNP_LAUNCH_UPDATE call would issue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRange {
    /// GPA of the first page.
    pub gpa: u64,
    /// Page type of every page in the range.
    pub page_type: PageType,
    /// Source buffer: a whole number of pages.
    pub data: Vec<u8>,
}

impl LaunchRange {
    /// Number of 4 KiB pages in the range.
    pub fn pages(&self) -> u64 {
        (self.data.len() / PAGE_SIZE) as u64
    }
}

/// A page the guest receives as shared (host-visible, not measured, not encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPage {
    /// Guest physical address (page aligned).
    pub gpa: u64,
    /// Contents (at most 4 KiB).
    pub data: Vec<u8>,
}

/// Inputs that come from the VM configuration rather than from the IGVM file.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// How IGVM pages without data are measured and issued.
    pub empty_pages: EmptyPages,
    /// Guest RAM.
    pub ram: RamLayout,
    /// Number of vCPUs (1..=[`MAX_VCPUS`]).
    pub vcpus: u32,
    /// Kernel command line for IGVM `CommandLine` parameters, if any.
    pub cmdline: Option<String>,
    /// HOST_DATA for SNP_LAUNCH_FINISH.
    pub host_data: HostData,
}

/// How an IGVM `PageData` without data is measured and issued (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmptyPages {
    /// A NORMAL page of zeros: the IGVM format's definition and the `igvm` crate's measurement.
    #[default]
    Normal,
    /// The firmware ZERO page type, as loaders with `igvmmeasure --native-zero` semantics
    /// issue it.
    Zero,
}

impl std::str::FromStr for EmptyPages {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "normal" => Ok(Self::Normal),
            "zero" => Ok(Self::Zero),
            other => Err(format!(
                "unknown empty-page type {other:?}; expected normal or zero"
            )),
        }
    }
}

/// Everything needed to launch one SNP guest.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    /// Measured (or firmware-typed) pages, in directive order.
    pub pages: Vec<LaunchPage>,
    /// Shared pages written by the VMM into host-visible memory; not part of the launch.
    pub shared: Vec<SharedPage>,
    /// RAM layout the plan was checked against.
    pub ram: RamLayout,
    /// RAM ranges the image requires (IGVM `RequiredMemory`), all inside `ram`.
    pub required_memory: Vec<RamRegion>,
    /// Guest policy for SNP_LAUNCH_START.
    pub policy: GuestPolicy,
    /// Register state given to every vCPU before SNP_LAUNCH_FINISH.
    pub vcpu_state: VcpuState,
    /// Number of vCPUs (one measured VMSA each).
    pub vcpus: u32,
    /// `vmsa_features` for KVM_SEV_INIT2 (SEV_FEATURES without SNPActive, which KVM forces).
    pub vmsa_features: u64,
    /// ID block and its authentication structure, when the image carries one.
    pub id: Option<(IdBlock, IdAuth)>,
    /// HOST_DATA for SNP_LAUNCH_FINISH.
    pub host_data: HostData,
}

impl LaunchPlan {
    /// Consecutive pages of the same type at consecutive GPAs merged into launch ranges, in
    /// order (CPUID pages excepted). Merging never reorders pages, so the digest is unchanged.
    pub fn ranges(&self) -> Vec<LaunchRange> {
        let mut out: Vec<LaunchRange> = Vec::new();
        for page in &self.pages {
            let mut padded = page.data.clone();
            padded.resize(PAGE_SIZE, 0);
            if let Some(last) = out.last_mut() {
                let next = last.gpa.saturating_add(last.data.len() as u64);
                // CPUID pages stay single so a rejected table can be retried on its own.
                if last.page_type == page.page_type
                    && page.page_type != PageType::Cpuid
                    && next == page.gpa
                {
                    last.data.extend_from_slice(&padded);
                    continue;
                }
            }
            out.push(LaunchRange {
                gpa: page.gpa,
                page_type: page.page_type,
                data: padded,
            });
        }
        out
    }

    /// The VMSA KVM synthesises for each vCPU at LAUNCH_FINISH.
    pub fn vmsa_page(&self) -> Result<[u8; PAGE_SIZE], PlanError> {
        Ok(kvm_vmsa(&self.vcpu_state, self.vmsa_features)?)
    }

    /// The launch digest the firmware will report, computed from the plan alone.
    pub fn expected_digest(&self) -> Result<LaunchDigest, PlanError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(PlanError::BadVcpuCount(self.vcpus));
        }
        let mut ld = LaunchDigest::new();
        for page in &self.pages {
            ld.extend(page.gpa, page.page_type, &page.data)?;
        }
        let vmsa = self.vmsa_page()?;
        for _ in 0..self.vcpus {
            ld.extend(VMSA_GPA, PageType::Vmsa, &vmsa)?;
        }
        Ok(ld)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pc_layout_splits_at_the_hole() {
        let l = RamLayout::pc(4 << 30).unwrap();
        assert_eq!(
            l.regions(),
            &[
                RamRegion {
                    gpa: 0,
                    size: MMIO32_START
                },
                RamRegion {
                    gpa: HIGH_RAM_START,
                    size: (4 << 30) - MMIO32_START
                }
            ]
        );
        assert!(l.contains(0xBFFF_F000, 0x1000));
        assert!(!l.contains(0xBFFF_F000, 0x2000));
        assert!(!l.contains(u64::MAX, 2));
        assert!(RamLayout::pc(0).is_err());
    }

    #[test]
    fn layout_rejects_overlap_and_misalignment() {
        let r = |gpa, size| RamRegion { gpa, size };
        assert!(RamLayout::new(vec![r(0, 0x2000), r(0x1000, 0x1000)]).is_err());
        assert!(RamLayout::new(vec![r(0x800, 0x1000)]).is_err());
        assert!(RamLayout::new(vec![r(u64::MAX - 0xfff, 0x2000)]).is_err());
        assert!(RamLayout::new(vec![r(0x1000, 0x1000), r(0, 0x1000)]).is_ok());
    }
}
