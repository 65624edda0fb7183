//! IGVM images for tests, written with the `igvm` crate's own builder so they are valid by the
//! format's reference implementation. The sample covers every directive kind an SNP launch on
//! KVM accepts; tests mutate it to make hostile variants.

use crate::vp_context::{reset_template, CR4_MCE, EFER_SVME};
use igvm::snp_defs::{SevSelector, SevVmsa};
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader};
use igvm::{IgvmRevision, IsolationType};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_VHS_PARAMETER,
    IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY, IGVM_VHS_SNP_ID_BLOCK_SIGNATURE,
    IGVM_VHS_SUPPORTED_PLATFORM,
};
use zerocopy::FromZeros;

/// Compatibility mask of the SEV-SNP platform in the samples.
pub const SNP_MASK: u32 = 0x1;
/// Compatibility mask of a second (native) platform, whose headers the loader must ignore.
pub const NATIVE_MASK: u32 = 0x2;
/// The sample's guest policy.
pub const POLICY: u64 = 0x30000;
/// GPA where the sample inserts parameter area 0 (two pages).
pub const AREA0_GPA: u64 = 0x10000;
/// GPA where the sample inserts parameter area 1 (one page).
pub const AREA1_GPA: u64 = 0x12000;

/// Headers of an IGVM image, kept apart so tests can edit them before building the file.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Platform headers.
    pub platforms: Vec<IgvmPlatformHeader>,
    /// Initialization headers.
    pub inits: Vec<IgvmInitializationHeader>,
    /// Directive headers, in order.
    pub directives: Vec<IgvmDirectiveHeader>,
}

/// A platform header.
pub fn platform(mask: u32, platform_type: IgvmPlatformType) -> IgvmPlatformHeader {
    IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
        compatibility_mask: mask,
        highest_vtl: 0,
        platform_type,
        platform_version: 1,
        shared_gpa_boundary: 0,
    })
}

/// A page-data directive for the SNP platform.
pub fn page(
    gpa: u64,
    data_type: IgvmPageDataType,
    flags: IgvmPageDataFlags,
    data: Vec<u8>,
) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::PageData {
        gpa,
        compatibility_mask: SNP_MASK,
        flags,
        data_type,
        data,
    }
}

/// A normal measured page.
pub fn normal(gpa: u64, data: Vec<u8>) -> IgvmDirectiveHeader {
    page(
        gpa,
        IgvmPageDataType::NORMAL,
        IgvmPageDataFlags::new(),
        data,
    )
}

/// A 64-bit flat long-mode BSP VMSA that KVM can reproduce.
pub fn sample_vmsa() -> SevVmsa {
    let mut v = reset_template();
    v.cs = SevSelector {
        selector: 0x8,
        attrib: 0xa9b,
        limit: 0xffff_ffff,
        base: 0,
    };
    let data = SevSelector {
        selector: 0x10,
        attrib: 0xc93,
        limit: 0xffff_ffff,
        base: 0,
    };
    v.ds = data;
    v.es = data;
    v.ss = data;
    v.fs = data;
    v.gs = data;
    v.tr = SevSelector {
        selector: 0,
        attrib: 0x8b,
        limit: 0xffff,
        base: 0,
    };
    v.gdtr = SevSelector {
        selector: 0,
        attrib: 0,
        limit: 0x27,
        base: 0x1000,
    };
    v.cr0 = 0x8000_0011;
    v.cr3 = 0x3000;
    v.cr4 = 0x20 | CR4_MCE;
    v.efer = 0x500 | EFER_SVME;
    v.rip = 0x1_0000_0000 - 0x10;
    v.rsi = AREA0_GPA;
    v.rsp = 0x8ff0;
    v
}

/// The BSP VP context directive for `vmsa`.
pub fn vp_context(vmsa: SevVmsa) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::SnpVpContext {
        gpa: crate::page_info::VMSA_GPA,
        compatibility_mask: SNP_MASK,
        vp_index: 0,
        vmsa: Box::new(vmsa),
    }
}

/// An ID block directive with recognisable contents.
pub fn id_block() -> IgvmDirectiveHeader {
    let mut sig = IGVM_VHS_SNP_ID_BLOCK_SIGNATURE::new_zeroed();
    sig.r_comp = [0x5a; 72];
    sig.s_comp = [0xa5; 72];
    let mut key = IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY::new_zeroed();
    key.curve = crate::id_block::CURVE_P384;
    key.qx = [0x11; 72];
    key.qy = [0x22; 72];
    IgvmDirectiveHeader::SnpIdBlock {
        compatibility_mask: SNP_MASK,
        author_key_enabled: 0,
        reserved: [0; 3],
        ld: [0; 48],
        family_id: [0x46; 16],
        image_id: [0x49; 16],
        version: 1,
        guest_svn: 7,
        id_key_algorithm: crate::id_block::ALGO_ECDSA_P384_SHA384,
        author_key_algorithm: 0,
        id_key_signature: Box::new(sig),
        id_public_key: Box::new(key),
        author_key_signature: Box::new(IGVM_VHS_SNP_ID_BLOCK_SIGNATURE::new_zeroed()),
        author_public_key: Box::new(IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY::new_zeroed()),
    }
}

fn param(index: u32, byte_offset: u32) -> IGVM_VHS_PARAMETER {
    IGVM_VHS_PARAMETER {
        parameter_area_index: index,
        byte_offset,
    }
}

/// A sample exercising every directive kind accepted for SNP: normal pages (full, short,
/// empty), unmeasured, secrets, both CPUID kinds, a shared page, two parameter areas with VP
/// count, memory map and command line, their inserts, required memory, an error range, the ID
/// block and the BSP VP context (last). A native-platform page at an SNP page's GPA checks the
/// platform filter.
pub fn every_directive() -> Sample {
    let full: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let unmeasured = IgvmPageDataFlags::new().with_unmeasured(true);
    let shared = IgvmPageDataFlags::new().with_shared(true);
    let directives = vec![
        normal(0x1000, full),
        normal(0x2000, b"short page".to_vec()),
        normal(0x3000, Vec::new()),
        IgvmDirectiveHeader::PageData {
            gpa: 0x1000,
            compatibility_mask: NATIVE_MASK,
            flags: IgvmPageDataFlags::new(),
            data_type: IgvmPageDataType::NORMAL,
            data: vec![0xee; 16],
        },
        page(0x4000, IgvmPageDataType::NORMAL, unmeasured, vec![1, 2, 3]),
        page(
            0x5000,
            IgvmPageDataType::SECRETS,
            IgvmPageDataFlags::new(),
            Vec::new(),
        ),
        page(
            0x6000,
            IgvmPageDataType::CPUID_DATA,
            IgvmPageDataFlags::new(),
            vec![0x20; 64],
        ),
        page(
            0x7000,
            IgvmPageDataType::CPUID_XF,
            IgvmPageDataFlags::new(),
            Vec::new(),
        ),
        page(0x8000, IgvmPageDataType::NORMAL, shared, vec![0x77; 32]),
        IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 0x2000,
            parameter_area_index: 0,
            initial_data: Vec::new(),
        },
        IgvmDirectiveHeader::VpCount(param(0, 0)),
        IgvmDirectiveHeader::MemoryMap(param(0, 0x100)),
        IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
            gpa: AREA0_GPA,
            compatibility_mask: SNP_MASK,
            parameter_area_index: 0,
        }),
        IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 0x1000,
            parameter_area_index: 1,
            initial_data: b"initial".to_vec(),
        },
        IgvmDirectiveHeader::CommandLine(param(1, 0x10)),
        IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
            gpa: AREA1_GPA,
            compatibility_mask: SNP_MASK,
            parameter_area_index: 1,
        }),
        IgvmDirectiveHeader::RequiredMemory {
            gpa: 0x10_0000,
            compatibility_mask: SNP_MASK,
            number_of_bytes: 0x10_0000,
            vtl2_protectable: false,
        },
        IgvmDirectiveHeader::ErrorRange {
            gpa: 0x9000,
            compatibility_mask: SNP_MASK,
            size_bytes: 0x1000,
        },
        id_block(),
        vp_context(sample_vmsa()),
    ];
    Sample {
        platforms: vec![
            platform(SNP_MASK, IgvmPlatformType::SEV_SNP),
            platform(NATIVE_MASK, IgvmPlatformType::NATIVE),
        ],
        inits: vec![IgvmInitializationHeader::GuestPolicy {
            policy: POLICY,
            compatibility_mask: SNP_MASK,
        }],
        directives,
    }
}

impl Sample {
    /// Validate the headers as an IGVM v1 file.
    pub fn file(&self) -> Result<IgvmFile, igvm::Error> {
        IgvmFile::new(
            IgvmRevision::V1,
            self.platforms.clone(),
            self.inits.clone(),
            self.directives.clone(),
        )
    }

    /// The serialized file.
    pub fn bytes(&self) -> Result<Vec<u8>, igvm::Error> {
        let mut out = Vec::new();
        self.file()?.serialize(&mut out)?;
        Ok(out)
    }

    /// The headers as the SNP-filtered parse of the serialized file sees them.
    pub fn reparsed(&self) -> Result<IgvmFile, igvm::Error> {
        IgvmFile::new_from_binary(&self.bytes()?, Some(IsolationType::Snp))
    }
}
