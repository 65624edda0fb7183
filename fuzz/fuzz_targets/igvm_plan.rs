//! Arbitrary bytes as an IGVM image → launch plan → expected digest. The parser must return an
//! error or a plan for any input, never panic, and every plan it accepts must be measurable
//! and launchable on the software SNP platform with the same digest.
//!
//! Each input is tried as is and once more with its header checksum recomputed, so mutations
//! reach the header parsers instead of stopping at the CRC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snp::id_block::HostData;
use snp::igvm_plan::plan_from_igvm;
use snp::launch::model::{ModelConfig, ModelPlatform};
use snp::launch::{launch, LaunchError};
use snp::plan::{EmptyPages, RamLayout, VmConfig};

/// Recompute the CRC32 of a v1 fixed header (24 bytes) plus the variable headers.
fn resealed(data: &[u8]) -> Option<Vec<u8>> {
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?))
    };
    let off = u32_at(8)? as usize;
    let end = off.checked_add(u32_at(12)? as usize)?;
    if off < 24 || end > data.len() {
        return None;
    }
    let mut out = data.to_vec();
    out[20..24].fill(0);
    let mut h = crc32fast::Hasher::new();
    h.update(&out[..24]);
    h.update(&out[off..end]);
    let sum = h.finalize();
    out[20..24].copy_from_slice(&sum.to_le_bytes());
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(sealed) = resealed(data) {
        check(&sealed);
    }
});

fn check(data: &[u8]) {
    let Ok(ram) = RamLayout::pc(64 << 20) else {
        return;
    };
    // Both empty-page conventions get exercised, chosen by the input's length.
    let empty_pages = if data.len() % 2 == 0 {
        EmptyPages::Zero
    } else {
        EmptyPages::Normal
    };
    let cfg = VmConfig {
        empty_pages,
        ram,
        vcpus: 2,
        cmdline: Some("console=ttyS0".into()),
        host_data: HostData::default(),
    };
    let Ok(mut plan) = plan_from_igvm(data, &cfg) else {
        return;
    };
    let Ok(expected) = plan.expected_digest() else {
        return;
    };
    // The ID block of a fuzzed image is never signed for this digest; drop it so the model
    // runs to the end and the digests can be compared.
    plan.id = None;
    let mut model = ModelPlatform::new(ModelConfig::default());
    match launch(&plan, &mut model) {
        Ok(report) => assert_eq!(report.platform.as_ref(), Some(&expected)),
        // A fuzzed CPUID table may be rejected twice, or a policy refused by firmware.
        Err(LaunchError::Firmware { .. }) => {}
        Err(e) => panic!("plan accepted by the parser but refused by the model: {e}"),
    }
}
