use super::*;
use crate::id_block::HostData;
use crate::igvm_fixtures::{self as fx, Sample};
use crate::plan::RamLayout;
use igvm_defs::{IgvmPageDataFlags, IgvmPageDataType, IGVM_VHS_PARAMETER_INSERT};

fn cfg(vcpus: u32) -> VmConfig {
    VmConfig {
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
