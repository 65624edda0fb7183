use super::memory::{MemoryError, ModelRam, SCRUB_BYTE};
use super::*;

const MB: u64 = 1 << 20;

fn states() -> PageStates {
    PageStates::new(&[RamRegion {
        gpa: 0,
        size: 8 * MB,
    }])
}

#[test]
fn fresh_ram_is_shared_and_outside_is_none() {
    let s = states();
    assert_eq!(s.state(0x1000), Some(RmpState::Shared));
    assert_eq!(s.state(8 * MB), None);
    assert!(s.is_shared(0x1000, 0x2000));
    assert!(!s.is_shared(8 * MB - 0x1000, 0x2000));
    assert!(!s.is_shared(0x1000, 0));
    assert!(!s.is_shared(u64::MAX - 10, 20));
}

#[test]
fn private_conversion_then_pvalidate_then_double_validation_sets_cf() {
    let mut s = states();
    let c = s.convert(0x3000, PageSize::Size4K, true).unwrap();
    assert_eq!((c.changed, c.unchanged), (1, 0));
    assert_eq!(s.state(0x3000), Some(RmpState::PrivateInvalid));
    assert_eq!(s.access(0x3000, true), Access::NotValidated);
    assert_eq!(
        s.pvalidate(0x3000, PageSize::Size4K, true),
        Ok(Pvalidated::Changed)
    );
    assert_eq!(s.access(0x3000, true), Access::Allowed);
    assert_eq!(
        s.pvalidate(0x3000, PageSize::Size4K, true),
        Ok(Pvalidated::Unchanged)
    );
    assert_eq!(
        s.pvalidate(0x3000, PageSize::Size4K, false),
        Ok(Pvalidated::Changed)
    );
    assert_eq!(
        s.pvalidate(0x3000, PageSize::Size4K, false),
        Ok(Pvalidated::Unchanged)
    );
    assert!(!s.is_shared(0x3000, 1));
}

#[test]
fn pvalidate_of_shared_misaligned_or_outside_fails_input() {
    let mut s = states();
    for (gpa, size) in [
        (0x1000, PageSize::Size4K),
        (0x1001, PageSize::Size4K),
        (8 * MB, PageSize::Size4K),
        (0x1000, PageSize::Size2M),
    ] {
        match s.pvalidate(gpa, size, true) {
            Err(PageStateError::Pvalidate { code, .. }) => {
                assert_eq!(code, PVALIDATE_FAIL_INPUT, "{gpa:#x}")
            }
            other => panic!("{gpa:#x}: {other:?}"),
        }
    }
}

#[test]
fn size_mismatch_both_ways_and_psmash_unsmash() {
    let mut s = states();
    s.convert(2 * MB, PageSize::Size2M, true).unwrap();
    assert!(s.entry(2 * MB + 0x5000).unwrap().large);
    let code = |r: Result<Pvalidated, PageStateError>| match r {
        Err(PageStateError::Pvalidate { code, .. }) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(s.pvalidate(2 * MB + 0x1000, PageSize::Size4K, true)),
        PVALIDATE_FAIL_SIZEMISMATCH
    );
    assert_eq!(
        s.pvalidate(2 * MB, PageSize::Size2M, true),
        Ok(Pvalidated::Changed)
    );
    assert_eq!(s.access(3 * MB, true), Access::Allowed);
    s.psmash(2 * MB).unwrap();
    assert_eq!(s.state(3 * MB), Some(RmpState::PrivateValid));
    assert_eq!(
        code(s.pvalidate(2 * MB, PageSize::Size2M, false)),
        PVALIDATE_FAIL_SIZEMISMATCH
    );
    assert!(s.psmash(2 * MB).is_err(), "already 4K");
    s.pvalidate(2 * MB, PageSize::Size4K, false).unwrap();
    assert!(s.unsmash(2 * MB).is_err(), "mixed validation");
    s.pvalidate(2 * MB, PageSize::Size4K, true).unwrap();
    s.unsmash(2 * MB).unwrap();
    assert!(s.entry(2 * MB).unwrap().large);
    assert!(s.unsmash(4 * MB).is_err(), "shared pages cannot be joined");
}

#[test]
fn c_bit_mismatch_is_a_nested_fault() {
    let mut s = states();
    assert_eq!(s.access(0x1000, false), Access::Allowed);
    assert_eq!(
        s.access(0x1000, true),
        Access::NestedFault { private: true }
    );
    s.convert(0x1000, PageSize::Size4K, true).unwrap();
    assert_eq!(
        s.access(0x1000, false),
        Access::NestedFault { private: false }
    );
    assert_eq!(
        s.access(9 * MB, false),
        Access::NestedFault { private: false }
    );
}

#[test]
fn vmsa_marking_requires_valid_page_and_blocks_sharing() {
    let mut s = states();
    assert!(s.set_vmsa(0x7000, true).is_err(), "shared page");
    s.convert(0x7000, PageSize::Size4K, true).unwrap();
    assert!(s.set_vmsa(0x7000, true).is_err(), "not validated");
    s.pvalidate(0x7000, PageSize::Size4K, true).unwrap();
    s.set_vmsa(0x7000, true).unwrap();
    assert_eq!(s.state(0x7000), Some(RmpState::Vmsa));
    assert!(s.pvalidate(0x7000, PageSize::Size4K, false).is_err());
    assert!(matches!(
        s.convert(0x7000, PageSize::Size4K, false),
        Err(PageStateError::BadState { .. })
    ));
    s.set_vmsa(0x7000, false).unwrap();
    s.convert(0x7000, PageSize::Size4K, false).unwrap();
    assert_eq!(s.state(0x7000), Some(RmpState::Shared));
}

#[test]
fn conversion_is_idempotent_and_checks_range() {
    let mut s = states();
    s.convert(0x1000, PageSize::Size4K, true).unwrap();
    s.pvalidate(0x1000, PageSize::Size4K, true).unwrap();
    let c = s.convert(0x1000, PageSize::Size4K, true).unwrap();
    assert_eq!((c.changed, c.unchanged), (0, 1));
    assert_eq!(s.state(0x1000), Some(RmpState::PrivateValid));
    assert!(matches!(
        s.convert(0x1800, PageSize::Size4K, true),
        Err(PageStateError::Misaligned { .. })
    ));
    assert!(matches!(
        s.convert(8 * MB, PageSize::Size4K, true),
        Err(PageStateError::OutsideRam { .. })
    ));
    assert!(matches!(
        s.convert(7 * MB, PageSize::Size2M, true),
        Err(PageStateError::Misaligned { .. })
    ));
}

#[test]
fn launched_pages_are_valid_without_pvalidate() {
    let plan = crate::launch::recording::tests::sample_plan(1);
    let s = PageStates::after_launch(&plan).unwrap();
    let page = &plan.pages[0];
    let e = s.entry(page.gpa).unwrap();
    assert_eq!(e.state, RmpState::PrivateValid);
    assert!(e.launched);
    let mut s = s;
    assert_eq!(
        s.pvalidate(page.gpa, PageSize::Size4K, true),
        Ok(Pvalidated::Unchanged),
        "re-validating a launched page is a double validation"
    );
}

#[test]
fn memory_refuses_host_access_to_private_and_scrubs_on_conversion() {
    let mut m = ModelRam::new(states());
    m.host_write(0x2000, b"hello").unwrap();
    m.convert(0x2000, PageSize::Size4K, true).unwrap();
    let mut buf = [0u8; 5];
    assert!(matches!(
        m.host_read(0x2000, &mut buf),
        Err(MemoryError::NotShared { .. })
    ));
    assert!(
        m.host_write(0x1ffe, b"xyzw").is_err(),
        "straddles a private page"
    );
    assert!(matches!(
        m.guest_read(0x2000, &mut buf, true),
        Err(MemoryError::Guest {
            access: Access::NotValidated,
            ..
        })
    ));
    m.states_mut()
        .pvalidate(0x2000, PageSize::Size4K, true)
        .unwrap();
    m.guest_read(0x2000, &mut buf, true).unwrap();
    assert_eq!(buf, [SCRUB_BYTE; 5], "host bytes do not survive");
    m.guest_write(0x2000, b"secret", true).unwrap();
    m.states_mut()
        .pvalidate(0x2000, PageSize::Size4K, false)
        .unwrap();
    m.convert(0x2000, PageSize::Size4K, false).unwrap();
    let mut back = [0u8; 6];
    m.host_read(0x2000, &mut back).unwrap();
    assert_eq!(back, [SCRUB_BYTE; 6], "guest plaintext does not leak");
    assert!(m.host_read(8 * MB - 2, &mut [0u8; 4]).is_err());
    assert!(m.host_read(u64::MAX - 1, &mut [0u8; 4]).is_err());
}

#[test]
fn mapped_memory_is_shared_with_devices_and_conversions_are_observed() {
    use super::memory::ConversionObserver;
    use std::sync::{Arc, Mutex};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    #[derive(Default)]
    struct Seen(Mutex<Vec<(u64, u64, bool)>>);
    impl ConversionObserver for Seen {
        fn converted(&self, gpa: u64, len: u64, private: bool) {
            self.0.lock().unwrap().push((gpa, len, private));
        }
    }

    let small = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MB as usize)]).unwrap();
    assert!(ModelRam::with_memory(states(), small).is_err(), "too small");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 * MB as usize)]).unwrap();
    let mut m = ModelRam::with_memory(states(), mem.clone()).unwrap();
    m.convert(0x5000, PageSize::Size4K, true).unwrap();
    let seen = Arc::new(Seen::default());
    m.observe(seen.clone());
    assert_eq!(
        *seen.0.lock().unwrap(),
        [(0x5000, 0x1000, true)],
        "the observer learns the pages already private"
    );
    m.host_write(0x3000, b"ring").unwrap();
    let mut buf = [0u8; 4];
    mem.read_slice(&mut buf, GuestAddress(0x3000)).unwrap();
    assert_eq!(&buf, b"ring", "devices see the guest's shared bytes");
    m.convert(2 * MB, PageSize::Size2M, true).unwrap();
    m.convert(0x5000, PageSize::Size4K, false).unwrap();
    assert_eq!(
        seen.0.lock().unwrap()[1..],
        [(2 * MB, 2 * MB, true), (0x5000, 0x1000, false)]
    );
    mem.read_slice(&mut buf, GuestAddress(0x5000)).unwrap();
    assert_eq!(buf, [SCRUB_BYTE; 4], "the scrub reaches the mapping");
    assert!(m.convert(9 * MB, PageSize::Size4K, true).is_err());
    assert_eq!(
        seen.0.lock().unwrap().len(),
        3,
        "refused conversions are not reported"
    );
}
