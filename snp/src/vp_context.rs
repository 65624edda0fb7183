//! From an IGVM SNP VP context to the KVM register state that makes KVM synthesise the very
//! same VMSA — and the model of that synthesis used for the expected digest.
//!
//! On KVM, userspace never hands a VMSA to firmware. At KVM_SEV_SNP_LAUNCH_FINISH KVM builds
//! each vCPU's VMSA from its register state (`sev_es_sync_vmsa` in KVM's `sev.c`) and measures
//! it as a VMSA page at GPA 0xFFFF_FFFF_F000, after every userspace LAUNCH_UPDATE. A VMSA
//! written by an IGVM author can therefore only be honoured if KVM regenerates it byte for
//! byte. [`VcpuState::from_vmsa`] converts the file's VMSA, [`kvm_vmsa`] models what KVM writes,
//! and the conversion refuses a file when the two differ, naming the first differing field.
//!
//! Where each VMSA byte comes from under KVM (everything not listed is zero):
//! | VMSA field | source |
//! | --- | --- |
//! | ES CS SS DS FS GS LDTR TR (selector, attrib, limit, base) | KVM_SET_SREGS; attrib is the VMCB 12-bit packing of type/S/DPL/P/AVL/L/D/G, P clear if unusable |
//! | GDTR, IDTR (limit, base) | KVM_SET_SREGS (limit is 16 bits there) |
//! | CPL | DPL of SS (KVM `svm_set_segment`) |
//! | EFER | KVM_SET_SREGS, with EFER.SVME (bit 12) forced on |
//! | CR0 | KVM_SET_SREGS, with CD and NW cleared (KVM_X86_QUIRK_CD_NW_CLEARED, on by default) |
//! | CR3 | KVM_SET_SREGS |
//! | CR4 | KVM_SET_SREGS, with MCE (bit 6) forced on: KVM ORs in the host's CR4.MCE, set on every host that runs SNP |
//! | DR7, DR6 | reset values 0x400 and 0xFFFF0FF0 (KVM refuses launch with other DR7) |
//! | RFLAGS, RIP, RAX..R15 | KVM_SET_REGS (RFLAGS bit 1 forced on) |
//! | G_PAT | reset value 0x0007040600070406 |
//! | XCR0 | KVM_SET_XCRS (reset value 1) |
//! | SEV_FEATURES | `vmsa_features` of KVM_SEV_INIT2, plus SNPActive (bit 0) forced by KVM |
//! | X87 FCW/FSW/FTW/FOP, MXCSR | KVM_SET_FPU (reset FCW 0x37F, MXCSR 0x1F80) |
//! | VMPL, XSS, PKRU, CR2, STAR..SYSENTER, DR0-3, CET, x87/XMM/YMM registers, event state | zero: left at their reset values by this VMM |
//!
//! Assumptions not checkable without SNP hardware: the host has CR4.MCE set, KVM's CD/NW quirk
//! is enabled, and KVM's `vmsa_features` handling matches Linux 6.11+.

use crate::page_info::PAGE_SIZE;
use igvm::snp_defs::{SevFeatures, SevSelector, SevVmsa};
use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use std::mem::{offset_of, size_of};
use zerocopy::{FromZeros, IntoBytes};

/// EFER.SVME, forced by KVM into every SVM guest's EFER.
pub const EFER_SVME: u64 = 1 << 12;
/// CR4.MCE, inherited from the host by KVM.
pub const CR4_MCE: u64 = 1 << 6;
/// CR0.CD and CR0.NW, cleared by KVM's default quirk.
pub const CR0_CD_NW: u64 = (1 << 30) | (1 << 29);
/// Architectural reset value of DR7 (bit 10 reads as one).
pub const DR7_RESET: u64 = 0x400;
/// Reset value of DR6 (active-low bits set).
pub const DR6_RESET: u64 = 0xFFFF_0FF0;
/// Reset value of IA32_PAT.
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// Reset value of the x87 control word.
pub const FCW_RESET: u16 = 0x37F;
/// Reset value of MXCSR.
pub const MXCSR_RESET: u32 = 0x1F80;
/// SEV_FEATURES bit 0: SNPActive.
pub const SEV_FEATURE_SNP: u64 = 1;
/// SEV_FEATURES bit 5: DebugSwap. With SNPActive, the only feature upstream KVM offers in
/// `KVM_X86_SEV_VMSA_FEATURES` on current hosts; anything else is refused by the plan.
pub const SEV_FEATURE_DEBUG_SWAP: u64 = 1 << 5;
/// RFLAGS bit 1 is reserved and always one.
const RFLAGS_FIXED: u64 = 1 << 1;

/// Errors converting a VP context.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VpContextError {
    /// The file's VMSA cannot be reproduced by KVM.
    #[error(
        "IGVM VMSA cannot be reproduced by KVM: field {field} (offset {offset:#x}) is \
         {file:#x} in the file but KVM would write {kvm:#x}{hint}"
    )]
    NotReproducible {
        field: &'static str,
        offset: usize,
        file: u64,
        kvm: u64,
        hint: &'static str,
    },
    /// SEV features KVM does not offer.
    #[error(
        "IGVM VMSA requests SEV features {0:#x}; KVM offers only SNPActive (bit 0) and \
         DebugSwap (bit 5)"
    )]
    UnsupportedFeatures(u64),
    /// XCR0 must have x87 enabled, else KVM_SET_XCRS fails.
    #[error("IGVM VMSA XCR0 {0:#x} lacks the x87 bit KVM requires")]
    BadXcr0(u64),
}

/// The register state the VMM loads into a vCPU before SNP_LAUNCH_FINISH.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VcpuState {
    /// KVM_SET_REGS.
    pub regs: kvm_regs,
    /// KVM_SET_SREGS (apic_base, cr8, cr2 and the interrupt bitmap are left to the VMM).
    pub sregs: kvm_sregs,
    /// KVM_SET_FPU (x87 control/status/tag words, opcode, MXCSR).
    pub fpu: kvm_fpu,
    /// XCR0 for KVM_SET_XCRS.
    pub xcr0: u64,
}

fn seg_to_kvm(s: &SevSelector) -> kvm_segment {
    let a = s.attrib;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xf) as u8,
        s: ((a >> 4) & 1) as u8,
        dpl: ((a >> 5) & 3) as u8,
        present: ((a >> 7) & 1) as u8,
        avl: ((a >> 8) & 1) as u8,
        l: ((a >> 9) & 1) as u8,
        db: ((a >> 10) & 1) as u8,
        g: ((a >> 11) & 1) as u8,
        // A non-present segment is what KVM calls unusable; KVM packs it back with P clear.
        unusable: u8::from(a & 0x80 == 0),
        padding: 0,
    }
}

/// KVM `svm_set_segment`: the VMCB attribute packing; an unusable segment keeps its other
/// attribute bits and has P clear.
fn seg_from_kvm(k: &kvm_segment) -> SevSelector {
    let present = k.present & 1 != 0 && k.unusable == 0;
    let attrib = u16::from(k.type_ & 0xf)
        | u16::from(k.s & 1) << 4
        | u16::from(k.dpl & 3) << 5
        | u16::from(present) << 7
        | u16::from(k.avl & 1) << 8
        | u16::from(k.l & 1) << 9
        | u16::from(k.db & 1) << 10
        | u16::from(k.g & 1) << 11;
    SevSelector {
        selector: k.selector,
        attrib,
        limit: k.limit,
        base: k.base,
    }
}

fn dtable_from_kvm(d: &kvm_dtable) -> SevSelector {
    SevSelector {
        selector: 0,
        attrib: 0,
        limit: u32::from(d.limit),
        base: d.base,
    }
}

impl VcpuState {
    /// Convert an IGVM SNP VMSA into KVM register state and prove that KVM will synthesise the
    /// identical VMSA. Returns the state and the `vmsa_features` for KVM_SEV_INIT2.
    pub fn from_vmsa(v: &SevVmsa) -> Result<(Self, u64), VpContextError> {
        let features = v.sev_features.into_bits();
        if features & !(SEV_FEATURE_SNP | SEV_FEATURE_DEBUG_SWAP) != 0 {
            return Err(VpContextError::UnsupportedFeatures(features));
        }
        if v.xcr0 & 1 == 0 {
            return Err(VpContextError::BadXcr0(v.xcr0));
        }
        let regs = kvm_regs {
            rax: v.rax,
            rbx: v.rbx,
            rcx: v.rcx,
            rdx: v.rdx,
            rsi: v.rsi,
            rdi: v.rdi,
            rsp: v.rsp,
            rbp: v.rbp,
            r8: v.r8,
            r9: v.r9,
            r10: v.r10,
            r11: v.r11,
            r12: v.r12,
            r13: v.r13,
            r14: v.r14,
            r15: v.r15,
            rip: v.rip,
            rflags: v.rflags,
        };
        let dt = |s: &SevSelector| kvm_dtable {
            base: s.base,
            limit: (s.limit & 0xffff) as u16,
            padding: [0; 3],
        };
        let sregs = kvm_sregs {
            cs: seg_to_kvm(&v.cs),
            ds: seg_to_kvm(&v.ds),
            es: seg_to_kvm(&v.es),
            fs: seg_to_kvm(&v.fs),
            gs: seg_to_kvm(&v.gs),
            ss: seg_to_kvm(&v.ss),
            tr: seg_to_kvm(&v.tr),
            ldt: seg_to_kvm(&v.ldtr),
            gdt: dt(&v.gdtr),
            idt: dt(&v.idtr),
            cr0: v.cr0,
            cr3: v.cr3,
            cr4: v.cr4,
            efer: v.efer,
            ..Default::default()
        };
        let fpu = kvm_fpu {
            fcw: v.x87_fcw,
            fsw: v.x87_fsw,
            ftwx: (v.x87_ftw & 0xff) as u8,
            last_opcode: v.x87_op,
            mxcsr: v.mxcsr,
            ..Default::default()
        };
        let state = Self {
            regs,
            sregs,
            fpu,
            xcr0: v.xcr0,
        };
        let vmsa_features = features & !SEV_FEATURE_SNP;
        let synthesised = kvm_vmsa(&state, vmsa_features)?;
        compare(v.as_bytes(), &synthesised)?;
        Ok((state, vmsa_features))
    }
}

/// The VMSA page KVM writes for a vCPU with `state` in a VM initialised with `vmsa_features`.
pub fn kvm_vmsa(state: &VcpuState, vmsa_features: u64) -> Result<[u8; PAGE_SIZE], VpContextError> {
    if (vmsa_features | SEV_FEATURE_SNP) & !(SEV_FEATURE_SNP | SEV_FEATURE_DEBUG_SWAP) != 0 {
        return Err(VpContextError::UnsupportedFeatures(vmsa_features));
    }
    let r = &state.regs;
    let s = &state.sregs;
    let mut v = SevVmsa::new_zeroed();
    v.es = seg_from_kvm(&s.es);
    v.cs = seg_from_kvm(&s.cs);
    v.ss = seg_from_kvm(&s.ss);
    v.ds = seg_from_kvm(&s.ds);
    v.fs = seg_from_kvm(&s.fs);
    v.gs = seg_from_kvm(&s.gs);
    v.ldtr = seg_from_kvm(&s.ldt);
    v.tr = seg_from_kvm(&s.tr);
    v.gdtr = dtable_from_kvm(&s.gdt);
    v.idtr = dtable_from_kvm(&s.idt);
    v.cpl = s.ss.dpl & 3;
    v.efer = s.efer | EFER_SVME;
    v.cr0 = s.cr0 & !CR0_CD_NW;
    v.cr3 = s.cr3;
    v.cr4 = s.cr4 | CR4_MCE;
    v.dr7 = DR7_RESET;
    v.dr6 = DR6_RESET;
    v.rflags = r.rflags | RFLAGS_FIXED;
    v.rip = r.rip;
    v.rsp = r.rsp;
    v.rax = r.rax;
    v.rbx = r.rbx;
    v.rcx = r.rcx;
    v.rdx = r.rdx;
    v.rbp = r.rbp;
    v.rsi = r.rsi;
    v.rdi = r.rdi;
    v.r8 = r.r8;
    v.r9 = r.r9;
    v.r10 = r.r10;
    v.r11 = r.r11;
    v.r12 = r.r12;
    v.r13 = r.r13;
    v.r14 = r.r14;
    v.r15 = r.r15;
    v.pat = PAT_RESET;
    v.xcr0 = state.xcr0;
    v.sev_features = SevFeatures::from_bits(vmsa_features | SEV_FEATURE_SNP);
    v.x87_fcw = state.fpu.fcw;
    v.x87_fsw = state.fpu.fsw;
    v.x87_ftw = u16::from(state.fpu.ftwx);
    v.x87_op = state.fpu.last_opcode;
    v.mxcsr = state.fpu.mxcsr;
    let mut page = [0u8; PAGE_SIZE];
    page.copy_from_slice(v.as_bytes());
    Ok(page)
}

/// A register state that makes KVM write a VMSA equal to a hand-written one: the reset values
/// for everything KVM forces. Used to build test images and by callers that need a template.
pub fn reset_template() -> SevVmsa {
    let mut v = SevVmsa::new_zeroed();
    v.dr7 = DR7_RESET;
    v.dr6 = DR6_RESET;
    v.pat = PAT_RESET;
    v.xcr0 = 1;
    v.x87_fcw = FCW_RESET;
    v.mxcsr = MXCSR_RESET;
    v.efer = EFER_SVME;
    v.cr4 = CR4_MCE;
    v.rflags = RFLAGS_FIXED;
    v.sev_features = SevFeatures::from_bits(SEV_FEATURE_SNP);
    v
}

macro_rules! fields {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), offset_of!(SevVmsa, $name), size_of_field(|v: &SevVmsa| &v.$name))),*]
    };
}

fn size_of_field<T, F: Fn(&SevVmsa) -> &T>(_: F) -> usize {
    size_of::<T>()
}

/// Named VMSA fields, for error messages.
fn field_table() -> Vec<(&'static str, usize, usize)> {
    fields!(
        es,
        cs,
        ss,
        ds,
        fs,
        gs,
        gdtr,
        ldtr,
        idtr,
        tr,
        pl0_ssp,
        pl1_ssp,
        pl2_ssp,
        pl3_ssp,
        u_cet,
        vmpl,
        cpl,
        efer,
        xss,
        cr4,
        cr3,
        cr0,
        dr7,
        dr6,
        rflags,
        rip,
        dr0,
        dr1,
        dr2,
        dr3,
        rsp,
        s_cet,
        ssp,
        interrupt_ssp_table_addr,
        rax,
        star,
        lstar,
        cstar,
        sfmask,
        kernel_gs_base,
        sysenter_cs,
        sysenter_esp,
        sysenter_eip,
        cr2,
        pat,
        dbgctl,
        spec_ctrl,
        rcx,
        rdx,
        rbx,
        rbp,
        rsi,
        rdi,
        r8,
        r9,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        exit_info1,
        exit_info2,
        exit_int_info,
        next_rip,
        sev_features,
        v_intr_cntrl,
        guest_error_code,
        virtual_tom,
        tlb_id,
        pcpu_id,
        event_inject,
        xcr0,
        xsave_valid_bitmap,
        x87dp,
        mxcsr,
        x87_ftw,
        x87_fsw,
        x87_fcw,
        x87_op,
        x87_ds,
        x87_cs,
        x87_rip,
        x87_registers1,
        x87_registers2,
        x87_registers3,
        xmm_registers,
        ymm_registers,
    )
}

fn hint_for(field: &str) -> &'static str {
    match field {
        "cr4" => " (KVM forces CR4.MCE from the host)",
        "efer" => " (KVM forces EFER.SVME)",
        "cr0" => " (KVM clears CR0.CD/NW)",
        "dr7" | "dr6" | "pat" => " (KVM writes the reset value)",
        "sev_features" => " (SNPActive must be set)",
        "rflags" => " (bit 1 is always set)",
        _ => " (KVM cannot set this field from userspace register state)",
    }
}

fn read_le(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b)
}

/// Byte-compare the file's VMSA with KVM's, reporting the first differing field.
fn compare(file: &[u8], kvm: &[u8; PAGE_SIZE]) -> Result<(), VpContextError> {
    let Some(pos) = file.iter().zip(kvm.iter()).position(|(a, b)| a != b) else {
        return Ok(());
    };
    let (field, start, size) = field_table()
        .into_iter()
        .find(|&(_, off, size)| pos >= off && pos < off + size)
        .unwrap_or(("reserved", pos & !7, 8));
    // Wide fields (segments, register files) are reported by the differing 8-byte word.
    let (off, len) = if size > 8 {
        (start + (pos - start) / 8 * 8, 8)
    } else {
        (start, size)
    };
    let end = (off + len).min(PAGE_SIZE);
    Err(VpContextError::NotReproducible {
        field,
        offset: pos,
        file: read_le(&file[off..end]),
        kvm: read_le(&kvm[off..end]),
        hint: hint_for(field),
    })
}

const _: () = assert!(size_of::<SevVmsa>() == PAGE_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixtures' long-mode BSP state, entered at 1 MiB with boot data at 0x7000.
    fn long_mode_vmsa() -> SevVmsa {
        let mut v = crate::igvm_fixtures::sample_vmsa();
        v.cr3 = 0x9000;
        v.rip = 0x10_0000;
        v.rsi = 0x7000;
        v
    }

    #[test]
    fn round_trip_is_byte_identical() {
        let mut v = long_mode_vmsa();
        // A non-present segment that still carries type bits (KVM keeps them, clears P).
        v.fs.attrib = 0x13;
        let (state, features) = VcpuState::from_vmsa(&v).unwrap();
        assert_eq!(features, 0);
        assert_eq!(state.regs.rip, 0x10_0000);
        assert_eq!(state.sregs.cs.l, 1);
        assert_eq!(state.sregs.ldt.unusable, 1);
        let page = kvm_vmsa(&state, features).unwrap();
        assert_eq!(&page[..], v.as_bytes());
    }

    #[test]
    fn debug_swap_goes_to_init2() {
        let mut v = long_mode_vmsa();
        v.sev_features = SevFeatures::from_bits(SEV_FEATURE_SNP | SEV_FEATURE_DEBUG_SWAP);
        let (_, features) = VcpuState::from_vmsa(&v).unwrap();
        assert_eq!(features, SEV_FEATURE_DEBUG_SWAP);
    }

    #[test]
    fn refuses_what_kvm_cannot_reproduce() {
        let mut v = long_mode_vmsa();
        v.cr4 = 0x20;
        let err = VcpuState::from_vmsa(&v).unwrap_err();
        assert!(matches!(
            err,
            VpContextError::NotReproducible { field: "cr4", .. }
        ));
        assert!(err.to_string().contains("MCE"), "{err}");

        let mut v = long_mode_vmsa();
        v.lstar = 0xffff_8000_0000_0000;
        let err = VcpuState::from_vmsa(&v).unwrap_err();
        assert!(matches!(
            err,
            VpContextError::NotReproducible { field: "lstar", .. }
        ));

        let mut v = long_mode_vmsa();
        v.vmpl = 1;
        assert!(matches!(
            VcpuState::from_vmsa(&v).unwrap_err(),
            VpContextError::NotReproducible { field: "vmpl", .. }
        ));

        let mut v = long_mode_vmsa();
        v.vmsa_padding[100] = 1;
        assert!(matches!(
            VcpuState::from_vmsa(&v).unwrap_err(),
            VpContextError::NotReproducible {
                field: "reserved",
                ..
            }
        ));

        let mut v = long_mode_vmsa();
        v.sev_features = SevFeatures::from_bits(0);
        assert!(matches!(
            VcpuState::from_vmsa(&v).unwrap_err(),
            VpContextError::NotReproducible {
                field: "sev_features",
                ..
            }
        ));

        let mut v = long_mode_vmsa();
        v.sev_features = SevFeatures::from_bits(SEV_FEATURE_SNP | 2);
        assert_eq!(
            VcpuState::from_vmsa(&v).unwrap_err(),
            VpContextError::UnsupportedFeatures(3)
        );

        let mut v = long_mode_vmsa();
        v.gdtr.limit = 0x1_0000;
        assert!(matches!(
            VcpuState::from_vmsa(&v).unwrap_err(),
            VpContextError::NotReproducible { field: "gdtr", .. }
        ));
    }

    /// The `igvm` crate's `SevVmsa` and this crate's own Table B-4 layout (`crate::vmsa`) agree
    /// on every field both name, and a KVM-synthesised page decodes there unchanged.
    #[test]
    fn agrees_with_the_crate_vmsa_layout() {
        let ours: std::collections::HashMap<&str, (usize, usize)> = field_table()
            .into_iter()
            .map(|(n, o, s)| (n, (o, s)))
            .collect();
        let mut common = 0;
        for &(name, off, size) in crate::vmsa::VMSA_FIELDS {
            let alias = match name {
                "g_pat" => "pat",
                "isst_addr" => "interrupt_ssp_table_addr",
                other => other,
            };
            if let Some(&(o, s)) = ours.get(alias) {
                assert_eq!((o, s), (off, size), "{name}");
                common += 1;
            }
        }
        assert!(common > 60, "only {common} fields in common");

        let (state, features) = VcpuState::from_vmsa(&long_mode_vmsa()).unwrap();
        let page = kvm_vmsa(&state, features).unwrap();
        let decoded = crate::vmsa::Vmsa::from_bytes(&page).unwrap();
        assert_eq!(decoded.rip, 0x10_0000);
        assert_eq!(decoded.cr4, 0x20 | CR4_MCE);
        assert_eq!(decoded.efer, 0x500 | EFER_SVME);
        assert_eq!(decoded.g_pat, PAT_RESET);
        assert_eq!(decoded.sev_features, SEV_FEATURE_SNP);
        assert_eq!(decoded.to_bytes(), page);
    }

    #[test]
    fn field_table_is_sane() {
        for (name, off, size) in field_table() {
            assert!(off + size <= PAGE_SIZE, "{name}");
        }
        assert_eq!(offset_of!(SevVmsa, rip), 0x178);
        assert_eq!(offset_of!(SevVmsa, sev_features), 0x3B0);
        assert_eq!(offset_of!(SevVmsa, xcr0), 0x3E8);
    }
}
