//! Writes the IGVM sample the benchmark suite launches (`scripts/bench/all --igvm FILE`): the
//! fixture image with every directive (`igvm_fixtures::every_directive`), its ID block carrying
//! the launch digest of a 1-vCPU guest with 512 MiB of RAM (`podvisor run`'s defaults), so the
//! launch's SNP_LAUNCH_FINISH accepts it.
//!
//! `cargo run -p snp --features test-utils --example igvm_sample -- OUT.igvm`

use snp::id_block::HostData;
use snp::igvm_fixtures::every_directive;
use snp::igvm_plan::plan_from_igvm;
use snp::plan::{EmptyPages, RamLayout, VmConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: igvm_sample OUT.igvm")?;
    let config = VmConfig {
        empty_pages: EmptyPages::default(),
        ram: RamLayout::pc(512 << 20)?,
        vcpus: 1,
        cmdline: None,
        host_data: HostData::default(),
    };
    let mut sample = every_directive();
    let digest = plan_from_igvm(&sample.bytes()?, &config)?.expected_digest()?;
    for d in &mut sample.directives {
        if let igvm::IgvmDirectiveHeader::SnpIdBlock { ld, .. } = d {
            ld.copy_from_slice(digest.as_bytes());
        }
    }
    std::fs::write(&out, sample.bytes()?)?;
    println!("{out}: expected launch digest {digest}");
    Ok(())
}
