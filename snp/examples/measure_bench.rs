//! Cost of computing SEV-SNP launch measurements: (a) NORMAL pages hashed through the
//! PAGE_INFO chain (`LaunchDigest`) beside one raw SHA-384 pass over the same bytes, and (b)
//! planning and measuring one IGVM image (`plan_from_igvm` + `expected_digest`) for guests of
//! 512 MiB, 2 GiB and 8 GiB RAM. The cost follows the measured pages, not the RAM size, so
//! (b) should stay flat. Every figure is the median of RUNS runs with (min – max). Prints
//! Markdown tables.
//!
//! `cargo run -p snp --release --features test-utils --example measure_bench [RUNS] [MIB]`

use sha2::{Digest, Sha384};
use snp::id_block::HostData;
use snp::igvm_fixtures::{every_directive, normal};
use snp::igvm_plan::plan_from_igvm;
use snp::page_info::{LaunchDigest, PageType};
use snp::plan::{RamLayout, VmConfig};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Extra NORMAL pages added to the fixture image for (b): 4 MiB at 2 MiB.
const IMAGE_PAGES: u64 = 1024;
const IMAGE_GPA: u64 = 0x20_0000;

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(7);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    if runs == 0 || mib == 0 {
        return Err("RUNS and MIB must be positive".into());
    }

    // (a) throughput over `mib` MiB of pseudo-random page contents.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let buf: Vec<u8> = (0..mib << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut measured = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..runs {
        let (t, ld) = timed(|| {
            let mut ld = LaunchDigest::new();
            ld.extend_pages(0x10_0000, PageType::Normal, &buf)
                .map(|()| ld)
        });
        black_box(ld?);
        measured.push(mib as f64 / t.as_secs_f64());
        let (t, d) = timed(|| Sha384::digest(black_box(&buf)));
        black_box(d);
        raw.push(mib as f64 / t.as_secs_f64());
    }
    let (m, mlo, mhi) = stats(measured);
    let (r, rlo, rhi) = stats(raw);
    println!("| (a) {mib} MiB of 4 KiB pages, median of {runs} (min – max) | MiB/s |");
    println!("| --- | ---: |");
    println!("| launch digest, NORMAL pages (PAGE_INFO chain) | {m:.0} ({mlo:.0} – {mhi:.0}) |");
    println!("| raw SHA-384, one pass over the same bytes | {r:.0} ({rlo:.0} – {rhi:.0}) |");
    println!(
        "\nDigest / raw SHA-384: {:.0} % (each page costs its SHA-384 plus one over its 112-byte PAGE_INFO).",
        100.0 * m / r
    );

    // (b) plan + measure one image for three RAM sizes.
    let mut sample = every_directive();
    let vp = sample.directives.pop().ok_or("fixture has no directives")?;
    for i in 0..IMAGE_PAGES {
        let data = buf[(i as usize * 4096) % buf.len()..][..4096].to_vec();
        sample.directives.push(normal(IMAGE_GPA + i * 4096, data));
    }
    sample.directives.push(vp);
    let image = sample.bytes()?;
    println!(
        "\n| (b) IGVM image of {} KiB, {runs} runs | pages measured | plan + measure: median (min – max) |",
        image.len() / 1024
    );
    println!("| --- | ---: | ---: |");
    for ram_mib in [512u64, 2048, 8192] {
        let cfg = VmConfig {
            empty_pages: Default::default(),
            ram: RamLayout::pc(ram_mib << 20)?,
            vcpus: 1,
            cmdline: Some("console=ttyS0".into()),
            host_data: HostData([0; 32]),
        };
        let mut times = Vec::new();
        let mut pages = 0;
        for _ in 0..runs {
            let (t, ld) = timed(|| -> Result<LaunchDigest, Box<dyn std::error::Error>> {
                Ok(plan_from_igvm(&image, &cfg)?.expected_digest()?)
            });
            let ld = ld?;
            pages = ld.pages_measured();
            times.push(t.as_secs_f64() * 1e3);
        }
        let (med, lo, hi) = stats(times);
        let ram = if ram_mib >= 1024 {
            format!("{} GiB", ram_mib / 1024)
        } else {
            format!("{ram_mib} MiB")
        };
        println!("| guest RAM {ram} | {pages} | {med:.2} ms ({lo:.2} – {hi:.2} ms) |");
    }
    Ok(())
}
