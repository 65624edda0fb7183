//! Known-answer tests. Expected digests were computed independently from the PAGE_INFO table of
//! the Firmware ABI (§8.17) with Python's `hashlib` (struct `<48s48sHBB4sQ>`), not with this code.

use super::*;

fn pattern() -> Vec<u8> {
    (0..PAGE_SIZE).map(|i| ((i * 7 + 3) % 256) as u8).collect()
}

#[test]
fn starts_at_zero() {
    let ld = LaunchDigest::new();
    assert_eq!(ld.as_bytes(), &[0u8; 48]);
    assert_eq!(ld.pages_measured(), 0);
}

#[test]
fn page_info_layout() {
    let info = PageInfo {
        digest_cur: [0x11; 48],
        contents: [0x22; 48],
        page_type: PageType::Cpuid,
        imi_page: true,
        vmpl_perms: [1, 2, 3, 4],
        gpa: 0x1122_3344_5566_7000,
    };
    let b = info.to_bytes();
    assert_eq!(&b[..48], &[0x11; 48]);
    assert_eq!(&b[48..96], &[0x22; 48]);
    assert_eq!(&b[0x60..0x62], &[0x70, 0x00]);
    assert_eq!(b[0x62], 6);
    assert_eq!(b[0x63], 1);
    assert_eq!(&b[0x64..0x68], &[1, 2, 3, 4]);
    assert_eq!(
        &b[0x68..],
        &[0x00, 0x70, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
    );
}

#[test]
fn kat_single_zero_normal_page() {
    let mut ld = LaunchDigest::new();
    ld.extend(0, PageType::Normal, &[0u8; PAGE_SIZE]).unwrap();
    assert_eq!(
        ld.to_hex(),
        "9d13634b6014bb21cf059b2dc694e7bff01a8a7137041100cd2b695f3d10fb68\
         7267b97808b27f8f471d943bc6f53a20"
    );
    // An empty source is a zeroed page.
    let mut empty = LaunchDigest::new();
    empty.extend(0, PageType::Normal, &[]).unwrap();
    assert_eq!(empty, ld);
}

#[test]
fn kat_zero_page_differs_from_normal_zero_page() {
    let mut ld = LaunchDigest::new();
    ld.extend(0, PageType::Zero, &[0xffu8; 16]).unwrap();
    assert_eq!(
        ld.to_hex(),
        "70c0ecaab9608f14ebf8ac6f0f07bcd8728f4e2ab30382b539b4de4de904ca9f\
         8ebdf4b2cd3cd84dd996bd55dd794676"
    );
}

#[test]
fn kat_chain_of_every_type() {
    let pat = pattern();
    let rev: Vec<u8> = pat.iter().rev().copied().collect();
    let mut ld = LaunchDigest::new();
    let steps: [(u64, PageType, &[u8], &str); 6] = [
        (0xFFFF_F000, PageType::Normal, &pat, "94a6d098f96eda76eef04c4637200efe7ef4251a34eaa38b588869c6e3eab42c166602b35f1a0a7e54f9f0f2c3739949"),
        (0x80_0000, PageType::Zero, &pat, "7576c90dc258857e2a0bacfa7b65e89e33ecb3176dedb4b4e848af5bfc26da79a2403296df53a51c0b33ab3f03082d49"),
        (0x80_5000, PageType::Secrets, &[], "41e40beeb1bdb04f4ed13d0328da1bcaad0e80148d5a939c1f56af623e1afbd2370d740be144d98e5479492dda275418"),
        (0x80_6000, PageType::Cpuid, &pat, "5e71c4b69caed3856e7ea74a551300d6b1f3b12d92ddedff8858fe7fa46e998bac32a9c047a689d45497ad2c02f93a72"),
        (0x80_7000, PageType::Unmeasured, &pat, "3d2c37dee0eaedb114ae49d7cc5840549ce3dc05941073ca6c1e71cb44fa4dc3fdab5d4f2dba8e03e7b51c60c03858c9"),
        (VMSA_GPA, PageType::Vmsa, &rev, "1605d8d7f19b643aaaf17a0f300be1ae66b58d1d2d1f10d29dfff39708af46febff567650d49ec30d580ed8b734167b4"),
    ];
    for (gpa, ty, data, want) in steps {
        ld.extend(gpa, ty, data).unwrap();
        assert_eq!(ld.to_hex(), want, "after {ty:?} at {gpa:#x}");
    }
    assert_eq!(ld.pages_measured(), 6);
}

#[test]
fn kat_short_page_is_zero_padded() {
    let mut ld = LaunchDigest::new();
    ld.extend(0x1000, PageType::Normal, b"hello").unwrap();
    assert_eq!(
        ld.to_hex(),
        "a9b6a1f2816ca571d1146515d17489d7270491f4a19f5a54a8509480b7aede35\
         c1e90312089d67f8829af026ebeee33e"
    );
}

#[test]
fn kat_extend_pages_splits_and_pads() {
    let mut data = pattern();
    data.extend_from_slice(b"0123456789");
    let mut ld = LaunchDigest::new();
    ld.extend_pages(0x10000, PageType::Normal, &data).unwrap();
    assert_eq!(ld.pages_measured(), 2);
    assert_eq!(
        ld.to_hex(),
        "2537c8f8ce2d8839514928d4ac1a6608dcc527d196563857c27907dbd58493b7\
         91ba9771faa8cc00af148880cb17b54f"
    );
}

#[test]
fn extend_blank_matches_single_steps() {
    let mut a = LaunchDigest::new();
    a.extend_blank(0x80_0000, PageType::Zero, 3).unwrap();
    let mut b = LaunchDigest::new();
    for i in 0..3u64 {
        b.extend(0x80_0000 + i * 0x1000, PageType::Zero, &[])
            .unwrap();
    }
    assert_eq!(a, b);
    assert_eq!(a.pages_measured(), 3);
}

#[test]
fn seeded_chain_continues() {
    let mut full = LaunchDigest::new();
    full.extend(0, PageType::Normal, b"a").unwrap();
    full.extend(0x1000, PageType::Zero, &[]).unwrap();
    let mut first = LaunchDigest::new();
    first.extend(0, PageType::Normal, b"a").unwrap();
    let mut cont = LaunchDigest::from_seed(*first.as_bytes());
    cont.extend(0x1000, PageType::Zero, &[]).unwrap();
    assert_eq!(cont.as_bytes(), full.as_bytes());
}

#[test]
fn order_matters() {
    let mut a = LaunchDigest::new();
    a.extend(0, PageType::Zero, &[]).unwrap();
    a.extend(0x1000, PageType::Zero, &[]).unwrap();
    let mut b = LaunchDigest::new();
    b.extend(0x1000, PageType::Zero, &[]).unwrap();
    b.extend(0, PageType::Zero, &[]).unwrap();
    assert_ne!(a, b);
}

#[test]
fn rejects_bad_inputs_without_changing_digest() {
    let mut ld = LaunchDigest::new();
    assert_eq!(
        ld.extend(0x1001, PageType::Normal, &[]),
        Err(PageInfoError::UnalignedGpa { gpa: 0x1001 })
    );
    assert_eq!(
        ld.extend(1 << 52, PageType::Zero, &[]),
        Err(PageInfoError::GpaTooLarge { gpa: 1 << 52 })
    );
    assert_eq!(
        ld.extend(0, PageType::Normal, &[0u8; PAGE_SIZE + 1]),
        Err(PageInfoError::ContentsTooLarge {
            gpa: 0,
            len: PAGE_SIZE + 1
        })
    );
    assert!(matches!(
        ld.extend_blank(0xF_FFFF_FFFF_F000, PageType::Zero, 2),
        Err(PageInfoError::RangeOverflow { .. })
    ));
    assert!(matches!(
        ld.extend_blank(0x1000, PageType::Zero, u64::MAX),
        Err(PageInfoError::RangeOverflow { .. })
    ));
    assert!(matches!(
        ld.extend_pages(0xF_FFFF_FFFF_F000, PageType::Normal, &[0u8; 8193]),
        Err(PageInfoError::RangeOverflow { .. })
    ));
    assert_eq!(ld, LaunchDigest::new());
    assert!(page_hash(&[0u8; PAGE_SIZE + 1]).is_err());
}

#[test]
fn page_type_encoding() {
    for v in 1..=6u8 {
        assert_eq!(PageType::try_from(v).unwrap().as_u8(), v);
    }
    assert_eq!(
        PageType::try_from(0),
        Err(PageInfoError::UnknownPageType(0))
    );
    assert_eq!(
        PageType::try_from(7),
        Err(PageInfoError::UnknownPageType(7))
    );
    assert!(PageType::Normal.measures_contents());
    assert!(PageType::Vmsa.measures_contents());
    for t in [
        PageType::Zero,
        PageType::Unmeasured,
        PageType::Secrets,
        PageType::Cpuid,
    ] {
        assert!(!t.measures_contents());
    }
}
