use super::*;
use crate::id_block::HostData;
use crate::igvm_fixtures as fx;
use crate::igvm_plan::plan_from_igvm;
use crate::launch::kvm::KvmBackend;
use crate::launch::{fw_status, launch, LaunchError};
use crate::page_info::{LaunchDigest, PageType, VMSA_GPA};
use crate::plan::{EmptyPages, LaunchPlan, RamLayout, VmConfig};
use std::mem::{offset_of, size_of};

#[test]
fn encodings_match_kvm_bindings_layouts() {
    use kvm_bindings::*;
    assert_eq!(
        size_of::<kvm_sev_init>(),
        encode_sev_init(&Default::default()).len()
    );
    assert_eq!(offset_of!(kvm_sev_init, flags), 8);
    assert_eq!(offset_of!(kvm_sev_init, ghcb_version), 12);

    assert_eq!(
        size_of::<kvm_create_guest_memfd>(),
        encode_guest_memfd(&Default::default()).len()
    );
    assert_eq!(offset_of!(kvm_create_guest_memfd, flags), 8);

    assert_eq!(
        size_of::<kvm_userspace_memory_region2>(),
        encode_region2(&Default::default()).len()
    );
    assert_eq!(offset_of!(kvm_userspace_memory_region2, flags), 4);
    assert_eq!(offset_of!(kvm_userspace_memory_region2, guest_phys_addr), 8);
    assert_eq!(offset_of!(kvm_userspace_memory_region2, memory_size), 16);
    assert_eq!(offset_of!(kvm_userspace_memory_region2, userspace_addr), 24);
    assert_eq!(
        offset_of!(kvm_userspace_memory_region2, guest_memfd_offset),
        32
    );
    assert_eq!(offset_of!(kvm_userspace_memory_region2, guest_memfd), 40);

    assert_eq!(
        size_of::<kvm_memory_attributes>(),
        encode_mem_attrs(&Default::default()).len()
    );
    assert_eq!(offset_of!(kvm_memory_attributes, size), 8);
    assert_eq!(offset_of!(kvm_memory_attributes, attributes), 16);
    assert_eq!(offset_of!(kvm_memory_attributes, flags), 24);

    assert_eq!(
        size_of::<kvm_sev_snp_launch_start>(),
        encode_launch_start(&Default::default()).len()
    );
    assert_eq!(offset_of!(kvm_sev_snp_launch_start, gosvw), 8);
    assert_eq!(offset_of!(kvm_sev_snp_launch_start, flags), 24);

    assert_eq!(
        size_of::<kvm_sev_snp_launch_update>(),
        encode_launch_update(&Default::default()).len()
    );
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, uaddr), 8);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, len), 16);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, type_), 24);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, flags), 26);

    assert_eq!(
        size_of::<kvm_sev_snp_launch_finish>(),
        encode_launch_finish(&Default::default()).len()
    );
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, id_auth_uaddr), 8);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, id_block_en), 16);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, auth_key_en), 17);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, vcek_disabled), 18);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, host_data), 19);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, flags), 54);

    assert_eq!(size_of::<kvm_sev_cmd>(), 24);
    assert_eq!(
        KVM_SEV_SNP_ID_BLOCK_SIZE as usize,
        crate::id_block::ID_BLOCK_SIZE
    );
    assert_eq!(
        KVM_SEV_SNP_ID_AUTH_SIZE as usize,
        crate::id_block::ID_AUTH_SIZE
    );
    assert_eq!(
        KVM_SEV_SNP_FINISH_DATA_SIZE as usize,
        crate::id_block::HOST_DATA_SIZE
    );
}

/// The sample plan with its ID block signed for the right digest.
pub(crate) fn sample_plan(vcpus: u32) -> LaunchPlan {
    sample_plan_with(vcpus, EmptyPages::Normal)
}

/// [`sample_plan`] with empty IGVM pages issued as `empty_pages` says.
pub(crate) fn sample_plan_with(vcpus: u32, empty_pages: EmptyPages) -> LaunchPlan {
    let cfg = VmConfig {
        empty_pages,
        ram: RamLayout::pc(512 << 20).unwrap(),
        vcpus,
        cmdline: Some("console=ttyS0".into()),
        host_data: HostData([0xab; 32]),
    };
    let mut plan = plan_from_igvm(&fx::every_directive().bytes().unwrap(), &cfg).unwrap();
    let digest = plan.expected_digest().unwrap();
    if let Some((block, _)) = plan.id.as_mut() {
        block.ld = *digest.as_bytes();
    }
    plan
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

#[test]
fn launch_sequence_and_bytes() {
    let plan = sample_plan(2);
    let fake = RecordingIoctls::new(Script {
        pages_per_update: 2,
        reject_cpuid_once: Some(0x07),
        ..Default::default()
    });
    let mut backend = KvmBackend::new(fake);
    let report = launch(&plan, &mut backend).unwrap();
    assert_eq!(report.platform, None);
    let fake = backend.into_inner();

    let ops = fake.ops();
    let update = "KVM_SEV_SNP_LAUNCH_UPDATE";
    let attrs = "KVM_SET_MEMORY_ATTRIBUTES";
    let mut expected = vec![
        "KVM_ENABLE_CAP(EXIT_HYPERCALL)",
        "KVM_SEV_INIT2",
        "KVM_CREATE_GUEST_MEMFD",
        "KVM_SET_USER_MEMORY_REGION2",
    ];
    expected.extend([attrs; 6]);
    expected.extend([
        "KVM_CREATE_VCPU",
        "KVM_CREATE_VCPU",
        "KVM_SEV_SNP_LAUNCH_START",
    ]);
    // NORMAL x3 pages in 2 calls, UNMEASURED, SECRETS, CPUID rejected + retried, CPUID_XF,
    // parameter pages x3 in 2 calls.
    expected.extend([update; 9]);
    expected.push("KVM_SEV_SNP_LAUNCH_FINISH");
    assert_eq!(ops, expected);

    let c = &fake.calls;
    assert_eq!(c[0].bytes, (1u64 << 12).to_le_bytes());
    assert_eq!(u64_at(&c[1].bytes, 0), 0, "vmsa_features");
    assert_eq!(&c[1].bytes[12..14], &2u16.to_le_bytes(), "ghcb_version");
    assert_eq!(u64_at(&c[2].bytes, 0), 512 << 20, "guest_memfd size");
    let region = &c[3].bytes;
    assert_eq!(
        &region[0..8],
        &[0, 0, 0, 0, 4, 0, 0, 0],
        "slot 0, KVM_MEM_GUEST_MEMFD"
    );
    assert_eq!(u64_at(region, 8), 0);
    assert_eq!(u64_at(region, 16), 512 << 20);
    assert_eq!(&region[40..44], &101u32.to_le_bytes(), "guest_memfd fd");
    // First private range: the three NORMAL pages.
    assert_eq!(u64_at(&c[4].bytes, 0), 0x1000);
    assert_eq!(u64_at(&c[4].bytes, 8), 0x3000);
    assert_eq!(u64_at(&c[4].bytes, 16), 1 << 3);
    assert_eq!(&c[10].bytes, &0u32.to_le_bytes());
    assert_eq!(&c[11].bytes, &1u32.to_le_bytes());
    assert_eq!(u64_at(&c[12].bytes, 0), 0x30000, "policy");
    assert!(c[12].bytes[8..].iter().all(|&b| b == 0));

    // Partial progress: the loop continues where KVM stopped.
    let u0 = &c[13].bytes;
    assert_eq!(
        (u64_at(u0, 0), u64_at(u0, 8), u64_at(u0, 16), u0[24]),
        (1, 0, 0x3000, 1)
    );
    let u1 = &c[14].bytes;
    assert_eq!(
        (u64_at(u1, 0), u64_at(u1, 8), u64_at(u1, 16), u1[24]),
        (3, 0x2000, 0x1000, 1)
    );
    // CPUID page: rejected once, retried with identical parameters.
    assert_eq!(c[17].bytes, c[18].bytes);
    assert_eq!(c[17].bytes[24], 6);
    let cpuid = fake.updated.iter().find(|(gfn, ..)| *gfn == 6).unwrap();
    assert_eq!(cpuid.2[0], 0x07, "retry carries the corrected table");

    let fin = &c[22].bytes;
    assert_eq!(fin.len(), 88 + 96 + 4096);
    assert_eq!((fin[16], fin[17], fin[18]), (1, 0, 0));
    assert_eq!(&fin[19..51], &[0xab; 32]);
    let block = &fin[88..88 + 96];
    assert_eq!(&block[..48], report.expected.as_bytes());
    assert_eq!(u64_at(block, 88), 0x30000);

    // What KVM received measures to the plan's digest.
    let mut ld = LaunchDigest::new();
    for (gfn, ty, data) in &fake.updated {
        let ty = PageType::try_from(*ty).unwrap();
        ld.extend_pages(gfn * 4096, ty, data).unwrap();
    }
    assert_eq!(fake.vcpu_states.len(), 2);
    for state in &fake.vcpu_states {
        let vmsa = crate::vp_context::kvm_vmsa(state, plan.vmsa_features).unwrap();
        ld.extend(VMSA_GPA, PageType::Vmsa, &vmsa).unwrap();
    }
    assert_eq!(ld, report.expected);
}

#[test]
fn firmware_errors_stop_the_launch() {
    let plan = sample_plan(1);
    let fake = RecordingIoctls::new(Script {
        fail: Some(("KVM_SEV_SNP_LAUNCH_START", fw_status::POLICY_FAILURE)),
        ..Default::default()
    });
    let mut backend = KvmBackend::new(fake);
    let err = launch(&plan, &mut backend).unwrap_err();
    assert!(
        matches!(
            err,
            LaunchError::Firmware {
                status: fw_status::POLICY_FAILURE,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("POLICY_FAILURE"));
    let fake = backend.into_inner();
    assert_eq!(fake.ops().last(), Some(&"KVM_SEV_SNP_LAUNCH_START"));
}

#[test]
fn an_update_without_progress_is_an_error_not_a_hang() {
    let plan = sample_plan(1);
    let mut backend = KvmBackend::new(RecordingIoctls::new(Script {
        stall_updates: true,
        ..Default::default()
    }));
    let err = launch(&plan, &mut backend).unwrap_err();
    assert!(err.to_string().contains("no progress"), "{err}");
}

#[test]
fn a_rejected_normal_page_is_not_retried() {
    let plan = sample_plan(1);
    let mut backend = KvmBackend::new(RecordingIoctls::new(Script {
        fail: Some(("KVM_SEV_SNP_LAUNCH_UPDATE", fw_status::INVALID_PARAM)),
        ..Default::default()
    }));
    let err = launch(&plan, &mut backend).unwrap_err();
    assert!(matches!(err, LaunchError::Firmware { .. }), "{err}");
    // The first range is NORMAL: no retry for it.
    let ops = backend.into_inner().ops();
    assert_eq!(
        ops.iter()
            .filter(|o| **o == "KVM_SEV_SNP_LAUNCH_UPDATE")
            .count(),
        1
    );
}

#[test]
fn the_launch_times_every_phase_it_drives() {
    let plan = sample_plan(2);
    let mut backend = KvmBackend::new(RecordingIoctls::new(Script {
        pages_per_update: 1,
        ..Default::default()
    }));
    let report = launch(&plan, &mut backend).unwrap();
    let t = report.timing;
    assert_eq!(t.update_ranges, report.ranges);
    assert!(t.update_ranges > 0);
    let ops = backend.into_inner().ops();
    let updates = ops
        .iter()
        .filter(|o| **o == "KVM_SEV_SNP_LAUNCH_UPDATE")
        .count();
    // One page per call: more calls than ranges, all inside the timed update phase.
    assert!(updates > t.update_ranges, "{updates} calls");
    assert_eq!(
        t.total(),
        t.digest + t.init2 + t.memory + t.vcpus + t.launch_start + t.launch_update + t.finish
    );
    assert!(t.launch_update > std::time::Duration::ZERO && t.digest > std::time::Duration::ZERO);
    let line = t.to_string();
    let keys: Vec<&str> = line
        .split(' ')
        .skip(1)
        .map(|w| {
            let (k, v) = w.split_once('=').unwrap();
            assert!(v.parse::<u128>().is_ok(), "{line}");
            k
        })
        .collect();
    assert!(line.starts_with("snp-launch-timing "), "{line}");
    assert_eq!(
        keys,
        [
            "digest-us",
            "init2-us",
            "memory-us",
            "vcpus-us",
            "launch-start-us",
            "launch-update-us",
            "launch-update-ranges",
            "finish-us",
            "total-us"
        ]
    );
}

#[test]
fn the_certificate_request_exit_is_enabled_after_init2_and_before_the_vcpus() {
    let plan = sample_plan(2);
    let mut backend = KvmBackend::new(RecordingIoctls::default()).with_req_certs();
    launch(&plan, &mut backend).unwrap();
    let ops = backend.into_inner().ops();
    let at = |op: &str| ops.iter().position(|o| *o == op).unwrap();
    let enable = at("KVM_SEV_SNP_ENABLE_REQ_CERTS");
    assert_eq!(enable, at("KVM_SEV_INIT2") + 1);
    assert!(enable < at("KVM_CREATE_VCPU"));
    assert_eq!(
        ops.iter()
            .filter(|o| **o == "KVM_SEV_SNP_ENABLE_REQ_CERTS")
            .count(),
        1
    );
    // Without a certificate table nothing is enabled.
    let mut backend = KvmBackend::new(RecordingIoctls::default());
    launch(&plan, &mut backend).unwrap();
    assert!(!backend
        .into_inner()
        .ops()
        .contains(&"KVM_SEV_SNP_ENABLE_REQ_CERTS"));
    // A kernel that refuses it fails the launch before any vCPU exists.
    let mut backend = KvmBackend::new(RecordingIoctls::new(Script {
        fail: Some(("KVM_SEV_SNP_ENABLE_REQ_CERTS", 0)),
        ..Default::default()
    }))
    .with_req_certs();
    let err = launch(&plan, &mut backend).unwrap_err();
    assert!(err.to_string().contains("ENABLE_REQ_CERTS"), "{err}");
    assert!(!backend.into_inner().ops().contains(&"KVM_CREATE_VCPU"));
}
