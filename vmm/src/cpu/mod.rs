//! Per-vCPU architectural setup done once before the first `KVM_RUN`.
//!
//! Every vCPU gets CPUID, boot MSRs, FPU control words and its local APIC's LINT pins wired
//! as on a PC (LINT0 = ExtINT from the PIC, LINT1 = NMI). Only the boot vCPU gets registers:
//! the others stay in the in-kernel LAPIC's wait-for-SIPI state, as after an INIT, and are
//! started by the guest itself.

pub mod cpuid;
pub mod regs;

use kvm_bindings::{kvm_lapic_state, kvm_msr_entry, CpuId, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

pub use regs::EntryMode;

/// Errors configuring a vCPU; all are host-side (KVM refused a value).
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("vCPU {index}: {op} failed: {source}")]
    Kvm {
        index: u32,
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {index}: building the MSR list failed")]
    MsrList { index: u32 },
    #[error("vCPU {index}: {source}")]
    Regs { index: u32, source: regs::RegsError },
}

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// MISC_ENABLE bit 0: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRdefType: MTRRs enabled, default type write-back, so RAM is cacheable.
const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;

/// Boot MSR values: a clean syscall state, TSC at zero, caching enabled.
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ]
}

/// LAPIC register offsets and LVT delivery modes (Intel SDM vol. 3A, 11.5.1).
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const DELIVERY_EXTINT: u32 = 0x7;
const DELIVERY_NMI: u32 = 0x4;

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &lapic.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in lapic.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

/// Wires LINT0 to ExtINT and LINT1 to NMI, leaving the other LVT bits as KVM set them.
pub fn wire_lint_pins(lapic: &mut kvm_lapic_state) {
    for (offset, mode) in [(APIC_LVT0, DELIVERY_EXTINT), (APIC_LVT1, DELIVERY_NMI)] {
        let value = (lapic_reg(lapic, offset) & !0x700) | (mode << 8);
        set_lapic_reg(lapic, offset, value);
    }
}

/// Writes [`boot_msrs`]. MSRs KVM does not list for save/restore are tried one by one, since
/// some it emulates (MTRRdefType) are absent from the list; a refusal leaves the reset value.
fn set_boot_msrs(vcpu: &VcpuFd, index: u32, supported: &[u32]) -> Result<(), CpuError> {
    let entry = |(msr, data): (u32, u64)| kvm_msr_entry {
        index: msr,
        data,
        ..Default::default()
    };
    let (listed, unlisted): (Vec<_>, Vec<_>) = boot_msrs()
        .into_iter()
        .partition(|(msr, _)| supported.contains(msr));
    let listed: Vec<kvm_msr_entry> = listed.into_iter().map(entry).collect();
    let msrs = Msrs::from_entries(&listed).map_err(|_| CpuError::MsrList { index })?;
    let written = vcpu.set_msrs(&msrs).map_err(|source| CpuError::Kvm {
        index,
        op: "KVM_SET_MSRS",
        source,
    })?;
    if written != listed.len() {
        log::warn!(
            "vCPU {index}: KVM accepted {written} of {} boot MSRs",
            listed.len()
        );
    }
    for (msr, data) in unlisted {
        let one =
            Msrs::from_entries(&[entry((msr, data))]).map_err(|_| CpuError::MsrList { index })?;
        if !matches!(vcpu.set_msrs(&one), Ok(1)) && index == 0 {
            log::debug!("KVM refused MSR {msr:#x}; leaving it at its reset value");
        }
    }
    Ok(())
}

/// AMD's HWCR and its TscFreqSel bit: real AMD parts from family 10h on report that the TSC
/// counts at the P0 frequency, and Linux flags a firmware bug when the bit is clear.
const MSR_K7_HWCR: u32 = 0xc001_0015;
const HWCR_TSC_FREQ_SEL: u64 = 1 << 24;
/// CPUID leaf 0 EBX of AMD processors ("Auth" of "AuthenticAMD").
const CPUID_VENDOR_AMD_EBX: u32 = 0x6874_7541;

fn is_amd(cpuid: &CpuId) -> bool {
    cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == 0 && e.ebx == CPUID_VENDOR_AMD_EBX)
}

/// Sets HWCR.TscFreqSel, keeping the other bits; a KVM that refuses it leaves HWCR alone.
fn set_tsc_freq_sel(vcpu: &VcpuFd, index: u32) -> Result<(), CpuError> {
    let hwcr = |data| {
        Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_K7_HWCR,
            data,
            ..Default::default()
        }])
        .map_err(|_| CpuError::MsrList { index })
    };
    let mut msrs = hwcr(0)?;
    if !matches!(vcpu.get_msrs(&mut msrs), Ok(1)) {
        log::debug!("vCPU {index}: KVM does not expose HWCR");
        return Ok(());
    }
    let current = msrs.as_slice().first().map_or(0, |e| e.data);
    if current & HWCR_TSC_FREQ_SEL == 0
        && !matches!(vcpu.set_msrs(&hwcr(current | HWCR_TSC_FREQ_SEL)?), Ok(1))
    {
        log::debug!("vCPU {index}: KVM refused HWCR.TscFreqSel");
    }
    Ok(())
}

/// Everything a vCPU needs before its first run.
pub struct VcpuSetup<'a> {
    pub index: u32,
    pub count: u32,
    pub supported_cpuid: &'a CpuId,
    /// MSR indices KVM can save and restore; boot MSRs outside it are skipped.
    pub supported_msrs: &'a [u32],
    /// For the boot vCPU only: guest memory and the entry protocol.
    pub boot: Option<(&'a GuestMemoryMmap, EntryMode)>,
}

/// Applies [`VcpuSetup`] to `vcpu`.
pub fn configure(vcpu: &VcpuFd, setup: &VcpuSetup<'_>) -> Result<(), CpuError> {
    let index = setup.index;
    let kvm = |op| move |source| CpuError::Kvm { index, op, source };

    let mut cpuid = setup.supported_cpuid.clone();
    cpuid::patch_for_vcpu(cpuid.as_mut_slice(), index, setup.count);
    vcpu.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;

    set_boot_msrs(vcpu, index, setup.supported_msrs)?;
    if is_amd(setup.supported_cpuid) {
        set_tsc_freq_sel(vcpu, index)?;
    }

    vcpu.set_fpu(&regs::boot_fpu())
        .map_err(kvm("KVM_SET_FPU"))?;

    let mut lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    wire_lint_pins(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;

    if let Some((mem, mode)) = &setup.boot {
        let mut sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        regs::setup_sregs(mem, mode, &mut sregs)
            .map_err(|source| CpuError::Regs { index, source })?;
        vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
        vcpu.set_regs(&regs::boot_regs(mode))
            .map_err(kvm("KVM_SET_REGS"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_pins_wired_as_on_a_pc() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT0, 0x0001_0700);
        set_lapic_reg(&mut lapic, APIC_LVT1, 0x0001_0000);
        wire_lint_pins(&mut lapic);
        assert_eq!(lapic_reg(&lapic, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&lapic, APIC_LVT1), 0x0001_0400);
        set_lapic_reg(&mut lapic, APIC_LVT0, 0);
        wire_lint_pins(&mut lapic);
        assert_eq!(lapic_reg(&lapic, APIC_LVT0), 0x700);
    }

    #[test]
    fn boot_msrs_enable_caching_and_fast_strings() {
        let msrs = boot_msrs();
        assert!(msrs.contains(&(MSR_MTRR_DEF_TYPE, 0x806)));
        assert!(msrs.contains(&(MSR_IA32_MISC_ENABLE, 1)));
        let mut indices: Vec<u32> = msrs.iter().map(|m| m.0).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), msrs.len());
    }
}
