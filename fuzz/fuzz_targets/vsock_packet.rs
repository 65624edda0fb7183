//! The vsock packet parser and the muxer's handling of what it parses, over arbitrary guest
//! memory: the input is the guest's RAM (descriptor table, available ring, headers, payloads).
//! Every chain the tx queue yields is parsed and handed to a muxer with a real listening
//! socket, and every rx chain is filled from it. Nothing may panic, loop forever or read past
//! guest RAM; the muxer's queues stay bounded.
#![no_main]

use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicU64, Ordering};

use devices::virtio::vsock::muxer::Muxer;
use devices::virtio::vsock::packet::{parse_tx, Header, RxBuffer, HDR_LEN};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const RAM: usize = 64 * 1024;
const QUEUE_SIZE: u16 = 16;

fn queue(base: u64, mem: &GuestMemoryMmap<()>) -> Option<Queue> {
    let mut q = Queue::new(QUEUE_SIZE).ok()?;
    q.set_size(QUEUE_SIZE);
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some((base + 0x100) as u32), Some(0));
    q.set_used_ring_address(Some((base + 0x200) as u32), Some(0));
    q.set_ready(true);
    q.is_valid(mem).then_some(q)
}

fuzz_target!(|data: &[u8]| {
    static N: AtomicU64 = AtomicU64::new(0);
    // The header codec round-trips whatever 44 bytes it is given.
    if let Some(raw) = data.get(..HDR_LEN).and_then(|b| <[u8; HDR_LEN]>::try_from(b).ok()) {
        assert_eq!(Header::from_bytes(&raw).to_bytes(), raw);
    }
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]) else {
        return;
    };
    let n = data.len().min(RAM);
    if mem.write_slice(&data[..n], GuestAddress(0)).is_err() {
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "vsock-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("v.sock");
    let Ok(listener) = UnixListener::bind(&path) else {
        return;
    };
    let Ok(mut muxer) = Muxer::new(3, path.clone(), listener) else {
        return;
    };
    if let Some(mut tx) = queue(0, &mem) {
        for _ in 0..QUEUE_SIZE {
            let chain = match tx.iter(&mem) {
                Ok(mut it) => it.next(),
                Err(_) => None,
            };
            let Some(chain) = chain else { break };
            if let Ok(pkt) = parse_tx(&mem, chain) {
                assert!(pkt.payload.len() <= 64 * 1024);
                muxer.on_guest_packet(&pkt);
            }
        }
    }
    if let Some(mut rx) = queue(0x8000, &mem) {
        let mut payload = Vec::new();
        for _ in 0..QUEUE_SIZE {
            let chain = match rx.iter(&mem) {
                Ok(mut it) => it.next(),
                Err(_) => None,
            };
            let Some(chain) = chain else { break };
            let Ok(buf) = RxBuffer::new(chain) else { continue };
            let Some(hdr) = muxer.next_rx(buf.max_payload(), &mut payload) else {
                break;
            };
            let _ = buf.write(&mem, &hdr, &payload);
        }
    }
    drop(muxer);
    let _ = std::fs::remove_dir_all(&dir);
});
