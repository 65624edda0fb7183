//! Conversions through a recording fake of the host operations.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use snp::exits::{KVM_HC_MAP_GPA_RANGE, MAP_GPA_RANGE_ENCRYPTED, MEMORY_EXIT_FLAG_PRIVATE};
use snp::plan::RamRegion;

use super::*;

const MIB: u64 = 1 << 20;

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    fail_attributes: bool,
}

impl MemoryAttributes for Arc<Recorder> {
    fn set_attributes(&self, c: &MemoryConversion) -> Result<(), ConversionError> {
        self.calls.lock().unwrap().push(format!(
            "attrs {:#x}+{:#x} {}",
            c.gpa,
            c.size,
            if c.private { "private" } else { "shared" }
        ));
        if self.fail_attributes {
            return Err(ConversionError::NoGuestMemfd(99));
        }
        Ok(())
    }

    fn punch_hole(&self, h: &PunchHole) -> Result<(), ConversionError> {
        self.calls.lock().unwrap().push(format!(
            "punch slot {} {:#x}+{:#x}",
            h.slot, h.offset, h.len
        ));
        Ok(())
    }
}

/// 2 GiB of RAM in one slot... here two slots: [0, 1 MiB) and [1 MiB, 64 MiB).
fn conversions(policy: ImplicitConversion, fail: bool) -> (Conversions, Arc<Recorder>) {
    let regions = vec![
        RamRegion { gpa: 0, size: MIB },
        RamRegion {
            gpa: MIB,
            size: 63 * MIB,
        },
    ];
    let slots = regions
        .iter()
        .enumerate()
        .map(|(i, r)| RamSlot {
            slot: i as u32,
            region: *r,
        })
        .collect();
    let recorder = Arc::new(Recorder {
        fail_attributes: fail,
        ..Recorder::default()
    });
    let c = Conversions::new(
        RamLayout::new(regions).unwrap(),
        slots,
        policy,
        Box::new(recorder.clone()),
    );
    (c, recorder)
}

fn map(gpa: u64, npages: u64, attrs: u64) -> [u64; 6] {
    [gpa, npages, attrs, 0, 0, 0]
}

#[test]
fn a_shared_conversion_flips_the_attribute_and_frees_the_private_backing() {
    let (c, rec) = conversions(ImplicitConversion::Allow, false);
    assert_eq!(
        c.on_hypercall(KVM_HC_MAP_GPA_RANGE, &map(2 * MIB, 4, 0))
            .unwrap(),
        0
    );
    assert_eq!(
        c.on_hypercall(
            KVM_HC_MAP_GPA_RANGE,
            &map(2 * MIB, 4, MAP_GPA_RANGE_ENCRYPTED)
        )
        .unwrap(),
        0
    );
    assert_eq!(
        *rec.calls.lock().unwrap(),
        [
            "attrs 0x200000+0x4000 shared",
            "punch slot 1 0x100000+0x4000",
            "attrs 0x200000+0x4000 private",
        ]
    );
}

#[test]
fn bad_requests_get_einval_and_change_nothing() {
    let (c, rec) = conversions(ImplicitConversion::Allow, false);
    for (nr, args) in [
        (99, map(0, 1, 0)),                             // not MAP_GPA_RANGE
        (KVM_HC_MAP_GPA_RANGE, map(0x1234, 1, 0)),      // unaligned
        (KVM_HC_MAP_GPA_RANGE, map(0, 0, 0)),           // no pages
        (KVM_HC_MAP_GPA_RANGE, map(0, 1, 0x80)),        // unknown attribute bits
        (KVM_HC_MAP_GPA_RANGE, map(!0xfff, 4, 0)),      // wraps
        (KVM_HC_MAP_GPA_RANGE, map(63 * MIB, 1024, 0)), // past the end of RAM
        (KVM_HC_MAP_GPA_RANGE, map(MIB - 4096, 2, 0)),  // straddles two slots
    ] {
        assert_eq!(
            c.on_hypercall(nr, &args).unwrap(),
            KVM_EINVAL,
            "{nr} {args:x?}"
        );
    }
    assert!(rec.calls.lock().unwrap().is_empty());
}

#[test]
fn implicit_conversions_follow_the_policy_and_host_failures_end_the_vm() {
    let (c, rec) = conversions(ImplicitConversion::PrivateOnly, false);
    c.on_memory_fault(MEMORY_EXIT_FLAG_PRIVATE, 4 * MIB, 4096)
        .unwrap();
    assert!(matches!(
        c.on_memory_fault(0, 4 * MIB, 4096),
        Err(ConversionError::Guest(ExitError::ImplicitRefused { .. }))
    ));
    assert!(c
        .on_memory_fault(MEMORY_EXIT_FLAG_PRIVATE, 4 * MIB + 1, 4096)
        .is_err());
    assert_eq!(rec.calls.lock().unwrap().len(), 1);

    let (c, _) = conversions(ImplicitConversion::Allow, true);
    assert!(matches!(
        c.on_hypercall(KVM_HC_MAP_GPA_RANGE, &map(2 * MIB, 1, 0)),
        Err(ConversionError::NoGuestMemfd(99))
    ));
}

#[test]
fn devices_see_the_conversions_and_the_launched_pages_as_private() {
    let (c, _) = conversions(ImplicitConversion::Allow, false);
    let c = c.with_private(&[(2 * MIB, 8 * 4096)]);
    let guard = c.dma_guard();
    assert!(guard.is_restricted());
    assert!(!guard.allows(2 * MIB, 1), "launched pages start private");
    assert!(guard.allows(2 * MIB + 8 * 4096, 4096));
    c.on_hypercall(KVM_HC_MAP_GPA_RANGE, &map(2 * MIB, 2, 0))
        .unwrap();
    assert!(guard.allows(2 * MIB, 2 * 4096));
    assert!(!guard.allows(2 * MIB, 2 * 4096 + 1));
    c.on_hypercall(
        KVM_HC_MAP_GPA_RANGE,
        &map(2 * MIB, 1, MAP_GPA_RANGE_ENCRYPTED),
    )
    .unwrap();
    assert!(!guard.allows(2 * MIB, 1));
    assert!(guard.allows(2 * MIB + 4096, 4096));
    // An implicit conversion counts too; a refused request changes nothing.
    c.on_memory_fault(MEMORY_EXIT_FLAG_PRIVATE, 40 * MIB, 4096)
        .unwrap();
    assert!(!guard.allows(40 * MIB, 1));
    c.on_hypercall(KVM_HC_MAP_GPA_RANGE, &map(MIB - 4096, 2, 0))
        .unwrap();
    assert!(!guard.allows(2 * MIB, 1));
    assert!(
        guard.allows(MIB - 4096, 2 * 4096),
        "shared before, still shared"
    );
}
