use super::*;
use crate::plan::RamRegion;

fn args(gpa: u64, npages: u64, attrs: u64) -> [u64; 6] {
    [gpa, npages, attrs, 0, 0, 0]
}

#[test]
fn constants_match_kvm_bindings() {
    assert_eq!(
        u64::from(kvm_bindings::KVM_MEMORY_EXIT_FLAG_PRIVATE),
        MEMORY_EXIT_FLAG_PRIVATE
    );
    assert_eq!(
        kvm_bindings::KVM_SYSTEM_EVENT_SEV_TERM,
        SYSTEM_EVENT_SEV_TERM
    );
}

#[test]
fn map_gpa_range_private_and_shared() {
    let c = decode_hypercall(12, &args(0x20_0000, 3, 0x10)).unwrap();
    assert_eq!(
        c,
        MemoryConversion {
            gpa: 0x20_0000,
            size: 0x3000,
            private: true
        }
    );
    let c = decode_hypercall(12, &args(0x20_0000, 1024, 1)).unwrap();
    assert_eq!((c.size, c.private), (0x40_0000, false));
    let ram = RamLayout::new(vec![RamRegion {
        gpa: 0,
        size: 0x60_0000,
    }])
    .unwrap();
    assert!(c.check_ram(&ram).is_ok());
    let far = decode_hypercall(12, &args(0x60_0000, 1, 0)).unwrap();
    assert!(matches!(
        far.check_ram(&ram),
        Err(ExitError::OutsideRam { .. })
    ));
}

#[test]
fn map_gpa_range_hostile_arguments() {
    assert!(matches!(
        decode_hypercall(11, &args(0, 1, 0)),
        Err(ExitError::UnknownHypercall { nr: 11 })
    ));
    for (gpa, n, attrs) in [
        (0x1001, 1, 0),      // misaligned
        (0, 0, 0),           // empty
        (0x1000, 512, 1),    // 2M size, 4K-aligned start
        (0x20_0000, 511, 1), // 2M size, partial
        (0, 1, 3),           // unknown size
        (0, 1, 0x20),        // unknown attribute
        (!0xFFFu64, 2, 0),   // wraps
        (0, u64::MAX, 0x10), // size overflows
    ] {
        assert!(
            matches!(
                decode_hypercall(12, &args(gpa, n, attrs)),
                Err(ExitError::BadRange { .. })
            ),
            "{gpa:#x} {n} {attrs:#x}"
        );
    }
}

#[test]
fn memory_fault_follows_the_policy() {
    let private = MEMORY_EXIT_FLAG_PRIVATE;
    let c = decode_memory_fault(private, 0x5000, 0x1000, ImplicitConversion::Allow).unwrap();
    assert!(c.private);
    let c = decode_memory_fault(0, 0x5000, 0x1000, ImplicitConversion::Allow).unwrap();
    assert!(!c.private);
    assert!(decode_memory_fault(private, 0x5000, 0x1000, ImplicitConversion::PrivateOnly).is_ok());
    assert!(matches!(
        decode_memory_fault(0, 0x5000, 0x1000, ImplicitConversion::PrivateOnly),
        Err(ExitError::ImplicitRefused { private: false, .. })
    ));
    assert!(decode_memory_fault(private, 0x5000, 0x1000, ImplicitConversion::Deny).is_err());
    for (gpa, size) in [
        (0x5001, 0x1000),
        (0x5000, 0),
        (0x5000, 0x800),
        (!0xFFFu64, 0x2000),
    ] {
        assert!(matches!(
            decode_memory_fault(private, gpa, size, ImplicitConversion::Allow),
            Err(ExitError::BadRange { .. })
        ));
    }
}

#[test]
fn sev_termination_carries_the_reason() {
    let raw = 0x100 | (1 << 12) | (0x27 << 16);
    let t = decode_system_event(SYSTEM_EVENT_SEV_TERM, &[raw]).unwrap();
    assert_eq!((t.set, t.code, t.raw), (1, 0x27, raw));
    assert!(t.to_string().contains("0x27"));
    assert_eq!(decode_system_event(1, &[raw]), None);
    let empty = decode_system_event(SYSTEM_EVENT_SEV_TERM, &[]).unwrap();
    assert_eq!((empty.set, empty.code), (0, 0));
}

#[test]
fn certificate_requests() {
    let blob = vec![7u8; 5000];
    assert_eq!(
        answer_cert_request(0x10_000, 1, &blob),
        Ok(CertAnswer::TooSmall { needed: 2 })
    );
    let a = answer_cert_request(0x10_000, 2, &blob).unwrap();
    assert_eq!(a.ret(), 0);
    assert!(matches!(a, CertAnswer::Write { table, .. } if table == blob));
    let empty = answer_cert_request(0x10_000, 1, &[]).unwrap();
    assert!(matches!(empty, CertAnswer::Write { table, .. } if table == [0; 24]));
    assert_eq!(
        answer_cert_request(0x10_000, 0, &[]).unwrap().ret(),
        certs_ret::ENOSPC
    );
    assert!(answer_cert_request(0x10_001, 1, &[]).is_err());
    assert!(answer_cert_request(!0xFFFu64, 2, &[]).is_err());
}

#[test]
fn conversions_map_to_memory_attributes_and_punch_holes() {
    use crate::launch::RamSlot;
    let slots = [
        RamSlot {
            slot: 0,
            region: RamRegion {
                gpa: 0,
                size: 0x10_0000,
            },
        },
        RamSlot {
            slot: 1,
            region: RamRegion {
                gpa: 0x1_0000_0000,
                size: 0x10_0000,
            },
        },
    ];
    let shared = decode_hypercall(12, &args(0x1_0000_2000, 2, 0)).unwrap();
    let a = shared.kvm_attributes();
    assert_eq!(
        (a.address, a.size, a.attributes, a.flags),
        (0x1_0000_2000, 0x2000, 0, 0)
    );
    assert_eq!(
        shared.punch_hole(&slots),
        Some(PunchHole {
            slot: 1,
            offset: 0x2000,
            len: 0x2000
        })
    );
    let private = decode_hypercall(12, &args(0x3000, 1, 0x10)).unwrap();
    assert_eq!(private.kvm_attributes().attributes, 1 << 3);
    assert_eq!(
        private.punch_hole(&slots),
        None,
        "private conversions keep the backing"
    );
    let straddle = decode_hypercall(12, &args(0xF_F000, 2, 0)).unwrap();
    assert_eq!(straddle.punch_hole(&slots), None);
}
