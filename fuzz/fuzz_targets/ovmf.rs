//! Arbitrary bytes as the end of an OVMF image → footer table and SEV metadata → planned launch
//! → digest. The parser must return an error or an image for any input, never panic, and every
//! launch it plans must measure the same whether computed from the plan or page by page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snp::ovmf::hashes::SevHashes;
use snp::ovmf::launch::{OvmfLaunch, OvmfLaunchConfig};
use snp::ovmf::vcpu::VmmType;
use snp::ovmf::OvmfImage;
use snp::page_info::{LaunchDigest, PageType, VMSA_GPA};

fuzz_target!(|data: &[u8]| {
    // The footer and metadata are found from the end of the image, so the fuzzer's bytes are
    // placed at the end of a zero-filled image rounded up to whole pages.
    let size = data.len().div_ceil(4096).max(1) * 4096;
    let mut image = vec![0u8; size - data.len()];
    image.extend_from_slice(data);
    let Ok(image) = OvmfImage::parse(image) else {
        return;
    };
    let with_kernel = data.first().is_some_and(|b| b & 1 == 1);
    let cfg = OvmfLaunchConfig {
        vcpus: 2,
        vmm: if data.last().is_some_and(|b| b & 1 == 1) {
            VmmType::Ec2
        } else {
            VmmType::Qemu
        },
        vcpu_signature: 0x00a0_0f11,
        guest_features: 1,
        kernel_hashes: with_kernel
            .then(|| SevHashes::new(b"kernel", None, None))
            .and_then(Result::ok),
    };
    let Ok(launch) = OvmfLaunch::plan(&image, &cfg) else {
        return;
    };
    let Ok(expected) = launch.measure() else {
        return;
    };
    let mut ld = LaunchDigest::new();
    for page in launch.launch_pages() {
        if ld.extend(page.gpa, page.page_type, &page.data).is_err() {
            panic!("plan measured as a whole but a page was refused");
        }
    }
    for vmsa in &launch.vmsas {
        if ld
            .extend(VMSA_GPA, PageType::Vmsa, &vmsa.to_bytes())
            .is_err()
        {
            panic!("VMSA refused");
        }
    }
    assert_eq!(ld, expected);
});
