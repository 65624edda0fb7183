//! Arbitrary bytes as the fields of SNP run-time KVM exits → the pure decoders. Every accepted
//! conversion must be page aligned, non-empty and not wrap; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snp::exits::{
    answer_cert_request, decode_hypercall, decode_memory_fault, decode_system_event, CertAnswer,
    ImplicitConversion,
};

fn word(data: &[u8], i: usize) -> u64 {
    let mut q = [0u8; 8];
    for (j, b) in q.iter_mut().enumerate() {
        *b = data.get(i * 8 + j).copied().unwrap_or(0);
    }
    u64::from_le_bytes(q)
}

fuzz_target!(|data: &[u8]| {
    let w: Vec<u64> = (0..8).map(|i| word(data, i)).collect();
    let args = [w[1], w[2], w[3], w[4], w[5], w[6]];
    for c in [
        decode_hypercall(w[0] % 16, &args).ok(),
        decode_memory_fault(w[0], w[1], w[2], ImplicitConversion::Allow).ok(),
        decode_memory_fault(w[0], w[1], w[2], ImplicitConversion::PrivateOnly).ok(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(c.size > 0 && c.gpa % 4096 == 0 && c.size % 4096 == 0);
        assert!(c.gpa.checked_add(c.size).is_some());
    }
    let _ = decode_system_event(w[7] as u32, &w[..(data.len() % 3)]);
    let blob = data.get(64..).unwrap_or(&[]);
    if let Ok(a) = answer_cert_request(w[3], w[4] % 64, blob) {
        if let CertAnswer::Write { table, .. } = a {
            assert!(table.len() as u64 <= (w[4] % 64) * 4096);
        }
    }
});
