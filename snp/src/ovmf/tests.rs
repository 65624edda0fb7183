//! Parser and launch tests on synthetic OVMF-format images. The pinned digests were produced by
//! PyPI `sev-snp-measure` 0.0.13 on byte-identical images (written out by [`synth`] and
//! measured with `sev-snp-measure --mode snp ...`).

use super::launch::{measure, OvmfLaunch, OvmfLaunchConfig, OvmfLaunchError, StepSource};
use super::vcpu::{vcpu_type_signature, VmmType};
use super::*;
use crate::ovmf::hashes::SevHashes;
use crate::page_info::PageType;

/// A raw section descriptor: (gpa, size, type).
type SectionDesc = (u32, u32, u32);

/// Test image description: size, footer entries (besides the footer), metadata sections.
struct Synth {
    size: usize,
    entries: Vec<(Guid, Vec<u8>)>,
    sections: Vec<SectionDesc>,
}

/// Offset from the end of the image where the synthetic metadata header is placed.
const META_FROM_END: u32 = 0x800;

impl Synth {
    fn standard(with_hashes: bool) -> Self {
        let mut sections = vec![
            (0x80_0000, 0x9000, 1),
            (0x80_a000, 0x3000, 1),
            (0x80_d000, 0x1000, 2),
            (0x80_e000, 0x1000, 3),
        ];
        let mut entries = vec![
            (SEV_ES_RESET_BLOCK_GUID, 0x80_b004u32.to_le_bytes().to_vec()),
            (OVMF_SEV_METADATA_GUID, META_FROM_END.to_le_bytes().to_vec()),
        ];
        if with_hashes {
            sections.push((0x80_f000, 0x1000, 0x10));
            let mut e = 0x80_fc00u32.to_le_bytes().to_vec();
            e.extend_from_slice(&0x400u32.to_le_bytes());
            entries.push((SEV_HASH_TABLE_RV_GUID, e));
        }
        sections.push((0x81_0000, 0x10000, 1));
        Synth {
            size: 0x20000,
            entries,
            sections,
        }
    }

    /// The image with only the footer table (for images too small to hold metadata).
    fn build_without_metadata(&self) -> Vec<u8> {
        let mut img: Vec<u8> = (0..self.size).map(|i| (i * 31 % 251) as u8).collect();
        self.put_table(&mut img);
        img
    }

    fn build(&self) -> Vec<u8> {
        let mut img: Vec<u8> = (0..self.size).map(|i| (i * 31 % 251) as u8).collect();
        let meta = self.size - META_FROM_END as usize;
        let msize = 16 + 12 * self.sections.len();
        img[meta..meta + 4].copy_from_slice(b"ASEV");
        img[meta + 4..meta + 8].copy_from_slice(&(msize as u32).to_le_bytes());
        img[meta + 8..meta + 12].copy_from_slice(&1u32.to_le_bytes());
        img[meta + 12..meta + 16].copy_from_slice(&(self.sections.len() as u32).to_le_bytes());
        for (i, (gpa, size, kind)) in self.sections.iter().enumerate() {
            let o = meta + 16 + 12 * i;
            img[o..o + 4].copy_from_slice(&gpa.to_le_bytes());
            img[o + 4..o + 8].copy_from_slice(&size.to_le_bytes());
            img[o + 8..o + 12].copy_from_slice(&kind.to_le_bytes());
        }
        self.put_table(&mut img);
        img
    }

    fn put_table(&self, img: &mut [u8]) {
        let mut table = Vec::new();
        for (guid, data) in &self.entries {
            table.extend_from_slice(data);
            table.extend_from_slice(&((data.len() + 18) as u16).to_le_bytes());
            table.extend_from_slice(&guid.0);
        }
        table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(&OVMF_TABLE_FOOTER_GUID.0);
        let end = self.size - 32;
        img[end - table.len()..end].copy_from_slice(&table);
    }
}

/// Writes the synthetic images to `$PODVISOR_SYNTH_OUT` so the pinned digests can be
/// regenerated with `sev-snp-measure`; does nothing otherwise.
#[test]
fn synth() {
    if let Ok(dir) = std::env::var("PODVISOR_SYNTH_OUT") {
        for (name, h) in [("plain.fd", false), ("hashes.fd", true)] {
            std::fs::write(format!("{dir}/{name}"), Synth::standard(h).build()).unwrap();
        }
    }
}

fn cfg(vcpus: u32, vmm: VmmType, cpu: &str) -> OvmfLaunchConfig {
    OvmfLaunchConfig {
        vcpus,
        vmm,
        vcpu_signature: vcpu_type_signature(cpu).unwrap(),
        guest_features: 1,
        kernel_hashes: None,
    }
}

#[test]
fn guid_text_and_bytes() {
    assert_eq!(
        OVMF_TABLE_FOOTER_GUID.to_string(),
        "96b582de-1fb2-45f7-baea-a366c55a082d"
    );
    assert_eq!(&OVMF_TABLE_FOOTER_GUID.0[..4], &[0xde, 0x82, 0xb5, 0x96]);
    assert_eq!(
        format!("{:?}", SEV_ES_RESET_BLOCK_GUID),
        "Guid(00f771de-1a7e-4fcb-890e-68c77e2fb44e)"
    );
}

#[test]
fn parses_standard_image() {
    let img = OvmfImage::parse(Synth::standard(true).build()).unwrap();
    assert_eq!(img.gpa(), FOUR_GIB - 0x20000);
    assert_eq!(img.ap_reset_eip(), 0x80_b004);
    assert_eq!(img.hashes_table_gpa(), Some(0x80_fc00));
    assert_eq!(img.sections().len(), 6);
    assert_eq!(img.sections()[2].kind, SectionKind::SnpSecrets);
    assert_eq!(img.sections()[5].pages(), 16);
    let plain = OvmfImage::parse(Synth::standard(false).build()).unwrap();
    assert_eq!(plain.hashes_table_gpa(), None);
    assert!(plain.section(SectionKind::SnpKernelHashes).is_none());
}

#[test]
fn kat_digests_match_sev_snp_measure() {
    let plain = OvmfImage::parse(Synth::standard(false).build()).unwrap();
    let hashes = OvmfImage::parse(Synth::standard(true).build()).unwrap();
    let cases: [(&OvmfImage, u32, VmmType, &str, &str); 4] = [
        (&plain, 1, VmmType::Qemu, "EPYC-v4", "cb767b88df984a8a3e6b45821b56b6533930b52b35b05e57e31e54544359a55d5e21bb9536821b4c3e7cb5d41f70ca46"),
        (&plain, 4, VmmType::Qemu, "EPYC-Milan", "ea575226e14e142883865fced253f18491465ffaa34c3843d2cb95d52239b6805c8ca6234050578cd93c5fbcfafb8f93"),
        (&hashes, 2, VmmType::Qemu, "EPYC-Genoa", "5b52e8dc1b141a8911a04b671b973258aa86154eaf0e2f98ce712f5a93cda27924dcd09b52a955583b4463490cf1ed2d"),
        (&hashes, 3, VmmType::Ec2, "EPYC-v4", "5078171fa54b638ee72a277d986e01dca9df2f03d2d9db81210502fcdc6a0f55c043176226b824628c52f6a85865e142"),
    ];
    for (img, vcpus, vmm, cpu, want) in cases {
        let got = measure(img, &cfg(vcpus, vmm, cpu)).unwrap();
        assert_eq!(got.to_hex(), want, "{vcpus} {vmm} {cpu}");
    }
}

#[test]
fn kat_kernel_hashes_digest() {
    let img = OvmfImage::parse(Synth::standard(true).build()).unwrap();
    let mut c = cfg(2, VmmType::Qemu, "EPYC-v4");
    c.kernel_hashes =
        Some(SevHashes::new(b"kernel", Some(b"initrd"), Some("console=ttyS0")).unwrap());
    assert_eq!(measure(&img, &c).unwrap().to_hex(), "12ab1ae906a15113d573d10c019b2adf2a0face20ff207544d1b1fe944b9524805a8db78012398170341fd1c6d8efe5f");
}

#[test]
fn launch_order_and_types() {
    let img = OvmfImage::parse(Synth::standard(true).build()).unwrap();
    let kinds = |vmm| {
        let l = OvmfLaunch::plan(&img, &cfg(2, vmm, "EPYC-v4")).unwrap();
        assert_eq!(l.vmsas.len(), 2);
        l.steps
            .iter()
            .map(|s| (s.source, s.page_type, s.pages))
            .collect::<Vec<_>>()
    };
    let sec = StepSource::Section;
    let q = kinds(VmmType::Qemu);
    assert_eq!(q[0], (StepSource::Firmware, PageType::Normal, 32));
    assert_eq!(q[1], (sec(SectionKind::SnpSecMemory), PageType::Zero, 9));
    assert_eq!(q[3], (sec(SectionKind::SnpSecrets), PageType::Secrets, 1));
    assert_eq!(q[4], (sec(SectionKind::Cpuid), PageType::Cpuid, 1));
    assert_eq!(q[5], (sec(SectionKind::SnpKernelHashes), PageType::Zero, 1));
    let e = kinds(VmmType::Ec2);
    assert_eq!(e.len(), q.len());
    assert_eq!(
        e.last(),
        Some(&(sec(SectionKind::Cpuid), PageType::Cpuid, 1))
    );
    let g = kinds(VmmType::Gce);
    assert_eq!(g[1].1, PageType::Unmeasured);
}

#[test]
fn launch_pages_measure_like_the_plan() {
    let img = OvmfImage::parse(Synth::standard(true).build()).unwrap();
    let mut c = cfg(3, VmmType::Qemu, "EPYC-Milan");
    c.kernel_hashes = Some(SevHashes::new(b"k", None, Some("x")).unwrap());
    let launch = OvmfLaunch::plan(&img, &c).unwrap();
    let pages = launch.launch_pages();
    assert_eq!(pages.len(), 32 + 9 + 3 + 1 + 1 + 1 + 16);
    assert_eq!(pages[0].gpa, img.gpa());
    assert_eq!(&pages[1].data[..], &img.data()[4096..8192]);
    let hashes_page = pages.iter().find(|p| p.gpa == 0x80_f000).unwrap();
    assert_eq!(hashes_page.page_type, PageType::Normal);
    assert_eq!(hashes_page.data.len(), 4096);
    let mut ld = crate::page_info::LaunchDigest::new();
    for p in &pages {
        ld.extend(p.gpa, p.page_type, &p.data).unwrap();
    }
    for v in &launch.vmsas {
        ld.extend(crate::page_info::VMSA_GPA, PageType::Vmsa, &v.to_bytes())
            .unwrap();
    }
    assert_eq!(ld, launch.measure().unwrap());
    assert_eq!(launch.vmsas[0].rip, 0xfff0);
    assert_eq!(launch.vmsas[1].rip, 0xb004);
    assert_eq!(launch.vmsas[2], launch.vmsas[1]);
}

#[test]
fn inputs_change_the_digest() {
    let img = OvmfImage::parse(Synth::standard(true).build()).unwrap();
    let base = measure(&img, &cfg(2, VmmType::Qemu, "EPYC-v4")).unwrap();
    let other_cpu = measure(&img, &cfg(2, VmmType::Qemu, "EPYC-Genoa")).unwrap();
    let more_vcpus = measure(&img, &cfg(3, VmmType::Qemu, "EPYC-v4")).unwrap();
    let mut feat = cfg(2, VmmType::Qemu, "EPYC-v4");
    feat.guest_features = 0x21;
    let features = measure(&img, &feat).unwrap();
    for other in [&other_cpu, &more_vcpus, &features] {
        assert_ne!(&base, other);
    }
    // ec2 ignores the CPU model.
    assert_eq!(
        measure(&img, &cfg(2, VmmType::Ec2, "EPYC-v4")).unwrap(),
        measure(&img, &cfg(2, VmmType::Ec2, "EPYC-Genoa")).unwrap()
    );
}

#[test]
fn launch_errors() {
    let plain = OvmfImage::parse(Synth::standard(false).build()).unwrap();
    let mut c = cfg(1, VmmType::Qemu, "EPYC-v4");
    c.kernel_hashes = Some(SevHashes::new(b"k", None, None).unwrap());
    assert!(matches!(
        measure(&plain, &c),
        Err(OvmfLaunchError::NoKernelHashesSection)
    ));
    for n in [0, MAX_VCPUS_PLUS_ONE] {
        assert!(matches!(
            measure(&plain, &cfg(n, VmmType::Qemu, "EPYC-v4")),
            Err(OvmfLaunchError::BadVcpuCount(_))
        ));
    }
    // Hashes section present but no table address in the footer.
    let mut s = Synth::standard(true);
    s.entries.retain(|e| e.0 != SEV_HASH_TABLE_RV_GUID);
    let img = OvmfImage::parse(s.build()).unwrap();
    assert!(matches!(
        measure(&img, &c),
        Err(OvmfLaunchError::NoHashesTable)
    ));
    // Table address outside the hashes page.
    let mut s = Synth::standard(true);
    for e in &mut s.entries {
        if e.0 == SEV_HASH_TABLE_RV_GUID {
            e.1[..4].copy_from_slice(&0x80_0000u32.to_le_bytes());
        }
    }
    let img = OvmfImage::parse(s.build()).unwrap();
    assert!(matches!(
        measure(&img, &c),
        Err(OvmfLaunchError::HashesTableOutsideSection { .. })
    ));
    // Table too close to the end of its page.
    let mut s = Synth::standard(true);
    for e in &mut s.entries {
        if e.0 == SEV_HASH_TABLE_RV_GUID {
            e.1[..4].copy_from_slice(&0x80_ff80u32.to_le_bytes());
        }
    }
    let img = OvmfImage::parse(s.build()).unwrap();
    assert!(matches!(measure(&img, &c), Err(OvmfLaunchError::Hashes(_))));
    // APs need a start address.
    let mut s = Synth::standard(false);
    s.entries[0].1 = vec![0; 4];
    let img = OvmfImage::parse(s.build()).unwrap();
    assert!(measure(&img, &cfg(1, VmmType::Qemu, "EPYC-v4")).is_ok());
    assert!(matches!(
        measure(&img, &cfg(2, VmmType::Qemu, "EPYC-v4")),
        Err(OvmfLaunchError::NoApResetAddress { vcpus: 2 })
    ));
}

const MAX_VCPUS_PLUS_ONE: u32 = super::launch::MAX_VCPUS + 1;

#[track_caller]
fn parse_err(img: Vec<u8>) -> OvmfError {
    match OvmfImage::parse(img) {
        Ok(_) => panic!("hostile image was accepted"),
        Err(e) => e,
    }
}

#[test]
fn rejects_bad_sizes() {
    assert_eq!(parse_err(vec![]), OvmfError::BadImageSize { size: 0 });
    assert_eq!(
        parse_err(vec![0; 4097]),
        OvmfError::BadImageSize { size: 4097 }
    );
    assert_eq!(parse_err(vec![0; 4096]), OvmfError::NoFooter);
    let big = vec![0u8; MAX_IMAGE_SIZE + 4096];
    assert!(matches!(parse_err(big), OvmfError::ImageTooLarge { .. }));
}

#[test]
fn rejects_bad_footer() {
    let img = Synth::standard(false).build();
    let footer = img.len() - 32 - 18;
    let mut bad = img.clone();
    bad[footer + 2] ^= 1;
    assert_eq!(parse_err(bad), OvmfError::NoFooter);
    for total in [0u16, 17] {
        let mut bad = img.clone();
        bad[footer..footer + 2].copy_from_slice(&total.to_le_bytes());
        assert!(
            matches!(parse_err(bad), OvmfError::BadFooterSize { .. }),
            "total {total}"
        );
    }
    // A table reaching far into the image walks into non-table bytes and must fail.
    let mut bad = img.clone();
    bad[footer..footer + 2].copy_from_slice(&0xffffu16.to_le_bytes());
    assert!(OvmfImage::parse(bad).is_err());
    // A table larger than the image in front of it.
    let small = Synth {
        size: 0x1000,
        entries: vec![],
        sections: vec![],
    };
    let mut bad = small.build_without_metadata();
    let f = 0x1000 - 32 - 18;
    bad[f..f + 2].copy_from_slice(&0xffffu16.to_le_bytes());
    assert!(matches!(parse_err(bad), OvmfError::BadFooterSize { .. }));
    // A table size that leaves a fragment shorter than an entry trailer.
    let mut bad = img.clone();
    let total = le16(&img, footer) + 3;
    bad[footer..footer + 2].copy_from_slice(&total.to_le_bytes());
    assert!(matches!(
        parse_err(bad),
        OvmfError::BadFooterSize { .. } | OvmfError::BadEntrySize { .. }
    ));
}

#[test]
fn rejects_bad_entries() {
    let img = Synth::standard(false).build();
    let footer = img.len() - 32 - 18;
    // The last entry (metadata) sits right below the footer; corrupt its size.
    for size in [0u16, 17, 0x4000] {
        let mut bad = img.clone();
        bad[footer - 18..footer - 16].copy_from_slice(&size.to_le_bytes());
        assert!(
            matches!(parse_err(bad), OvmfError::BadEntrySize { .. }),
            "size {size}"
        );
    }
    let mut s = Synth::standard(false);
    s.entries.push(s.entries[0].clone());
    assert!(matches!(
        parse_err(s.build()),
        OvmfError::DuplicateEntry { .. }
    ));
    let mut s = Synth::standard(false);
    s.entries[0].1 = vec![1, 2];
    assert!(matches!(
        parse_err(s.build()),
        OvmfError::ShortEntry { need: 4, .. }
    ));
    let mut s = Synth::standard(false);
    s.entries.remove(0);
    assert!(matches!(
        parse_err(s.build()),
        OvmfError::MissingEntry { guid, .. } if guid == SEV_ES_RESET_BLOCK_GUID
    ));
    let mut s = Synth::standard(false);
    s.entries.remove(1);
    assert!(matches!(
        parse_err(s.build()),
        OvmfError::MissingEntry { guid, .. } if guid == OVMF_SEV_METADATA_GUID
    ));
}

#[test]
fn rejects_bad_metadata() {
    let with_meta_offset = |off: u32| {
        let mut s = Synth::standard(false);
        s.entries[1].1 = off.to_le_bytes().to_vec();
        s.build()
    };
    for off in [0u32, 8, 0x20001, u32::MAX] {
        assert!(
            matches!(
                parse_err(with_meta_offset(off)),
                OvmfError::MetadataOutOfImage { .. } | OvmfError::BadMetadataSignature { .. }
            ),
            "offset {off:#x}"
        );
    }
    let img = Synth::standard(false).build();
    let meta = img.len() - META_FROM_END as usize;
    let patch = |at: usize, v: u32| {
        let mut b = img.clone();
        b[meta + at..meta + at + 4].copy_from_slice(&v.to_le_bytes());
        b
    };
    assert!(matches!(
        parse_err(patch(0, 0x5645_5342)),
        OvmfError::BadMetadataSignature { .. }
    ));
    assert_eq!(
        parse_err(patch(8, 2)),
        OvmfError::BadMetadataVersion { version: 2 }
    );
    assert!(matches!(
        parse_err(patch(4, 20)),
        OvmfError::BadMetadataSize { .. }
    ));
    assert!(matches!(
        parse_err(patch(4, 0x1000)),
        OvmfError::BadMetadataSize { .. }
    ));
    assert!(matches!(
        parse_err(patch(12, u32::MAX)),
        OvmfError::BadMetadataSize { .. }
    ));
    assert_eq!(
        parse_err(patch(16 + 8, 9)),
        OvmfError::UnknownSectionType { index: 0, kind: 9 }
    );
}

#[test]
fn rejects_bad_sections() {
    let with = |f: &dyn Fn(&mut Vec<SectionDesc>)| {
        let mut s = Synth::standard(false);
        f(&mut s.sections);
        parse_err(s.build())
    };
    assert!(matches!(
        with(&|v| v[0].0 = 0x80_0800),
        OvmfError::UnalignedSection { index: 0, .. }
    ));
    assert!(matches!(
        with(&|v| v[0].1 = 0),
        OvmfError::UnalignedSection { index: 0, .. }
    ));
    assert!(matches!(
        with(&|v| v[1].0 = 0x80_8000),
        OvmfError::OverlappingSection { index: 1, .. }
    ));
    // Over the flash window, and wrapping past 4 GiB.
    assert!(matches!(
        with(&|v| v[4].0 = 0xffff_0000),
        OvmfError::OverlappingSection { index: 4, .. }
    ));
    assert!(matches!(
        with(&|v| *v = vec![(0xffff_f000, 0x2000, 1)]),
        OvmfError::OverlappingSection { .. }
    ));
    assert!(matches!(
        with(&|v| v[2].1 = 0x2000),
        OvmfError::SinglePageSection { index: 2, .. }
    ));
    assert_eq!(
        with(&|v| v.retain(|s| s.2 != 2)),
        OvmfError::SectionCount {
            kind: SectionKind::SnpSecrets,
            count: 0
        }
    );
    assert_eq!(
        with(&|v| v.push((0x90_0000, 0x1000, 3))),
        OvmfError::SectionCount {
            kind: SectionKind::Cpuid,
            count: 2
        }
    );
    assert!(matches!(
        with(&|v| {
            v.push((0x90_0000, 0x1000, 0x10));
            v.push((0x91_0000, 0x1000, 0x10));
        }),
        OvmfError::SectionCount {
            kind: SectionKind::SnpKernelHashes,
            count: 2
        }
    ));
}

/// Every single-byte corruption of the metadata and the footer table either parses or fails
/// cleanly.
#[test]
fn byte_flips_never_panic() {
    let img = Synth::standard(true).build();
    let meta = img.len() - META_FROM_END as usize;
    let table = img.len() - 32 - 18 - 3 * 18 - 16;
    for i in (meta..meta + 16 + 12 * 6).chain(table..img.len() - 32) {
        for v in [0x00, 0xff, 0x7f] {
            let mut b = img.clone();
            b[i] = v;
            let _ = OvmfImage::parse(b);
        }
    }
}
