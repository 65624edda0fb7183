//! Initial vCPU state of an OVMF-based SNP launch: which VMSA each VMM makes KVM measure.
//!
//! Every vCPU starts in real mode: the BSP at the architectural reset vector (EIP
//! 0xFFFF_FFF0), the APs at the SEV-ES AP reset address from the OVMF footer (under SEV-ES the
//! hypervisor cannot redirect APs later, so firmware publishes where they must start). The VMMs
//! differ in details of that reset state, and those details are measured:
//! - **QEMU** (with KVM_SEV_INIT2): RDX = CPUID(1).EAX signature of the configured CPU model,
//!   code/data/TSS segment types with the accessed bit set (0x9b/0x93/0x8b), and the FPU state
//!   after FNINIT (FCW 0x37f, MXCSR 0x1f80) because KVM syncs it for SNP VMs.
//! - **ec2**: RDX = 0x600 whatever the CPU, SS/TR types without the accessed bit, the BSP's CS
//!   not accessed (0x9a), FPU words zero.
//! - **gce**: like QEMU's segments but RDX = 0x600, a non-default PAT (0x70106) and FPU zero.
//!
//! These conventions are those of `sev-snp-measure` 0.0.13, the reference the project's
//! measurements are checked against.

use crate::vmsa::{Segment, Vmsa, FCW_RESET, MXCSR_RESET};
use std::fmt;
use std::str::FromStr;

/// Architectural reset EIP of the bootstrap processor.
pub const BSP_RESET_EIP: u32 = 0xffff_fff0;
/// RDX the ec2 and gce VMMs load (family 6 signature, independent of the CPU model).
const FIXED_RESET_RDX: u64 = 0x600;
/// PAT the gce VMM programs instead of the reset value.
const GCE_PAT: u64 = 0x0007_0106;

/// Errors choosing the vCPU model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VcpuError {
    /// A CPU model name not in [`VCPU_TYPES`].
    #[error("unknown vCPU type {name:?} (known: {known})")]
    UnknownType { name: String, known: String },
    /// A VMM convention name other than qemu, ec2 or gce.
    #[error("unknown VMM type {name:?} (expected qemu, ec2 or gce)")]
    UnknownVmm { name: String },
    /// Family/model/stepping that the CPUID(1).EAX encoding cannot represent.
    #[error("CPU family {family:#x} model {model:#x} stepping {stepping:#x} cannot be encoded in CPUID(1).EAX")]
    BadSignature {
        family: u32,
        model: u32,
        stepping: u32,
    },
}

/// Whose reset-state conventions the launch follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmmType {
    Qemu,
    Ec2,
    Gce,
}

impl FromStr for VmmType {
    type Err = VcpuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "qemu" => Ok(VmmType::Qemu),
            "ec2" => Ok(VmmType::Ec2),
            "gce" => Ok(VmmType::Gce),
            _ => Err(VcpuError::UnknownVmm { name: s.to_owned() }),
        }
    }
}

impl fmt::Display for VmmType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmmType::Qemu => "qemu",
            VmmType::Ec2 => "ec2",
            VmmType::Gce => "gce",
        })
    }
}

/// QEMU's built-in AMD EPYC CPU models: (name, family, model, stepping), from QEMU's
/// `builtin_x86_defs` (all versions of a model share its signature).
pub const VCPU_TYPES: &[(&str, u32, u32, u32)] = &[
    ("EPYC", 23, 1, 2),
    ("EPYC-v1", 23, 1, 2),
    ("EPYC-v2", 23, 1, 2),
    ("EPYC-IBPB", 23, 1, 2),
    ("EPYC-v3", 23, 1, 2),
    ("EPYC-v4", 23, 1, 2),
    ("EPYC-Rome", 23, 49, 0),
    ("EPYC-Rome-v1", 23, 49, 0),
    ("EPYC-Rome-v2", 23, 49, 0),
    ("EPYC-Rome-v3", 23, 49, 0),
    ("EPYC-Milan", 25, 1, 1),
    ("EPYC-Milan-v1", 25, 1, 1),
    ("EPYC-Milan-v2", 25, 1, 1),
    ("EPYC-Genoa", 25, 17, 0),
    ("EPYC-Genoa-v1", 25, 17, 0),
    ("EPYC-Turin", 26, 0, 0),
];

/// Encode family/model/stepping as CPUID Fn0000_0001_EAX (AMD CPUID Specification 25481,
/// "Family, Model, Stepping Identifiers"): families above 0xF use base family 0xF plus an
/// extended family; the model splits into base (low nibble) and extended (high nibble).
pub fn cpu_signature(family: u32, model: u32, stepping: u32) -> Result<u32, VcpuError> {
    let bad = VcpuError::BadSignature {
        family,
        model,
        stepping,
    };
    if model > 0xff || stepping > 0xf || family > 0xf + 0xff {
        return Err(bad);
    }
    let (base_family, ext_family) = if family > 0xf {
        (0xf, family - 0xf)
    } else {
        (family, 0)
    };
    Ok((ext_family << 20)
        | ((model >> 4) << 16)
        | (base_family << 8)
        | ((model & 0xf) << 4)
        | stepping)
}

/// Signature of a named QEMU CPU model (names match case-insensitively).
pub fn vcpu_type_signature(name: &str) -> Result<u32, VcpuError> {
    let (_, family, model, stepping) = VCPU_TYPES
        .iter()
        .find(|t| t.0.eq_ignore_ascii_case(name))
        .ok_or_else(|| VcpuError::UnknownType {
        name: name.to_owned(),
        known: VCPU_TYPES
            .iter()
            .map(|t| t.0)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    cpu_signature(*family, *model, *stepping)
}

/// The VMSA the VMM makes KVM measure for a vCPU starting at `eip`.
///
/// `signature` (CPUID(1).EAX) is used by QEMU only; the other conventions load a fixed RDX.
pub fn reset_vmsa(vmm: VmmType, eip: u32, sev_features: u64, signature: u32) -> Vmsa {
    let mut v = Vmsa::reset_state(eip, sev_features);
    match vmm {
        VmmType::Qemu => {
            v.rdx = u64::from(signature);
            v.mxcsr = MXCSR_RESET;
            v.x87_fcw = FCW_RESET;
        }
        VmmType::Ec2 => {
            if eip == BSP_RESET_EIP {
                v.cs.attrib = 0x9a;
            }
            v.ss = Segment {
                attrib: 0x92,
                ..v.ss
            };
            v.tr = Segment {
                attrib: 0x83,
                ..v.tr
            };
            v.rdx = FIXED_RESET_RDX;
        }
        VmmType::Gce => {
            v.g_pat = GCE_PAT;
            v.rdx = FIXED_RESET_RDX;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha384};

    #[test]
    fn signatures_of_named_models() {
        assert_eq!(vcpu_type_signature("EPYC-v4"), Ok(0x0080_0f12));
        assert_eq!(vcpu_type_signature("epyc-milan"), Ok(0x00a0_0f11));
        assert_eq!(vcpu_type_signature("EPYC-Genoa"), Ok(0x00a1_0f10));
        assert_eq!(vcpu_type_signature("EPYC-Rome"), Ok(0x0083_0f10));
        assert_eq!(vcpu_type_signature("EPYC-Turin"), Ok(0x00b0_0f00));
        assert!(matches!(
            vcpu_type_signature("Skylake"),
            Err(VcpuError::UnknownType { .. })
        ));
    }

    #[test]
    fn signature_encoding_limits() {
        assert_eq!(cpu_signature(6, 0x55, 4), Ok(0x0005_0654));
        assert_eq!(cpu_signature(0x10e, 0xff, 0xf), Ok(0x0fff_0fff));
        for (f, m, s) in [(0x10f, 0, 0), (23, 0x100, 0), (23, 1, 0x10)] {
            assert!(cpu_signature(f, m, s).is_err());
        }
    }

    #[test]
    fn vmm_names() {
        assert_eq!("QEMU".parse::<VmmType>(), Ok(VmmType::Qemu));
        assert_eq!("ec2".parse::<VmmType>(), Ok(VmmType::Ec2));
        assert_eq!("gce".parse::<VmmType>(), Ok(VmmType::Gce));
        assert!("xen".parse::<VmmType>().is_err());
        assert_eq!(VmmType::Ec2.to_string(), "ec2");
    }

    /// SHA-384 of the pages `sev-snp-measure` 0.0.13 builds with
    /// `VMSA.build_save_area(eip, 1, sig, vmm)`.
    #[test]
    fn kat_vmsa_pages() {
        let cases = [
            (VmmType::Qemu, BSP_RESET_EIP, 0x0080_0f12, "77920c4c629ff47e90c0e174fc1ad0eb6fa664f88cd4739488058a8c6cb1a77b3856f55378e9518d0da99452d51c553a"),
            (VmmType::Qemu, 0xffff_b000, 0x00a0_0f11, "36a4486d20bbe16e75c4fe43159ecdc9d006d37cdc985feaf8e92238c2d14625d3fe507229b2cc4d5cd77e65bbb1474b"),
            (VmmType::Ec2, BSP_RESET_EIP, 0, "d08442e8bcdb6a5dcd7f22e4f7fd6979beffb9f0bb54a9d1977407fe84f482abf23c1baae6ce95a6a9e7a94c3c51f412"),
            (VmmType::Ec2, 0x0080_b004, 0, "acff2d22db95b8eb82272d844aa2ad1f8f84218ccbab003697acade12228a6e901256e160d41713c22fed92e0a1ed0e1"),
        ];
        for (vmm, eip, sig, want) in cases {
            let page = reset_vmsa(vmm, eip, 1, sig).to_bytes();
            assert_eq!(
                crate::hex::encode(&Sha384::digest(page)),
                want,
                "{vmm} {eip:#x}"
            );
        }
    }

    #[test]
    fn ec2_ignores_signature() {
        assert_eq!(
            reset_vmsa(VmmType::Ec2, BSP_RESET_EIP, 1, 0x800f12),
            reset_vmsa(VmmType::Ec2, BSP_RESET_EIP, 1, 0xa10f10)
        );
        assert_ne!(
            reset_vmsa(VmmType::Qemu, BSP_RESET_EIP, 1, 0x800f12),
            reset_vmsa(VmmType::Qemu, BSP_RESET_EIP, 1, 0xa10f10)
        );
    }
}
