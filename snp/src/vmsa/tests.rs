//! Layout and known-answer tests. The pinned page hash comes from PyPI `sev-snp-measure` 0.0.13
//! (`bytes(VMSA.build_save_area(0xfffffff0, 1, 0x800f12, QEMU))`), an independent model of the
//! same page.

use super::*;
use sha2::{Digest, Sha384};

#[test]
fn fields_are_ordered_disjoint_and_in_page() {
    let mut end = 0;
    for &(name, off, size) in VMSA_FIELDS {
        assert!(off >= end, "{name} at {off:#x} overlaps the previous field");
        end = off + size;
        assert!(end <= VMSA_SIZE, "{name} runs past the page");
    }
    // The x87/SSE/AVX block ends at 0x670; the rest of the page is reserved.
    assert_eq!(end, 0x670);
}

#[test]
fn offsets_match_table_b4_and_ghcb_save_area() {
    // Offsets shared with the GHCB save-area subset (GHCB spec v2, §2.3 table "GHCB layout").
    let want = [
        ("cpl", 0x0CB),
        ("xss", 0x140),
        ("dr7", 0x160),
        ("rax", 0x1F8),
        ("rcx", 0x308),
        ("rdx", 0x310),
        ("rbx", 0x318),
        ("xcr0", 0x3E8),
        ("efer", 0x0D0),
        ("rip", 0x178),
        ("rsp", 0x1D8),
        ("g_pat", 0x268),
        ("sev_features", 0x3B0),
        ("mxcsr", 0x408),
        ("x87_fcw", 0x410),
        ("tr", 0x090),
    ];
    for (name, off) in want {
        let found = VMSA_FIELDS.iter().find(|f| f.0 == name).map(|f| f.1);
        assert_eq!(found, Some(off), "{name}");
    }
}

fn qemu_bsp() -> Vmsa {
    let mut v = Vmsa::reset_state(0xffff_fff0, SEV_FEATURES_SNP_ACTIVE);
    v.rdx = 0x800f12;
    v.mxcsr = MXCSR_RESET;
    v.x87_fcw = FCW_RESET;
    v
}

#[test]
fn kat_reset_vmsa_matches_independent_model() {
    let page = qemu_bsp().to_bytes();
    assert_eq!(
        crate::hex::encode(&Sha384::digest(page)),
        "77920c4c629ff47e90c0e174fc1ad0eb6fa664f88cd4739488058a8c6cb1a77b\
         3856f55378e9518d0da99452d51c553a"
    );
}

#[test]
fn serialises_fields_at_offsets() {
    let v = qemu_bsp();
    let p = v.to_bytes();
    // CS: selector 0xf000, attrib 0x9b, limit 0xffff, base 0xffff0000.
    assert_eq!(
        &p[0x10..0x20],
        &[0x00, 0xf0, 0x9b, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
    );
    assert_eq!(&p[0x178..0x180], &0xfff0u64.to_le_bytes());
    assert_eq!(&p[0x3B0..0x3B8], &1u64.to_le_bytes());
    assert_eq!(&p[0x410..0x412], &0x37fu16.to_le_bytes());
    assert!(p[0x670..].iter().all(|&b| b == 0));
}

#[test]
fn round_trips_every_field() {
    let mut v = qemu_bsp();
    v.r15 = 0x1122_3344_5566_7788;
    v.fpreg_ymm[255] = 0xaa;
    v.fpreg_x87[0] = 0x55;
    v.vmpl = 2;
    v.pkru = 0xdead_beef;
    v.guest_exit_info_1 = 7;
    let page = v.to_bytes();
    let back = Vmsa::from_bytes(&page).unwrap();
    assert_eq!(back, v);
    assert_eq!(back.to_bytes(), page);
}

#[test]
fn from_bytes_rejects_wrong_size_and_reserved_bytes() {
    assert_eq!(
        Vmsa::from_bytes(&[0u8; 4095]),
        Err(VmsaError::WrongSize { len: 4095 })
    );
    assert_eq!(
        Vmsa::from_bytes(&[0u8; 4097]),
        Err(VmsaError::WrongSize { len: 4097 })
    );
    for offset in [
        0x0C8, 0x0CC, 0x0D8, 0x1C0, 0x248, 0x298, 0x2F0, 0x320, 0x380, 0x3F0, 0x670, 0xFFF,
    ] {
        let mut page = qemu_bsp().to_bytes();
        page[offset] = 1;
        assert_eq!(
            Vmsa::from_bytes(&page),
            Err(VmsaError::ReservedNonZero { offset }),
            "offset {offset:#x}"
        );
    }
}

#[test]
fn segment_attributes_pack_like_kvm() {
    // 64-bit code segment as Linux's boot GDT: type 0xb, S, P, L, G.
    let a = SegmentAttributes {
        type_: 0xb,
        s: true,
        dpl: 0,
        present: true,
        avl: false,
        l: true,
        db: false,
        g: true,
    };
    assert_eq!(Segment::pack_attrib(a), 0xa9b);
    assert_eq!(Segment::unpack_attrib(0xa9b), a);
    assert_eq!(Segment::pack_attrib(Segment::unpack_attrib(0xc93)), 0xc93);
    let ring3 = Segment::unpack_attrib(0x0f3);
    assert_eq!(ring3.dpl, 3);
    assert_eq!(ring3.type_, 3);
    // Over-wide inputs are masked to the field widths.
    let wide = SegmentAttributes {
        type_: 0xff,
        dpl: 0xff,
        ..SegmentAttributes::default()
    };
    assert_eq!(Segment::pack_attrib(wide), 0x6f);
}

#[test]
fn reset_state_splits_eip() {
    let v = Vmsa::reset_state(0x0080_b004, 0);
    assert_eq!(v.cs.base, 0x0080_0000);
    assert_eq!(v.rip, 0xb004);
    assert_eq!(v.cs.selector, 0xf000);
    assert_eq!(v.efer, 0x1000);
    assert_eq!(v.sev_features, 0);
}
