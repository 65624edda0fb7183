//! Cost of GHCB exits handled by the software SNP platform: IOIO, MMIO, page state changes of
//! 1, 64 and 512 pages, and attestation reports, each driven by the model guest through the
//! real handler. Times include the guest side (writing and reading the GHCB page), which is
//! what one exit costs the process end to end. Prints a Markdown table.
//!
//! `cargo run -p snp --release --example ghcb_bench [ROUNDS]`

use snp::ghcb::guest::{ModelGuest, ModelServices};
use snp::ghcb::IoBus;
use snp::page_state::memory::ModelRam;
use snp::page_state::{PageSize, PageStates};
use snp::plan::RamRegion;
use snp::report::firmware::{LaunchFacts, ModelFirmware};
use std::time::{Duration, Instant};

struct NullBus;
impl IoBus for NullBus {
    fn pio_read(&mut self, _: u16, d: &mut [u8]) {
        d.fill(0x60);
    }
    fn pio_write(&mut self, _: u16, _: &[u8]) {}
    fn mmio_read(&mut self, _: u64, d: &mut [u8]) {
        d.fill(0);
    }
    fn mmio_write(&mut self, _: u64, _: &[u8]) {}
}

const GHCB: u64 = 0x10_000;
const SECRETS: u64 = 0x5000;

fn time(rounds: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..rounds {
        f();
    }
    start.elapsed() / rounds
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2000);
    let mut ram = ModelRam::new(PageStates::new(&[RamRegion {
        gpa: 0,
        size: 64 << 20,
    }]));
    for gpa in [GHCB, SECRETS] {
        ram.convert(gpa, PageSize::Size4K, true)?;
        ram.states_mut().pvalidate(gpa, PageSize::Size4K, true)?;
    }
    let fw = ModelFirmware::new(LaunchFacts::without_id_block([1; 48], [2; 32], 0x30000));
    fw.install_secrets(&mut ram, SECRETS)?;
    let mut services = ModelServices::new(fw, 2);
    let mut bus = NullBus;
    let mut g = ModelGuest::new(&mut ram, &mut bus, &mut services, GHCB);
    g.register_ghcb()?;
    let mut rows = Vec::new();
    let mut failed = None;
    let mut check = |r: Result<(), snp::ghcb::guest::GuestError>| {
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
    };
    rows.push((
        "IOIO (IN, 1 byte)",
        1,
        time(rounds, || check(g.inb(0x3FD).map(|_| ()))),
    ));
    rows.push((
        "IOIO (REP OUTSB, 64 bytes)",
        1,
        time(rounds, || check(g.print(0x3F8, &[b'x'; 64]))),
    ));
    rows.push((
        "MMIO read (4 bytes)",
        1,
        time(rounds, || check(g.mmio_read(0xC000_0000, 4).map(|_| ()))),
    ));
    rows.push((
        "MMIO write (4 bytes)",
        1,
        time(rounds, || check(g.mmio_write(0xC000_0000, &[1, 2, 3, 4]))),
    ));
    for pages in [1u64, 64, 512] {
        let exits = pages.div_ceil(253);
        let mut private = false;
        let per = time(rounds / 4 + 1, || {
            private = !private;
            check(g.psc(0x100_0000, pages, private));
        });
        rows.push((
            match pages {
                1 => "PSC, 1 page (4 KiB entries)",
                64 => "PSC, 64 pages (4 KiB entries)",
                _ => "PSC, 512 pages (4 KiB entries)",
            },
            exits,
            per,
        ));
    }
    let mut data = [0u8; 64];
    let per = time(rounds / 20 + 1, || {
        data[0] = data[0].wrapping_add(1);
        check(
            g.request_report(SECRETS, 0x200_000, 0x201_000, &data)
                .map(|_| ()),
        );
    });
    rows.push((
        "Attestation report (request, sign, encrypt, decrypt)",
        1,
        per,
    ));
    if let Some(e) = failed {
        return Err(e.into());
    }
    println!("| event | GHCB exits | time per operation |");
    println!("| --- | --- | --- |");
    for (name, exits, t) in rows {
        println!("| {name} | {exits} | {:.1} µs |", t.as_secs_f64() * 1e6);
    }
    println!("\n{} exits handled in total.", g.handler.exits);
    Ok(())
}
