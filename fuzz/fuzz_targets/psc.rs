//! Arbitrary bytes as a Page State Change descriptor → the host's PSC engine over the model
//! RMP. Parsing must refuse or accept without panic; applying must make progress, never move
//! backwards, stop at the first bad entry, and finish in a bounded number of re-issues.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snp::ghcb::psc::{apply, PscDesc, MAX_ENTRIES};
use snp::page_state::memory::ModelRam;
use snp::page_state::PageStates;
use snp::plan::RamRegion;

fuzz_target!(|data: &[u8]| {
    let Some((&budget, rest)) = data.split_first() else {
        return;
    };
    let Some(mut desc) = PscDesc::parse(rest) else {
        return;
    };
    assert!(usize::from(desc.end_entry) < MAX_ENTRIES);
    assert_eq!(PscDesc::parse(&desc.to_bytes()).as_ref(), Some(&desc));
    let ram = [RamRegion { gpa: 0, size: 8 << 20 }];
    let mut mem = ModelRam::new(PageStates::new(&ram));
    let budget = u64::from(budget) + 1;
    for _ in 0..(MAX_ENTRIES as u64 * 512 / budget + MAX_ENTRIES as u64 + 2) {
        if desc.cur_entry > desc.end_entry {
            return;
        }
        let before = desc.cur_entry;
        let status = apply(&mut desc, &mut mem, budget);
        assert!(desc.cur_entry >= before);
        if status != 0 {
            assert!(desc.cur_entry <= desc.end_entry, "an error names a pending entry");
            return;
        }
    }
    panic!("PSC made no progress");
});
