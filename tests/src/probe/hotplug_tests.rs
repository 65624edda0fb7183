//! Host tests of the probe's hot-plug bookkeeping (`probe_parse::hotplug`).

use probe_parse::hotplug::{slots, Tracker, Work};

#[test]
fn slots_lists_set_bits_lowest_first() {
    assert_eq!(slots(0).collect::<Vec<_>>(), Vec::<u8>::new());
    assert_eq!(slots(0b1010_0110).collect::<Vec<_>>(), vec![1, 2, 5, 7]);
    assert_eq!(slots(0x8000_0001).collect::<Vec<_>>(), vec![0, 31]);
    assert_eq!(slots(u32::MAX).count(), 32);
}

#[test]
fn an_acknowledged_eject_is_not_repeated_while_down_stays_set() {
    let mut t = Tracker::new();
    assert_eq!(
        t.poll(0b100, 0),
        Work {
            add: 0b100,
            eject: 0
        }
    );
    assert_eq!(
        t.poll(0, 0b100),
        Work {
            add: 0,
            eject: 0b100
        }
    );
    t.acknowledged(2);
    // The host has not cleared DOWN yet: nothing to do again.
    assert_eq!(t.poll(0, 0b100), Work::default());
    // Another slot's request still comes through.
    assert_eq!(
        t.poll(0, 0b1100),
        Work {
            add: 0,
            eject: 0b1000
        }
    );
}

#[test]
fn a_slot_is_ejectable_again_after_the_host_cleared_down_or_re_added() {
    let mut t = Tracker::new();
    t.poll(0, 0b10);
    t.acknowledged(1);
    assert_eq!(t.poll(0, 0), Work::default());
    // Re-added and asked out again: a fresh eject.
    assert_eq!(
        t.poll(0b10, 0),
        Work {
            add: 0b10,
            eject: 0
        }
    );
    assert_eq!(
        t.poll(0, 0b10),
        Work {
            add: 0,
            eject: 0b10
        }
    );
    t.acknowledged(1);
    // A new device in the slot while the old DOWN bit lingers: both handled.
    assert_eq!(
        t.poll(0b10, 0b10),
        Work {
            add: 0b10,
            eject: 0b10
        }
    );
}

#[test]
fn acknowledging_an_impossible_slot_is_ignored() {
    let mut t = Tracker::new();
    t.acknowledged(200);
    assert_eq!(
        t.poll(0, 0xffff_fffe),
        Work {
            add: 0,
            eject: 0xffff_fffe
        }
    );
}

#[test]
fn undecoded_registers_and_the_host_bridge_give_no_work() {
    let mut t = Tracker::new();
    assert_eq!(t.poll(u32::MAX, u32::MAX), Work::default());
    assert_eq!(t.poll(1, 1), Work::default());
    assert_eq!(
        t.poll(0b11, 0b101),
        Work {
            add: 0b10,
            eject: 0b100
        }
    );
}
