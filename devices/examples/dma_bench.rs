//! Cost of the shared-pages check on the virtio-blk request path: parses one 3-descriptor
//! write request (header, 4 KiB of data, status) over fake guest memory with the guard an
//! ordinary VM's devices get (unrestricted) and with a confidential guest's (every page
//! looked up in the shared-pages bitmap). Prints ns per request for each.
//! Usage: cargo run -p devices --release --example dma_bench [ROUNDS]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use devices::dma::{DmaGuard, SharedPages};
use devices::virtio::block::request::{parse_guarded, Limits, Parsed, T_OUT};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    mem.write_obj(T_OUT, GuestAddress(0x8000)).unwrap();
    let chain = [
        Descriptor::new(0x8000, 16, 1, 1),
        Descriptor::new(0x10000, 4096, 1, 2),
        Descriptor::new(0x9000, 1, 2, 0),
    ];
    let limits = Limits {
        capacity: 1 << 20,
        max_descriptors: 16,
        max_range_segments: 1,
    };
    let pages = Arc::new(SharedPages::new(&[(0, 1 << 20)], true));
    for (name, guard) in [
        ("unrestricted (ordinary VM)", DmaGuard::unrestricted()),
        (
            "shared pages only (confidential VM)",
            DmaGuard::shared_only(pages),
        ),
    ] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..rounds {
                let parsed = parse_guarded(&mem, black_box(chain).into_iter(), &limits, &guard);
                assert!(matches!(parsed, Parsed::Ok(_)));
                black_box(parsed);
            }
            best = best.min(start.elapsed().as_nanos() as f64 / f64::from(rounds));
        }
        println!("| {name} | {best:.1} ns |");
    }
}
