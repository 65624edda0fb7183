//! The GHCB MSR protocol (GHCB spec 56421 §2.3.1 "GHCB MSR Protocol"): requests the guest
//! writes to MSR 0xC001_0130 before a VMGEXIT when it has no GHCB page (early boot, GHCB
//! registration, page-state changes, termination). Bits 11:0 carry GHCBInfo (the request or
//! response code), bits 63:12 GHCBData.

use super::GhcbError;

/// The GHCB MSR.
pub const GHCB_MSR: u32 = 0xC001_0130;

const INFO_MASK: u64 = 0xFFF;

/// Request/response codes (GHCBInfo).
pub mod info {
    /// SEV information response.
    pub const SEV_INFO_RESP: u64 = 0x001;
    /// SEV information request.
    pub const SEV_INFO_REQ: u64 = 0x002;
    /// CPUID request.
    pub const CPUID_REQ: u64 = 0x004;
    /// CPUID response.
    pub const CPUID_RESP: u64 = 0x005;
    /// AP reset hold request.
    pub const AP_RESET_HOLD_REQ: u64 = 0x006;
    /// AP reset hold response.
    pub const AP_RESET_HOLD_RESP: u64 = 0x007;
    /// Preferred GHCB GPA request.
    pub const PREFERRED_GHCB_REQ: u64 = 0x010;
    /// Preferred GHCB GPA response.
    pub const PREFERRED_GHCB_RESP: u64 = 0x011;
    /// Register GHCB GPA request.
    pub const REGISTER_GHCB_REQ: u64 = 0x012;
    /// Register GHCB GPA response.
    pub const REGISTER_GHCB_RESP: u64 = 0x013;
    /// SNP page state change request.
    pub const PSC_REQ: u64 = 0x014;
    /// SNP page state change response.
    pub const PSC_RESP: u64 = 0x015;
    /// Hypervisor feature support request.
    pub const HV_FEATURES_REQ: u64 = 0x080;
    /// Hypervisor feature support response.
    pub const HV_FEATURES_RESP: u64 = 0x081;
    /// Termination request.
    pub const TERMINATE_REQ: u64 = 0x100;
}

/// Hypervisor feature bits (GHCB spec §2.3.1, "Hypervisor Feature Support").
pub mod features {
    /// SEV-SNP support.
    pub const SNP: u64 = 1 << 0;
    /// SNP AP creation NAE event.
    pub const SNP_AP_CREATION: u64 = 1 << 1;
}

/// A register of a CPUID MSR-protocol request (GHCBData bits 31:30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuidReg {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

/// A page-state operation (MSR protocol GHCBData bits 55:52; PSC descriptor entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PscOp {
    /// Make the page private (assigned, not validated).
    Private,
    /// Make the page shared.
    Shared,
    /// Split a 2 MiB RMP entry (NAE only).
    Psmash,
    /// Join 512 4 KiB RMP entries (NAE only).
    Unsmash,
}

impl PscOp {
    /// Decode an operation field.
    pub fn from_bits(op: u64) -> Option<Self> {
        match op {
            1 => Some(PscOp::Private),
            2 => Some(PscOp::Shared),
            3 => Some(PscOp::Psmash),
            4 => Some(PscOp::Unsmash),
            _ => None,
        }
    }
}

/// A decoded MSR-protocol request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrRequest {
    /// SEV information.
    SevInfo,
    /// One CPUID register of `leaf` (subleaf 0).
    Cpuid { leaf: u32, reg: CpuidReg },
    /// SEV-ES AP parking.
    ApResetHold,
    /// Which GHCB GPA the hypervisor prefers.
    PreferredGhcb,
    /// Register the GHCB at `gfn`.
    RegisterGhcb { gfn: u64 },
    /// Page state change of one 4 KiB page.
    PageState { gfn: u64, op: PscOp },
    /// Hypervisor features.
    HvFeatures,
    /// Termination with a reason.
    Terminate { set: u8, code: u8 },
}

/// Decode the value the guest wrote to the GHCB MSR.
pub fn decode(value: u64) -> Result<MsrRequest, GhcbError> {
    let data = value >> 12;
    let bad = |what: &'static str| GhcbError::InvalidInput { what, value };
    match value & INFO_MASK {
        info::SEV_INFO_REQ => Ok(MsrRequest::SevInfo),
        info::CPUID_REQ => {
            let reg = match (value >> 30) & 3 {
                0 => CpuidReg::Eax,
                1 => CpuidReg::Ebx,
                2 => CpuidReg::Ecx,
                _ => CpuidReg::Edx,
            };
            Ok(MsrRequest::Cpuid {
                leaf: (value >> 32) as u32,
                reg,
            })
        }
        info::AP_RESET_HOLD_REQ => Ok(MsrRequest::ApResetHold),
        info::PREFERRED_GHCB_REQ => Ok(MsrRequest::PreferredGhcb),
        info::REGISTER_GHCB_REQ => Ok(MsrRequest::RegisterGhcb { gfn: data }),
        info::PSC_REQ => {
            let gfn = data & ((1 << 40) - 1);
            // Only private and shared exist in the MSR protocol; bits 63:56 are reserved.
            let op = match (value >> 52) & 0xF {
                1 => PscOp::Private,
                2 => PscOp::Shared,
                _ => return Err(bad("MSR page state operation")),
            };
            if value >> 56 != 0 {
                return Err(bad("MSR page state reserved bits"));
            }
            Ok(MsrRequest::PageState { gfn, op })
        }
        info::HV_FEATURES_REQ => Ok(MsrRequest::HvFeatures),
        info::TERMINATE_REQ => Ok(MsrRequest::Terminate {
            set: ((value >> 12) & 0xF) as u8,
            code: ((value >> 16) & 0xFF) as u8,
        }),
        _ => Err(GhcbError::UnknownMsrRequest { value }),
    }
}

/// SEV_INFO response: protocol version range and C-bit position.
pub fn sev_info(max: u16, min: u16, c_bit: u8) -> u64 {
    (u64::from(max) << 48) | (u64::from(min) << 32) | (u64::from(c_bit) << 24) | info::SEV_INFO_RESP
}

/// CPUID response carrying one register.
pub fn cpuid(reg: CpuidReg, value: u32) -> u64 {
    let r = match reg {
        CpuidReg::Eax => 0,
        CpuidReg::Ebx => 1,
        CpuidReg::Ecx => 2,
        CpuidReg::Edx => 3,
    };
    (u64::from(value) << 32) | (r << 30) | info::CPUID_RESP
}

/// A response whose GHCBData is `data` (bits 63:12).
pub fn with_data(code: u64, data: u64) -> u64 {
    (data << 12) | code
}

/// PSC response: bits 63:32 carry the error (0 = success).
pub fn psc(error: u32) -> u64 {
    (u64::from(error) << 32) | info::PSC_RESP
}

/// A termination request (what a guest writes; also used to report host-decided reasons).
pub fn terminate(set: u8, code: u8) -> u64 {
    (u64::from(code) << 16) | (u64::from(set & 0xF) << 12) | info::TERMINATE_REQ
}
