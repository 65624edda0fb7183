//! The SEV-ES/SEV-SNP VM save area (VMSA): the 4 KiB encrypted page holding a vCPU's initial
//! register state, measured as a VMSA launch page (AMD APM Vol. 2, Appendix B, Table B-4 "VMSA
//! Layout, State Save Area for SEV-ES"; Linux `struct sev_es_save_area` uses the same offsets).
//!
//! Why a typed model: on KVM the VMSA is not written by the VMM but synthesised by KVM inside
//! KVM_SEV_SNP_LAUNCH_FINISH (`sev_es_sync_vmsa`) from the vCPU's register state, then measured.
//! To predict the launch digest the crate rebuilds that page bit for bit. What KVM puts there:
//! - everything in the legacy VMCB save area, copied wholesale: segment registers (VMCB
//!   attribute format, see [`Segment::pack_attrib`]), CPL, EFER (KVM always sets SVME, 0x1000),
//!   CR0/CR3/CR4, DR7, RFLAGS, RIP, RSP, RAX, the syscall MSRs, CR2 and G_PAT;
//! - the GPRs RCX..R15, and XCR0, PKRU, XSS, DR6 from vCPU state;
//! - SEV_FEATURES from `vmsa_features` of KVM_SEV_INIT2 (SNPActive forced on);
//! - for VMs created with a non-default type (KVM_X86_SNP_VM always), the x87/SSE/AVX state:
//!   FCW, FSW, FTW (abridged), FOP, x87 RIP/DP, MXCSR, ST0-7 (10 bytes each), XMM0-15, YMM-high.
//!
//! All other bytes stay zero. [`Vmsa::from_bytes`] refuses pages with non-zero bytes outside the
//! modelled fields so that a VMSA read from an image can always be reproduced exactly.

use std::fmt;

/// Size of the VMSA page.
pub const VMSA_SIZE: usize = 4096;

/// Errors decoding a VMSA page.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmsaError {
    /// A VMSA is exactly one page.
    #[error("VMSA must be {VMSA_SIZE} bytes, got {len}")]
    WrongSize { len: usize },
    /// Bytes outside every modelled field must be zero (reserved in Table B-4, or state KVM
    /// never writes); otherwise the page could not be reproduced.
    #[error("VMSA byte at offset {offset:#x} is non-zero but belongs to no modelled field")]
    ReservedNonZero { offset: usize },
}

/// A segment register in VMCB format (`struct vmcb_seg`): selector, packed attributes, limit,
/// base; 16 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Segment {
    pub selector: u16,
    /// VMCB attribute format: bits 3:0 type, 4 S, 6:5 DPL, 7 P, 8 AVL, 9 L, 10 D/B, 11 G.
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// Descriptor fields of a segment as KVM's `struct kvm_segment` carries them, packed into the
/// VMCB attribute word the same way KVM's `svm_set_segment` does (APM Vol. 2 §15.5.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentAttributes {
    pub type_: u8,
    pub s: bool,
    pub dpl: u8,
    pub present: bool,
    pub avl: bool,
    pub l: bool,
    pub db: bool,
    pub g: bool,
}

impl Segment {
    /// A segment from its four raw fields.
    pub const fn new(selector: u16, attrib: u16, limit: u32, base: u64) -> Self {
        Self {
            selector,
            attrib,
            limit,
            base,
        }
    }

    /// Pack descriptor fields into the 12-bit VMCB attribute format; out-of-range `type_`/`dpl`
    /// bits are masked as the hardware field width dictates.
    pub fn pack_attrib(a: SegmentAttributes) -> u16 {
        u16::from(a.type_ & 0xf)
            | (u16::from(a.s) << 4)
            | (u16::from(a.dpl & 0x3) << 5)
            | (u16::from(a.present) << 7)
            | (u16::from(a.avl) << 8)
            | (u16::from(a.l) << 9)
            | (u16::from(a.db) << 10)
            | (u16::from(a.g) << 11)
    }

    /// Inverse of [`Segment::pack_attrib`] (bits 15:12 are ignored, as in KVM).
    pub fn unpack_attrib(attrib: u16) -> SegmentAttributes {
        SegmentAttributes {
            type_: (attrib & 0xf) as u8,
            s: attrib & (1 << 4) != 0,
            dpl: ((attrib >> 5) & 0x3) as u8,
            present: attrib & (1 << 7) != 0,
            avl: attrib & (1 << 8) != 0,
            l: attrib & (1 << 9) != 0,
            db: attrib & (1 << 10) != 0,
            g: attrib & (1 << 11) != 0,
        }
    }
}

/// One serialisable VMSA field: fixed size, little-endian.
trait Field: Sized {
    const SIZE: usize;
    fn zero() -> Self;
    fn put(&self, out: &mut [u8]);
    fn get(raw: &[u8]) -> Self;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn zero() -> Self {
                0
            }
            fn put(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            fn get(raw: &[u8]) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(raw);
                <$t>::from_le_bytes(b)
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64);

impl Field for Segment {
    const SIZE: usize = 16;
    fn zero() -> Self {
        Segment::default()
    }
    fn put(&self, out: &mut [u8]) {
        self.selector.put(&mut out[0..2]);
        self.attrib.put(&mut out[2..4]);
        self.limit.put(&mut out[4..8]);
        self.base.put(&mut out[8..16]);
    }
    fn get(raw: &[u8]) -> Self {
        Segment {
            selector: u16::get(&raw[0..2]),
            attrib: u16::get(&raw[2..4]),
            limit: u32::get(&raw[4..8]),
            base: u64::get(&raw[8..16]),
        }
    }
}

impl<const N: usize> Field for [u8; N] {
    const SIZE: usize = N;
    fn zero() -> Self {
        [0u8; N]
    }
    fn put(&self, out: &mut [u8]) {
        out.copy_from_slice(self);
    }
    fn get(raw: &[u8]) -> Self {
        let mut b = [0u8; N];
        b.copy_from_slice(raw);
        b
    }
}

/// Declares the VMSA struct, its field table and (de)serialisation from one list, so offsets
/// are written exactly once.
macro_rules! vmsa_layout {
    ($($(#[doc = $doc:literal])* $name:ident : $ty:ty = $off:expr;)*) => {
        /// The VMSA save area, one field per modelled Table B-4 entry. Fields not listed are
        /// reserved or never written at launch and serialise as zero.
        #[derive(Clone, PartialEq, Eq)]
        pub struct Vmsa {
            $($(#[doc = $doc])* pub $name: $ty,)*
        }

        impl Default for Vmsa {
            fn default() -> Self {
                Self { $($name: <$ty as Field>::zero(),)* }
            }
        }

        /// (name, offset, size) of every modelled field, in declaration (= offset) order.
        pub const VMSA_FIELDS: &[(&str, usize, usize)] = &[
            $((stringify!($name), $off, <$ty as Field>::SIZE),)*
        ];

        impl Vmsa {
            /// Serialise to the exact 4 KiB page firmware measures.
            pub fn to_bytes(&self) -> [u8; VMSA_SIZE] {
                let mut out = [0u8; VMSA_SIZE];
                $(self.$name.put(&mut out[$off..$off + <$ty as Field>::SIZE]);)*
                out
            }

            fn read_fields(raw: &[u8; VMSA_SIZE]) -> Self {
                Self { $($name: <$ty as Field>::get(&raw[$off..$off + <$ty as Field>::SIZE]),)* }
            }
        }
    };
}

vmsa_layout! {
    es: Segment = 0x000;
    cs: Segment = 0x010;
    ss: Segment = 0x020;
    ds: Segment = 0x030;
    fs: Segment = 0x040;
    gs: Segment = 0x050;
    gdtr: Segment = 0x060;
    ldtr: Segment = 0x070;
    idtr: Segment = 0x080;
    tr: Segment = 0x090;
    vmpl0_ssp: u64 = 0x0A0;
    vmpl1_ssp: u64 = 0x0A8;
    vmpl2_ssp: u64 = 0x0B0;
    vmpl3_ssp: u64 = 0x0B8;
    u_cet: u64 = 0x0C0;
    /// VMPL the vCPU runs at (0 for KVM launches).
    vmpl: u8 = 0x0CA;
    cpl: u8 = 0x0CB;
    efer: u64 = 0x0D0;
    xss: u64 = 0x140;
    cr4: u64 = 0x148;
    cr3: u64 = 0x150;
    cr0: u64 = 0x158;
    dr7: u64 = 0x160;
    dr6: u64 = 0x168;
    rflags: u64 = 0x170;
    rip: u64 = 0x178;
    dr0: u64 = 0x180;
    dr1: u64 = 0x188;
    dr2: u64 = 0x190;
    dr3: u64 = 0x198;
    dr0_addr_mask: u64 = 0x1A0;
    dr1_addr_mask: u64 = 0x1A8;
    dr2_addr_mask: u64 = 0x1B0;
    dr3_addr_mask: u64 = 0x1B8;
    rsp: u64 = 0x1D8;
    s_cet: u64 = 0x1E0;
    ssp: u64 = 0x1E8;
    isst_addr: u64 = 0x1F0;
    rax: u64 = 0x1F8;
    star: u64 = 0x200;
    lstar: u64 = 0x208;
    cstar: u64 = 0x210;
    sfmask: u64 = 0x218;
    kernel_gs_base: u64 = 0x220;
    sysenter_cs: u64 = 0x228;
    sysenter_esp: u64 = 0x230;
    sysenter_eip: u64 = 0x238;
    cr2: u64 = 0x240;
    /// PAT MSR (APM Vol. 2 §A.3; power-on value 0x0007_0406_0007_0406).
    g_pat: u64 = 0x268;
    dbgctl: u64 = 0x270;
    br_from: u64 = 0x278;
    br_to: u64 = 0x280;
    last_excp_from: u64 = 0x288;
    last_excp_to: u64 = 0x290;
    pkru: u32 = 0x2E8;
    tsc_aux: u32 = 0x2EC;
    rcx: u64 = 0x308;
    /// At reset RDX holds the CPUID(1).EAX signature (family/model/stepping).
    rdx: u64 = 0x310;
    rbx: u64 = 0x318;
    rbp: u64 = 0x328;
    rsi: u64 = 0x330;
    rdi: u64 = 0x338;
    r8: u64 = 0x340;
    r9: u64 = 0x348;
    r10: u64 = 0x350;
    r11: u64 = 0x358;
    r12: u64 = 0x360;
    r13: u64 = 0x368;
    r14: u64 = 0x370;
    r15: u64 = 0x378;
    guest_exit_info_1: u64 = 0x390;
    guest_exit_info_2: u64 = 0x398;
    guest_exit_int_info: u64 = 0x3A0;
    guest_nrip: u64 = 0x3A8;
    /// SEV_FEATURES (bit 0 SNPActive, bit 5 DebugSwap, ...); KVM takes it from INIT2.
    sev_features: u64 = 0x3B0;
    vintr_ctrl: u64 = 0x3B8;
    guest_exit_code: u64 = 0x3C0;
    virtual_tom: u64 = 0x3C8;
    tlb_id: u64 = 0x3D0;
    pcpu_id: u64 = 0x3D8;
    event_inj: u64 = 0x3E0;
    xcr0: u64 = 0x3E8;
    x87_dp: u64 = 0x400;
    mxcsr: u32 = 0x408;
    x87_ftw: u16 = 0x40C;
    x87_fsw: u16 = 0x40E;
    x87_fcw: u16 = 0x410;
    x87_fop: u16 = 0x412;
    x87_ds: u16 = 0x414;
    x87_cs: u16 = 0x416;
    x87_rip: u64 = 0x418;
    /// ST0..ST7, 10 bytes each.
    fpreg_x87: [u8; 80] = 0x420;
    /// XMM0..XMM15, 16 bytes each.
    fpreg_xmm: [u8; 256] = 0x470;
    /// Upper halves of YMM0..YMM15, 16 bytes each.
    fpreg_ymm: [u8; 256] = 0x570;
}

impl fmt::Debug for Vmsa {
    /// Only the fields that matter when comparing two launch states, to keep logs short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vmsa")
            .field("cs", &self.cs)
            .field("rip", &format_args!("{:#x}", self.rip))
            .field("rsp", &format_args!("{:#x}", self.rsp))
            .field("rdx", &format_args!("{:#x}", self.rdx))
            .field("cr0", &format_args!("{:#x}", self.cr0))
            .field("cr3", &format_args!("{:#x}", self.cr3))
            .field("cr4", &format_args!("{:#x}", self.cr4))
            .field("efer", &format_args!("{:#x}", self.efer))
            .field("sev_features", &format_args!("{:#x}", self.sev_features))
            .finish_non_exhaustive()
    }
}

impl Vmsa {
    /// Decode a VMSA page, e.g. one carried by an image. Rejects pages that are not exactly
    /// 4 KiB or that have non-zero bytes outside the modelled fields, because such a page
    /// cannot be re-created from register state.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, VmsaError> {
        let page: &[u8; VMSA_SIZE] = raw
            .try_into()
            .map_err(|_| VmsaError::WrongSize { len: raw.len() })?;
        let vmsa = Self::read_fields(page);
        // Any byte the re-serialised page lacks lies outside every field.
        let again = vmsa.to_bytes();
        if let Some(offset) = page.iter().zip(again.iter()).position(|(a, b)| a != b) {
            return Err(VmsaError::ReservedNonZero { offset });
        }
        Ok(vmsa)
    }

    /// The architectural x86 reset state in the form KVM leaves it in the VMSA of a freshly
    /// created SEV-ES/SNP vCPU before the VMM changes anything: real mode at `eip` split into
    /// CS base (`eip & 0xffff_0000`, selector 0xf000) and RIP (`eip & 0xffff`), flat 64 KiB
    /// data segments, EFER.SVME, CR4.MCE, CR0.ET, DR6/DR7 and PAT reset values, XCR0 = x87
    /// (APM Vol. 2 §14.1.3 "Processor Initialization State").
    ///
    /// Segment attribute bytes (accessed bits) and the FPU defaults differ between VMMs, so
    /// callers adjust `cs`, `ss`, `tr`, `rdx`, `mxcsr` and `x87_fcw` afterwards.
    pub fn reset_state(eip: u32, sev_features: u64) -> Self {
        let data = Segment::new(0, 0x93, 0xffff, 0);
        Vmsa {
            es: data,
            cs: Segment::new(0xf000, 0x9b, 0xffff, u64::from(eip & 0xffff_0000)),
            ss: data,
            ds: data,
            fs: data,
            gs: data,
            gdtr: Segment::new(0, 0, 0xffff, 0),
            ldtr: Segment::new(0, 0x82, 0xffff, 0),
            idtr: Segment::new(0, 0, 0xffff, 0),
            tr: Segment::new(0, 0x8b, 0xffff, 0),
            efer: EFER_SVME,
            cr4: CR4_MCE,
            cr0: CR0_ET,
            dr7: DR7_RESET,
            dr6: DR6_RESET,
            rflags: RFLAGS_RESET,
            rip: u64::from(eip & 0xffff),
            g_pat: PAT_RESET,
            xcr0: XCR0_X87,
            sev_features,
            ..Vmsa::default()
        }
    }
}

/// EFER.SVME: KVM keeps it set in every SVM guest's VMCB.
pub const EFER_SVME: u64 = 1 << 12;
/// CR4.MCE: KVM's `svm_set_cr4` ORs in the host's CR4.MCE, which every normal host has set.
pub const CR4_MCE: u64 = 1 << 6;
/// CR0.ET: the reset CR0 (0x6000_0010) as it reaches the VMCB, because KVM clears CD and NW
/// there (`KVM_X86_QUIRK_CD_NW_CLEARED`).
pub const CR0_ET: u64 = 1 << 4;
/// DR7 reset value (bit 10 reads as one).
pub const DR7_RESET: u64 = 0x400;
/// DR6 reset value.
pub const DR6_RESET: u64 = 0xffff_0ff0;
/// RFLAGS reset value (bit 1 reads as one).
pub const RFLAGS_RESET: u64 = 0x2;
/// PAT MSR reset value (APM Vol. 2 §A.3).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// XCR0 reset value: x87 state only.
pub const XCR0_X87: u64 = 0x1;
/// MXCSR after FNINIT/reset with all exceptions masked.
pub const MXCSR_RESET: u32 = 0x1f80;
/// x87 control word after FNINIT.
pub const FCW_RESET: u16 = 0x37f;
/// SEV_FEATURES bit 0: the guest runs with SNP active.
pub const SEV_FEATURES_SNP_ACTIVE: u64 = 1;

#[cfg(test)]
mod tests;
