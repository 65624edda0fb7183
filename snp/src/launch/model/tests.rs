use super::*;
use crate::id_block::HostData;
use crate::launch::recording::tests::{sample_plan, sample_plan_with};
use crate::launch::{launch, FinishParams};
use crate::plan::EmptyPages;
use crate::plan::LaunchRange;

fn model() -> ModelPlatform {
    ModelPlatform::new(ModelConfig::default())
}

fn started() -> ModelPlatform {
    let mut m = model();
    m.init(0).unwrap();
    m.add_ram(RamSlot {
        slot: 0,
        region: RamRegion {
            gpa: 0,
            size: 0x10_0000,
        },
    })
    .unwrap();
    m.create_vcpu(0, &sample_plan(1).vcpu_state).unwrap();
    m.start(GuestPolicy::DEFAULT).unwrap();
    m
}

fn range(gpa: u64, page_type: PageType, pages: usize) -> LaunchRange {
    LaunchRange {
        gpa,
        page_type,
        data: vec![0x5a; pages * PAGE_SIZE],
    }
}

fn status(e: LaunchError) -> u32 {
    match e {
        LaunchError::Firmware { status, .. } => status,
        other => panic!("expected a firmware error, got {other}"),
    }
}

#[test]
fn empty_pages_issued_as_zero_pages_measure_as_the_plan_says() {
    let normal = sample_plan_with(1, EmptyPages::Normal);
    let zero = sample_plan_with(1, EmptyPages::Zero);
    // Same pages in the same order; only the empty NORMAL ones change type.
    assert_eq!(normal.pages.len(), zero.pages.len());
    let mut changed = 0;
    for (n, z) in normal.pages.iter().zip(&zero.pages) {
        assert_eq!(n.gpa, z.gpa);
        if n.page_type == PageType::Normal && n.data.is_empty() {
            assert_eq!(z.page_type, PageType::Zero, "page {:#x}", n.gpa);
            changed += 1;
        } else {
            assert_eq!(n.page_type, z.page_type, "page {:#x}", n.gpa);
        }
    }
    assert!(changed > 0, "the sample has an empty page");
    let zero_digest = zero.expected_digest().unwrap();
    assert_ne!(zero_digest, normal.expected_digest().unwrap());
    // The platform, fed what the launcher issues, arrives at the same digest.
    let mut m = model();
    let report = launch(&zero, &mut m).unwrap();
    assert_eq!(report.platform.as_ref(), Some(&zero_digest));
}

#[test]
fn model_digest_equals_plan_digest() {
    for vcpus in [1, 3] {
        let plan = sample_plan(vcpus);
        let mut m = model();
        let report = launch(&plan, &mut m).unwrap();
        assert_eq!(report.platform.as_ref(), Some(&report.expected));
        assert_eq!(report.expected, plan.expected_digest().unwrap());
        assert_eq!(
            m.page_state(0x1000),
            Some(PageState::Launched(PageType::Normal))
        );
        assert_eq!(
            m.page_state(0x6000),
            Some(PageState::Launched(PageType::Cpuid))
        );
        assert_eq!(
            m.page_state(0x8000),
            Some(PageState::Shared),
            "shared IGVM page"
        );
        assert_eq!(m.page_state(0x9000), Some(PageState::Shared));
        assert_eq!(m.page_state(0xD000_0000), None);
    }
}

#[test]
fn model_corrects_a_bad_cpuid_table_and_the_driver_retries() {
    // The sample's CPUID page claims 0x20202020 entries: rejected, clamped to 64, retried.
    let plan = sample_plan(1);
    let mut m = model();
    launch(&plan, &mut m).unwrap();
    let mut r = range(0x6000, PageType::Cpuid, 1);
    r.data.fill(0);
    r.data[0] = 65;
    assert_eq!(check_cpuid_page(&r.data).unwrap_err()[0], 64);
    r.data[0] = 2;
    check_cpuid_page(&r.data).unwrap();
    r.data[CPUID_HEADER + 40] = 1;
    assert_eq!(check_cpuid_page(&r.data).unwrap_err()[CPUID_HEADER + 40], 0);
}

#[test]
fn refuses_bad_policy_bits() {
    let mut m = model();
    m.init(0).unwrap();
    assert_eq!(
        status(m.start(GuestPolicy(0x10000)).unwrap_err()),
        fw_status::INVALID_PARAM
    );
    assert_eq!(
        status(m.start(GuestPolicy(0x30000 | 1 << 40)).unwrap_err()),
        fw_status::INVALID_PARAM
    );
    assert_eq!(
        status(m.start(GuestPolicy(0x20000)).unwrap_err()),
        fw_status::POLICY_FAILURE
    );
    assert_eq!(
        status(m.start(GuestPolicy(0x30000 | 0x0200)).unwrap_err()),
        fw_status::POLICY_FAILURE
    );
    m.start(GuestPolicy::DEFAULT).unwrap();
    assert_eq!(
        status(m.start(GuestPolicy::DEFAULT).unwrap_err()),
        fw_status::INVALID_GUEST_STATE
    );
}

#[test]
fn refuses_unaligned_overlapping_and_shared_pages() {
    let mut m = started();
    m.set_private(0x1000, 0x4000).unwrap();
    let mut r = range(0x1800, PageType::Normal, 1);
    assert!(matches!(m.update(&mut r), Err(LaunchError::Refused { .. })));
    let mut r = range(0x1000, PageType::Normal, 1);
    r.data.truncate(100);
    assert!(matches!(m.update(&mut r), Err(LaunchError::Refused { .. })));

    let mut r = range(0x1000, PageType::Normal, 2);
    m.update(&mut r).unwrap();
    let digest = m.digest().clone();
    let mut again = range(0x2000, PageType::Normal, 2);
    assert_eq!(
        status(m.update(&mut again).unwrap_err()),
        fw_status::INVALID_PAGE_STATE
    );
    assert_eq!(m.digest(), &digest, "a refused range measures nothing");
    assert_eq!(m.page_state(0x3000), Some(PageState::Private));

    let mut shared = range(0x8000, PageType::Normal, 1);
    let e = m.update(&mut shared).unwrap_err();
    assert!(e.to_string().contains("not private"), "{e}");
    let mut outside = range(0x20_0000, PageType::Normal, 1);
    assert!(m
        .update(&mut outside)
        .unwrap_err()
        .to_string()
        .contains("not guest_memfd RAM"));
    assert!(m.set_private(0x20_0000, 0x1000).is_err());
    let mut vmsa = range(0x3000, PageType::Vmsa, 1);
    assert!(m
        .update(&mut vmsa)
        .unwrap_err()
        .to_string()
        .contains("VMSA"));
}

#[test]
fn refuses_calls_out_of_order() {
    let mut m = model();
    assert!(m.create_vcpu(0, &sample_plan(1).vcpu_state).is_err());
    assert!(m.start(GuestPolicy::DEFAULT).is_err());
    assert!(m.init(1).unwrap_err().to_string().contains("not offered"));
    m.init(0).unwrap();
    assert!(m.init(0).is_err());
    let mut r = range(0x1000, PageType::Normal, 1);
    assert_eq!(
        status(m.update(&mut r).unwrap_err()),
        fw_status::INVALID_GUEST_STATE
    );

    let mut m = started();
    let params = FinishParams {
        id: None,
        host_data: HostData::default(),
    };
    m.finish(&params).unwrap();
    m.set_private(0x1000, 0x1000).unwrap();
    let mut r = range(0x1000, PageType::Normal, 1);
    let e = m.update(&mut r).unwrap_err();
    assert!(e.to_string().contains("launch after finish"), "{e}");
    assert_eq!(
        status(m.finish(&params).unwrap_err()),
        fw_status::INVALID_GUEST_STATE
    );
    assert!(m.create_vcpu(1, &sample_plan(1).vcpu_state).is_err());
}

#[test]
fn id_block_mismatches_are_bad_measurement() {
    let plan = sample_plan(1);
    let mut wrong_ld = plan.clone();
    if let Some((block, _)) = wrong_ld.id.as_mut() {
        block.ld[0] ^= 1;
    }
    let e = launch(&wrong_ld, &mut model()).unwrap_err();
    assert_eq!(status(e), fw_status::BAD_MEASUREMENT);

    let mut wrong_policy = plan.clone();
    if let Some((block, _)) = wrong_policy.id.as_mut() {
        block.policy = GuestPolicy(0x30000 | GuestPolicy::SINGLE_SOCKET);
    }
    let e = launch(&wrong_policy, &mut model()).unwrap_err();
    assert_eq!(status(e), fw_status::BAD_MEASUREMENT);

    let mut bad_key = plan;
    if let Some((_, auth)) = bad_key.id.as_mut() {
        auth.id_key.curve = 3;
    }
    assert_eq!(
        status(launch(&bad_key, &mut model()).unwrap_err()),
        fw_status::INVALID_PARAM
    );
}
