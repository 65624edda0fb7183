use super::*;
use crate::id_block::HostData;
use crate::igvm_fixtures::{self as fx, Sample};
use crate::plan::{EmptyPages, RamLayout};
use igvm_defs::{IgvmPageDataFlags, IgvmPageDataType, IGVM_VHS_PARAMETER_INSERT};

fn cfg(vcpus: u32) -> VmConfig {
    VmConfig {
        empty_pages: EmptyPages::Normal,
        ram: RamLayout::pc(512 << 20).unwrap(),
        vcpus,
        cmdline: Some("console=ttyS0".into()),
        host_data: HostData([0xab; 32]),
    }
}

fn plan(sample: &Sample, vcpus: u32) -> Result<LaunchPlan> {
    plan_from_igvm(&sample.bytes().unwrap(), &cfg(vcpus))
}

/// The `igvm` crate's own SNP measurement of `sample`, with the BSP VP context repeated for
/// every AP (KVM measures one VMSA per vCPU; this VMM gives every vCPU the BSP's state).
fn reference_digest(sample: &Sample, vcpus: u32) -> [u8; 48] {
    let file = sample.reparsed().unwrap();
    let mut directives = file.directives().to_vec();
    let vp = directives
        .iter()
        .find(|d| matches!(d, IgvmDirectiveHeader::SnpVpContext { .. }))
        .cloned()
        .unwrap();
    for _ in 1..vcpus {
        directives.push(vp.clone());
    }
    igvm::measurement::generate_snp_measurement(file.initializations(), &directives, fx::SNP_MASK)
        .unwrap()
}

#[test]
fn every_directive_kind_is_planned() {
    let p = plan(&fx::every_directive(), 2).unwrap();
    let kinds: Vec<(u64, PageType)> = p.pages.iter().map(|pg| (pg.gpa, pg.page_type)).collect();
    assert_eq!(
        kinds,
        vec![
            (0x1000, PageType::Normal),
            (0x2000, PageType::Normal),
            (0x3000, PageType::Normal),
            (0x4000, PageType::Unmeasured),
            (0x5000, PageType::Secrets),
            (0x6000, PageType::Cpuid),
            (0x7000, PageType::Cpuid),
            (fx::AREA0_GPA, PageType::Unmeasured),
            (fx::AREA0_GPA + 0x1000, PageType::Unmeasured),
            (fx::AREA1_GPA, PageType::Unmeasured),
        ]
    );
    // The native-platform page at 0x1000 was filtered out.
    assert_eq!(p.pages[0].data.len(), 4096);
    assert_eq!(p.shared.len(), 1);
    assert_eq!(p.shared[0].gpa, 0x8000);
    assert_eq!(p.policy, GuestPolicy(fx::POLICY));
    assert_eq!(p.vcpus, 2);
    assert_eq!(p.vmsa_features, 0);
    assert_eq!(
        p.required_memory,
        vec![RamRegion {
            gpa: 0x10_0000,
            size: 0x10_0000
        }]
    );
    assert_eq!(p.host_data, HostData([0xab; 32]));

    // VP count at offset 0 of area 0, memory map at 0x100.
    let area0 = &p.pages[7].data;
    assert_eq!(&area0[0..4], &2u32.to_le_bytes());
    assert_eq!(&area0[0x100..0x108], &0u64.to_le_bytes());
    assert_eq!(&area0[0x108..0x110], &((512u64 << 20) / 4096).to_le_bytes());
    assert!(
        area0[0x118..0x130].iter().all(|&b| b == 0),
        "terminator entry"
    );
    // Area 1 keeps its initial data and receives the NUL-terminated command line.
    let area1 = &p.pages[9].data;
    assert_eq!(&area1[..7], b"initial");
    assert_eq!(&area1[0x10..0x1e], b"console=ttyS0\0");

    let (block, auth) = p.id.clone().unwrap();
    assert_eq!(block.family_id, [0x46; 16]);
    assert_eq!(block.guest_svn, 7);
    assert_eq!(block.policy, GuestPolicy(fx::POLICY));
    assert_eq!(auth.id_block_sig.r, [0x5a; 72]);
    assert!(!auth.author_key_en);
}

#[test]
fn digest_matches_the_igvm_crate_for_one_and_many_vcpus() {
    let sample = fx::every_directive();
    for vcpus in [1, 2, 5] {
        let ours = plan(&sample, vcpus).unwrap().expected_digest().unwrap();
        assert_eq!(
            ours.as_bytes(),
            &reference_digest(&sample, vcpus),
            "vcpus={vcpus}"
        );
    }
    // Sanity: the vCPU count changes the digest.
    let one = plan(&sample, 1).unwrap().expected_digest().unwrap();
    let two = plan(&sample, 2).unwrap().expected_digest().unwrap();
    assert_ne!(one, two);
}

#[test]
fn digest_ignores_runtime_parameters_but_not_page_contents() {
    let sample = fx::every_directive();
    let base = plan(&sample, 1).unwrap().expected_digest().unwrap();
    let mut other_cfg = cfg(1);
    other_cfg.cmdline = Some("quiet".into());
    other_cfg.ram = RamLayout::pc(1 << 30).unwrap();
    let p = plan_from_igvm(&sample.bytes().unwrap(), &other_cfg).unwrap();
    assert_eq!(p.expected_digest().unwrap(), base);

    let mut changed = sample.clone();
    changed.directives[1] = fx::normal(0x2000, b"Short page".to_vec());
    assert_ne!(plan(&changed, 1).unwrap().expected_digest().unwrap(), base);
}

#[test]
fn ranges_merge_without_reordering() {
    let p = plan(&fx::every_directive(), 1).unwrap();
    let ranges = p.ranges();
    let summary: Vec<(u64, PageType, u64)> = ranges
        .iter()
        .map(|r| (r.gpa, r.page_type, r.pages()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0x1000, PageType::Normal, 3),
            (0x4000, PageType::Unmeasured, 1),
            (0x5000, PageType::Secrets, 1),
            (0x6000, PageType::Cpuid, 1),
            (0x7000, PageType::Cpuid, 1),
            (fx::AREA0_GPA, PageType::Unmeasured, 3),
        ]
    );
    assert_eq!(&ranges[0].data[0x1000..0x100a], b"short page");
    assert!(ranges[0].data[0x100a..].iter().all(|&b| b == 0));
}

fn err_of(sample: &Sample) -> String {
    plan(sample, 1).unwrap_err().to_string()
}

#[test]
fn bad_checksum_and_garbage_are_refused() {
    let mut bytes = fx::every_directive().bytes().unwrap();
    // The fixed header is 0x20 bytes; the first variable header follows.
    bytes[0x30] ^= 0x40;
    let e = plan_from_igvm(&bytes, &cfg(1)).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    for junk in [&b""[..], b"IGVM", &[0u8; 64], &[0xffu8; 4096]] {
        assert!(plan_from_igvm(junk, &cfg(1)).is_err());
    }
    let truncated = &fx::every_directive().bytes().unwrap()[..100];
    assert!(plan_from_igvm(truncated, &cfg(1)).is_err());
}

#[test]
fn overlapping_pages_are_refused() {
    let mut s = fx::every_directive();
    s.directives.insert(1, fx::normal(0x1000, vec![1]));
    assert!(err_of(&s).contains("loaded twice"), "{}", err_of(&s));
    // A parameter insert on top of a page is an overlap too.
    let mut s = fx::every_directive();
    s.directives.insert(0, fx::normal(AREA0_PLUS_ONE, vec![1]));
    assert!(err_of(&s).contains("loaded twice"));
}

const AREA0_PLUS_ONE: u64 = fx::AREA0_GPA + 0x1000;

#[test]
fn gpas_outside_ram_are_refused() {
    let mut s = fx::every_directive();
    s.directives.insert(0, fx::normal(0xD000_0000, vec![1]));
    let e = err_of(&s);
    assert!(
        e.contains("outside the VM's RAM") && e.contains("0xd0000000"),
        "{e}"
    );

    let mut s = fx::every_directive();
    s.directives.insert(
        0,
        IgvmDirectiveHeader::RequiredMemory {
            gpa: 0x1000_0000,
            compatibility_mask: fx::SNP_MASK,
            number_of_bytes: 0x2000_0000,
            vtl2_protectable: false,
        },
    );
    assert!(err_of(&s).contains("required memory"), "{}", err_of(&s));

    let mut s = fx::every_directive();
    s.directives.insert(
        0,
        IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 0x1000,
            parameter_area_index: 9,
            initial_data: Vec::new(),
        },
    );
    s.directives.insert(
        1,
        IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
            gpa: 0x1_0000_0000,
            compatibility_mask: fx::SNP_MASK,
            parameter_area_index: 9,
        }),
    );
    assert!(
        err_of(&s).contains("parameter area at GPA 0x100000000"),
        "{}",
        err_of(&s)
    );
}

#[test]
fn huge_and_malformed_parameter_areas_are_refused() {
    let mut s = fx::every_directive();
    s.directives.insert(
        0,
        IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 1 << 40,
            parameter_area_index: 7,
            initial_data: Vec::new(),
        },
    );
    let e = err_of(&s);
    assert!(
        e.contains("parameter area 7") && e.contains("outside"),
        "{e}"
    );

    // A command line that does not fit its area.
    let mut c = cfg(1);
    c.cmdline = Some("x".repeat(0x1000));
    let e = plan_from_igvm(&fx::every_directive().bytes().unwrap(), &c).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
}

#[test]
fn wrong_platform_is_refused() {
    let native_only = Sample {
        platforms: vec![fx::platform(fx::NATIVE_MASK, IgvmPlatformType::NATIVE)],
        inits: Vec::new(),
        directives: vec![IgvmDirectiveHeader::PageData {
            gpa: 0x1000,
            compatibility_mask: fx::NATIVE_MASK,
            flags: IgvmPageDataFlags::new(),
            data_type: IgvmPageDataType::NORMAL,
            data: vec![1],
        }],
    };
    let e = err_of(&native_only);
    assert!(
        e.contains("does not support SEV-SNP") && e.contains("native"),
        "{e}"
    );
}

#[test]
fn policy_problems_are_refused() {
    let mut s = fx::every_directive();
    s.inits.clear();
    assert!(err_of(&s).contains("no SEV-SNP guest policy"));
    let mut s = fx::every_directive();
    s.inits = vec![IgvmInitializationHeader::GuestPolicy {
        policy: fx::POLICY | GuestPolicy::DEBUG,
        compatibility_mask: fx::SNP_MASK,
    }];
    assert!(err_of(&s).contains("debugging"));
}

#[test]
fn vp_context_constraints_of_kvm() {
    // A page after the VP context.
    let mut s = fx::every_directive();
    s.directives.push(fx::normal(0x20000, vec![1]));
    assert!(err_of(&s).contains("after all pages"), "{}", err_of(&s));
    // Wrong GPA.
    let mut s = fx::every_directive();
    if let Some(IgvmDirectiveHeader::SnpVpContext { gpa, .. }) = s.directives.last_mut() {
        *gpa = 0x9000;
    }
    assert!(err_of(&s).contains("KVM measures VMSAs at 0xfffffffff000"));
    // An AP context.
    let mut s = fx::every_directive();
    if let Some(IgvmDirectiveHeader::SnpVpContext { vp_index, .. }) = s.directives.last_mut() {
        *vp_index = 1;
    }
    assert!(err_of(&s).contains("only VP 0"), "{}", err_of(&s));
    // A VMSA KVM cannot reproduce.
    let mut s = fx::every_directive();
    let mut v = fx::sample_vmsa();
    v.cr4 &= !crate::vp_context::CR4_MCE;
    *s.directives.last_mut().unwrap() = fx::vp_context(v);
    let e = err_of(&s);
    assert!(e.contains("cr4") && e.contains("MCE"), "{e}");
    // No VP context at all.
    let mut s = fx::every_directive();
    s.directives.pop();
    assert!(err_of(&s).contains("no SNP VP context"));
}

#[test]
fn unsupported_directives_are_refused() {
    let mut s = fx::every_directive();
    s.directives.insert(
        10,
        IgvmDirectiveHeader::Madt(igvm_defs::IGVM_VHS_PARAMETER {
            parameter_area_index: 0,
            byte_offset: 0x800,
        }),
    );
    assert!(err_of(&s).contains("MADT"));
    let mut s = fx::every_directive();
    s.directives[0] = fx::page(
        0x20_0000,
        IgvmPageDataType::NORMAL,
        IgvmPageDataFlags::new().with_is_2mb_page(true),
        Vec::new(),
    );
    assert!(err_of(&s).contains("2 MiB"), "{}", err_of(&s));
}

#[test]
fn bad_vcpu_counts_are_refused() {
    let bytes = fx::every_directive().bytes().unwrap();
    assert!(plan_from_igvm(&bytes, &cfg(0)).is_err());
    assert!(plan_from_igvm(&bytes, &cfg(MAX_VCPUS + 1)).is_err());
}

/// Re-seal a mutated v1 image so the mutation reaches the parser instead of the checksum.
fn reseal(bytes: &mut [u8]) {
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    if bytes.len() < 24 {
        return;
    }
    let off = u32_at(bytes, 8) as usize;
    let size = u32_at(bytes, 12) as usize;
    let Some(end) = off
        .checked_add(size)
        .filter(|&e| e <= bytes.len() && off >= 24)
    else {
        return;
    };
    bytes[20..24].fill(0);
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..24]);
    h.update(&bytes[off..end]);
    let sum = h.finalize();
    bytes[20..24].copy_from_slice(&sum.to_le_bytes());
}

/// Stable-toolchain companion of `fuzz/fuzz_targets/igvm_plan.rs`: thousands of checksum-valid
/// mutations of the sample must give an error or a plan whose digest the model reproduces.
#[test]
fn mutated_images_never_panic_and_accepted_ones_launch() {
    use crate::launch::model::{ModelConfig, ModelPlatform};
    use crate::launch::{launch, LaunchError};
    let base = fx::every_directive().bytes().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..800 {
        let mut bytes = base.clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = match next() % 3 {
                0 => bytes[at] ^ (1 << (next() % 8)),
                1 => 0xff,
                _ => 0,
            };
        }
        reseal(&mut bytes);
        match plan_from_igvm(&bytes, &cfg(2)) {
            Err(_) => refused += 1,
            Ok(mut plan) => {
                accepted += 1;
                let expected = plan.expected_digest().unwrap();
                plan.id = None;
                match launch(&plan, &mut ModelPlatform::new(ModelConfig::default())) {
                    Ok(report) => assert_eq!(report.platform, Some(expected)),
                    Err(LaunchError::Firmware { .. }) => {}
                    Err(e) => panic!("accepted plan refused by the model: {e}"),
                }
            }
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "accepted {accepted}, refused {refused}"
    );
}

#[test]
fn a_file_offset_into_the_headers_is_an_error_not_an_overflow() {
    let mut bytes = fx::every_directive().bytes().unwrap();
    let var_off = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    // Walk to the first PAGE_DATA header (type 0x302) and point its data at the headers.
    let mut at = var_off;
    loop {
        let typ = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if typ == 0x302 {
            break;
        }
        at += 8 + len.div_ceil(8) * 8;
    }
    bytes[at + 8 + 12..at + 8 + 16].copy_from_slice(&8u32.to_le_bytes());
    reseal(&mut bytes);
    let err = plan_from_igvm(&bytes, &cfg(1)).unwrap_err();
    assert!(
        matches!(err, IgvmPlanError::BadFileOffset { file_offset: 8, .. }),
        "{err}"
    );
    // A VP context without data (file offset 0) is refused too.
    let mut bytes = fx::every_directive().bytes().unwrap();
    let at = header_of_type(&bytes, 0x304);
    bytes[at + 8 + 12..at + 8 + 16].fill(0);
    reseal(&mut bytes);
    let err = plan_from_igvm(&bytes, &cfg(1)).unwrap_err();
    assert!(
        matches!(err, IgvmPlanError::BadFileOffset { file_offset: 0, .. }),
        "{err}"
    );
}

/// Byte offset of the first variable header of type `typ`.
fn header_of_type(bytes: &[u8], typ: u32) -> usize {
    let mut at = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    loop {
        let t = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if t == typ {
            return at;
        }
        at += 8 + len.div_ceil(8) * 8;
    }
}

#[test]
fn a_header_section_past_the_end_is_an_error_not_an_overflow() {
    let good = fx::every_directive().bytes().unwrap();
    for (offset, size) in [
        (0x20u32, u32::MAX),
        (u32::MAX, 0x20),
        (0x20, good.len() as u32),
    ] {
        let mut bytes = good.clone();
        bytes[8..12].copy_from_slice(&offset.to_le_bytes());
        bytes[12..16].copy_from_slice(&size.to_le_bytes());
        let err = plan_from_igvm(&bytes, &cfg(1)).unwrap_err();
        assert!(
            matches!(err, IgvmPlanError::BadHeaderSection { .. }),
            "{err}"
        );
    }
}

#[test]
fn parameter_area_data_past_the_end_is_an_error_not_an_overflow() {
    // Give area 1 (which has initial data) a size that overflows its file offset.
    let mut bytes = fx::every_directive().bytes().unwrap();
    let mut at = header_of_type(&bytes, 0x301);
    // The first area has no initial data (offset 0); find the one that has.
    while u32::from_le_bytes(bytes[at + 8 + 12..at + 8 + 16].try_into().unwrap()) == 0 {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8 + len.div_ceil(8) * 8;
        while u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) != 0x301 {
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            at += 8 + len.div_ceil(8) * 8;
        }
    }
    bytes[at + 8..at + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal(&mut bytes);
    let err = plan_from_igvm(&bytes, &cfg(1)).unwrap_err();
    assert!(matches!(err, IgvmPlanError::BadDataSize { .. }), "{err}");
}

#[test]
fn malformed_relocation_headers_are_errors_not_panics() {
    let region = |alignment, gpa, size| IgvmInitializationHeader::RelocatableRegion {
        compatibility_mask: fx::SNP_MASK,
        relocation_alignment: alignment,
        relocation_region_gpa: gpa,
        relocation_region_size: size,
        minimum_relocation_gpa: 0,
        maximum_relocation_gpa: 0x1000_0000,
        is_vtl2: false,
        apply_rip_offset: false,
        apply_gdtr_offset: false,
        vp_index: 0,
        vtl: igvm::hv_defs::Vtl::Vtl0,
    };
    // Relocation needs a VBS VP context: give the image a second, VBS platform that owns the
    // relocatable region. The SNP plan ignores both.
    let mut ok = fx::every_directive();
    ok.platforms
        .push(fx::platform(0x4, IgvmPlatformType::VSM_ISOLATION));
    let mut reloc = region(0x20_0000, 0x20_0000, 0x20_0000);
    if let IgvmInitializationHeader::RelocatableRegion {
        compatibility_mask, ..
    } = &mut reloc
    {
        *compatibility_mask = 0x4;
    }
    ok.inits.push(reloc);
    ok.directives.insert(
        0,
        IgvmDirectiveHeader::X64VbsVpContext {
            vtl: igvm::hv_defs::Vtl::Vtl0,
            registers: vec![igvm::registers::X86Register::Rip(0x20_0000)],
            compatibility_mask: 0x4,
        },
    );
    plan(&ok, 1).unwrap();

    // Values the builder would refuse, written into the serialized header.
    let bytes = ok.bytes().unwrap();
    let at = header_of_type(&bytes, 0x102);
    for (off, value) in [(8usize, 0u64), (24, 0), (16, 0xffff_ffff_ffff_f000)] {
        let mut b = bytes.clone();
        b[at + 8 + off..at + 16 + off].copy_from_slice(&value.to_le_bytes());
        reseal(&mut b);
        let err = plan_from_igvm(&b, &cfg(1)).unwrap_err();
        assert!(matches!(err, IgvmPlanError::BadRelocation { .. }), "{err}");
    }
}
