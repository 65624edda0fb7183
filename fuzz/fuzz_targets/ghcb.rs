//! Arbitrary bytes as a guest's GHCB page and GHCB MSR value → the host GHCB handler over the
//! model RAM. Whatever the guest writes, the handler must answer or terminate without a
//! panic, and the host must never read or change a private page it was not asked to convert.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snp::ghcb::{ApCreate, Env, GhcbHandler, GuestPlatform, IoBus, Outcome};
use snp::page_state::memory::ModelRam;
use snp::page_state::{PageSize, PageStates};
use snp::plan::RamRegion;

const GHCB: u64 = 0x10_000;
const SECRET: u64 = 0x20_000;

struct Bus;
impl IoBus for Bus {
    fn pio_read(&mut self, _: u16, d: &mut [u8]) {
        d.fill(0xFF);
    }
    fn pio_write(&mut self, _: u16, _: &[u8]) {}
    fn mmio_read(&mut self, _: u64, d: &mut [u8]) {
        d.fill(0xFF);
    }
    fn mmio_write(&mut self, _: u64, _: &[u8]) {}
}

struct Platform;
impl GuestPlatform for Platform {
    fn cpuid(&mut self, leaf: u32, sub: u32, _: u64, _: u64) -> [u32; 4] {
        [leaf, sub, 0, 0]
    }
    fn rdmsr(&mut self, i: u32) -> Option<u64> {
        (i < 0x100).then_some(u64::from(i))
    }
    fn wrmsr(&mut self, i: u32, _: u64) -> bool {
        i < 0x100
    }
    fn c_bit(&self) -> u8 {
        51
    }
    fn ap_create(&mut self, r: ApCreate) -> Result<(), &'static str> {
        if r.apic_id < 2 { Ok(()) } else { Err("no such AP") }
    }
    fn guest_request(&mut self, req: &[u8; 4096], rsp: &mut [u8; 4096]) -> u32 {
        rsp.copy_from_slice(req);
        0
    }
    fn certificates(&self) -> &[u8] {
        &[0x5A; 3000]
    }
}

fuzz_target!(|data: &[u8]| {
    let ram = [RamRegion { gpa: 0, size: 4 << 20 }];
    let mut mem = ModelRam::new(PageStates::new(&ram));
    // One validated private page holding a secret the host must never touch.
    if mem.convert(SECRET, PageSize::Size4K, true).is_err()
        || mem.states_mut().pvalidate(SECRET, PageSize::Size4K, true).is_err()
        || mem.guest_write(SECRET, &[0x42; 4096], true).is_err()
    {
        return;
    }
    let mut page = [0u8; 4096];
    let n = data.len().min(4096);
    page[..n].copy_from_slice(&data[..n]);
    if mem.host_write(GHCB, &page).is_err() {
        return;
    }
    let (mut bus, mut platform) = (Bus, Platform);
    let mut h = GhcbHandler::new();
    let mut env = Env { mem: &mut mem, bus: &mut bus, platform: &mut platform };
    let reg = h.vmgexit((GHCB & !0xFFF) | 0x012, &mut env);
    assert!(matches!(reg, Outcome::MsrResponse(_)));
    // The bytes after the page, if any, choose an MSR-protocol request instead.
    let out = match data.get(4096..4104) {
        Some(q) => {
            let mut v = [0u8; 8];
            v.copy_from_slice(q);
            h.vmgexit(u64::from_le_bytes(v), &mut env)
        }
        None => h.vmgexit(GHCB, &mut env),
    };
    let _ = out;
    // One exit is one event: a PSC may have shared the secret page (then the host sees only
    // the scrub pattern) or left it private; a private, valid page keeps the secret.
    let mut back = [0u8; 4096];
    if mem.guest_read(SECRET, &mut back, true).is_ok() {
        assert!(back.iter().all(|&b| b == 0x42), "private page changed");
    } else if mem.host_read(SECRET, &mut back).is_ok() {
        assert!(back.iter().all(|&b| b == 0xA5), "secret visible to the host");
    }
});
