//! The ordered launch of an OVMF-based SNP guest and its expected digest.
//!
//! Order (what QEMU issues through KVM, and what `sev-snp-measure` models):
//! 1. the whole firmware image as NORMAL pages, from `4 GiB − size` upwards;
//! 2. the SEV metadata sections in image order: SNP_SEC_MEMORY as ZERO pages (UNMEASURED for
//!    the gce convention), SNP_SECRETS as the SECRETS page, CPUID as the CPUID page (the ec2
//!    convention issues CPUID pages last, after every other section), SVSM_CAA as ZERO pages,
//!    SNP_KERNEL_HASHES as one NORMAL page holding the SEV hashes table when a kernel is
//!    measured, else as ZERO pages;
//! 3. one VMSA per vCPU at GPA 0xFFFF_FFFF_F000, BSP first (reset vector), then the APs (SEV-ES
//!    AP reset address), measured by KVM at SNP_LAUNCH_FINISH.
//!
//! The policy, ID block and HOST_DATA are not part of the digest (Firmware ABI §8.17/§8.18).

use super::hashes::{HashesError, SevHashes};
use super::vcpu::{reset_vmsa, VmmType, BSP_RESET_EIP};
use super::{OvmfImage, SectionKind};
use crate::page_info::{LaunchDigest, PageInfoError, PageType, PAGE_SIZE, VMSA_GPA};
use crate::plan::LaunchPage;
use crate::vmsa::Vmsa;
use std::fmt;

/// Most vCPUs a measured launch may declare; bounds the work done for a hostile request.
pub const MAX_VCPUS: u32 = 512;

/// Errors planning or measuring an OVMF launch.
#[derive(Debug, thiserror::Error)]
pub enum OvmfLaunchError {
    /// At least one vCPU, at most [`MAX_VCPUS`].
    #[error("invalid vCPU count {0} (must be 1..={MAX_VCPUS})")]
    BadVcpuCount(u32),
    /// Measured direct boot needs the firmware to reserve a page for the hashes.
    #[error("a kernel was given but the OVMF image has no SNP_KERNEL_HASHES section; use an OVMF build for measured direct boot (e.g. OVMF.amdsev.fd)")]
    NoKernelHashesSection,
    /// The footer must say where in the hashes page the table goes.
    #[error("a kernel was given but the OVMF image does not declare a SEV hashes table address")]
    NoHashesTable,
    /// The table address must fall in the SNP_KERNEL_HASHES page.
    #[error("SEV hashes table at {table:#x} is not inside the SNP_KERNEL_HASHES page at {section:#x} (size {size:#x})")]
    HashesTableOutsideSection { table: u32, section: u32, size: u32 },
    /// More than one vCPU needs the AP start address.
    #[error("{vcpus} vCPUs requested but the OVMF image has a zero SEV-ES AP reset address")]
    NoApResetAddress { vcpus: u32 },
    /// Building the hashes page failed.
    #[error("kernel hashes: {0}")]
    Hashes(#[from] HashesError),
    /// The digest chain refused a page.
    #[error("measuring the launch: {0}")]
    Measure(#[from] PageInfoError),
}

/// What the measurement depends on besides the image.
#[derive(Debug, Clone)]
pub struct OvmfLaunchConfig {
    /// Number of vCPUs (one VMSA each).
    pub vcpus: u32,
    /// Reset-state convention of the VMM that will launch the guest.
    pub vmm: VmmType,
    /// CPUID(1).EAX of the vCPU model (only the QEMU convention measures it).
    pub vcpu_signature: u32,
    /// SEV_FEATURES of every VMSA (KVM_SEV_INIT2 `vmsa_features` plus SNPActive).
    pub guest_features: u64,
    /// Hashes of a directly booted kernel, initrd and command line, if any.
    pub kernel_hashes: Option<SevHashes>,
}

/// Where a launch step comes from, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepSource {
    /// The firmware volume.
    Firmware,
    /// An SEV metadata section.
    Section(SectionKind),
}

impl fmt::Display for StepSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepSource::Firmware => f.write_str("firmware"),
            StepSource::Section(kind) => write!(f, "{kind}"),
        }
    }
}

/// One SNP_LAUNCH_UPDATE range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchStep {
    pub source: StepSource,
    /// GPA of the first page.
    pub gpa: u64,
    pub page_type: PageType,
    /// Number of 4 KiB pages.
    pub pages: u64,
    /// Source bytes (`pages` × 4 KiB) for NORMAL ranges; `None` where firmware ignores them.
    pub data: Option<Vec<u8>>,
}

/// The full launch: update ranges in order, then one VMSA per vCPU.
#[derive(Debug, Clone)]
pub struct OvmfLaunch {
    pub steps: Vec<LaunchStep>,
    pub vmsas: Vec<Vmsa>,
}

impl OvmfLaunch {
    /// Plan the launch of `image` under `cfg`.
    pub fn plan(image: &OvmfImage, cfg: &OvmfLaunchConfig) -> Result<Self, OvmfLaunchError> {
        if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
            return Err(OvmfLaunchError::BadVcpuCount(cfg.vcpus));
        }
        if cfg.vcpus > 1 && image.ap_reset_eip() == 0 {
            return Err(OvmfLaunchError::NoApResetAddress { vcpus: cfg.vcpus });
        }
        let mut steps = vec![LaunchStep {
            source: StepSource::Firmware,
            gpa: image.gpa(),
            page_type: PageType::Normal,
            pages: (image.data().len() / PAGE_SIZE) as u64,
            data: Some(image.data().to_vec()),
        }];
        let defer_cpuid = cfg.vmm == VmmType::Ec2;
        for s in image.sections() {
            if defer_cpuid && s.kind == SectionKind::Cpuid {
                continue;
            }
            steps.push(section_step(image, cfg, s.kind, s.gpa, s.size)?);
        }
        if defer_cpuid {
            for s in image
                .sections()
                .iter()
                .filter(|s| s.kind == SectionKind::Cpuid)
            {
                steps.push(section_step(image, cfg, s.kind, s.gpa, s.size)?);
            }
        }
        if cfg.kernel_hashes.is_some() && image.section(SectionKind::SnpKernelHashes).is_none() {
            return Err(OvmfLaunchError::NoKernelHashesSection);
        }
        let bsp = reset_vmsa(
            cfg.vmm,
            BSP_RESET_EIP,
            cfg.guest_features,
            cfg.vcpu_signature,
        );
        let mut vmsas = vec![bsp];
        if cfg.vcpus > 1 {
            let ap = reset_vmsa(
                cfg.vmm,
                image.ap_reset_eip(),
                cfg.guest_features,
                cfg.vcpu_signature,
            );
            vmsas.extend((1..cfg.vcpus).map(|_| ap.clone()));
        }
        Ok(Self { steps, vmsas })
    }

    /// The update ranges as single 4 KiB pages in issue order, the form launch backends
    /// consume. VMSAs are not included: KVM issues those itself at SNP_LAUNCH_FINISH, from the
    /// register state matching [`OvmfLaunch::vmsas`]. Pages whose contents firmware ignores
    /// carry no data; a launcher fills the CPUID page with the host's CPUID table (the digest
    /// does not depend on it, Firmware ABI §8.17).
    pub fn launch_pages(&self) -> Vec<LaunchPage> {
        let mut pages = Vec::new();
        for step in &self.steps {
            for i in 0..step.pages {
                let data = match &step.data {
                    Some(bytes) => {
                        let start = (i as usize).saturating_mul(PAGE_SIZE);
                        let end = start.saturating_add(PAGE_SIZE).min(bytes.len());
                        bytes.get(start..end).unwrap_or_default().to_vec()
                    }
                    None => Vec::new(),
                };
                pages.push(LaunchPage {
                    gpa: step.gpa + i * PAGE_SIZE as u64,
                    page_type: step.page_type,
                    data,
                });
            }
        }
        pages
    }

    /// The launch digest firmware will report for this launch.
    pub fn measure(&self) -> Result<LaunchDigest, OvmfLaunchError> {
        let mut ld = LaunchDigest::new();
        for step in &self.steps {
            match &step.data {
                Some(data) => ld.extend_pages(step.gpa, step.page_type, data)?,
                None => ld.extend_blank(step.gpa, step.page_type, step.pages)?,
            }
        }
        for vmsa in &self.vmsas {
            ld.extend(VMSA_GPA, PageType::Vmsa, &vmsa.to_bytes())?;
        }
        log::debug!(
            "OVMF launch: {} update ranges, {} VMSAs, digest {ld}",
            self.steps.len(),
            self.vmsas.len()
        );
        Ok(ld)
    }
}

/// Plan and measure in one call.
pub fn measure(image: &OvmfImage, cfg: &OvmfLaunchConfig) -> Result<LaunchDigest, OvmfLaunchError> {
    OvmfLaunch::plan(image, cfg)?.measure()
}

fn section_step(
    image: &OvmfImage,
    cfg: &OvmfLaunchConfig,
    kind: SectionKind,
    gpa: u32,
    size: u32,
) -> Result<LaunchStep, OvmfLaunchError> {
    let blank = |page_type| LaunchStep {
        source: StepSource::Section(kind),
        gpa: u64::from(gpa),
        page_type,
        pages: u64::from(size) / PAGE_SIZE as u64,
        data: None,
    };
    Ok(match kind {
        SectionKind::SnpSecMemory if cfg.vmm == VmmType::Gce => blank(PageType::Unmeasured),
        SectionKind::SnpSecMemory | SectionKind::SvsmCaa => blank(PageType::Zero),
        SectionKind::SnpSecrets => blank(PageType::Secrets),
        SectionKind::Cpuid => blank(PageType::Cpuid),
        SectionKind::SnpKernelHashes => match &cfg.kernel_hashes {
            None => blank(PageType::Zero),
            Some(hashes) => {
                let table = image
                    .hashes_table_gpa()
                    .ok_or(OvmfLaunchError::NoHashesTable)?;
                if size as usize != PAGE_SIZE || table & !0xfff != gpa {
                    return Err(OvmfLaunchError::HashesTableOutsideSection {
                        table,
                        section: gpa,
                        size,
                    });
                }
                LaunchStep {
                    source: StepSource::Section(kind),
                    gpa: u64::from(gpa),
                    page_type: PageType::Normal,
                    pages: 1,
                    data: Some(hashes.page((table & 0xfff) as usize)?),
                }
            }
        },
    })
}
