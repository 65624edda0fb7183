use super::msr::{self, info};
use super::nae::code;
use super::page::{Field, GhcbPage, SHARED_BUFFER};
use super::psc::{self, PscDesc, PscEntry};
use super::*;
use crate::page_state::memory::ModelRam;
use crate::page_state::PageStates;
use crate::plan::RamRegion;

const MB: u64 = 1 << 20;
const GHCB: u64 = 0x10_000;

#[derive(Default)]
pub(crate) struct FakeBus {
    pub log: Vec<String>,
}

impl IoBus for FakeBus {
    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        self.log.push(format!("in {port:#x} {}", data.len()));
        for (i, b) in data.iter_mut().enumerate() {
            *b = 0x10 + i as u8;
        }
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) {
        self.log.push(format!("out {port:#x} {data:?}"));
    }
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) {
        self.log.push(format!("mmio-r {gpa:#x} {}", data.len()));
        data.fill(0xCD);
    }
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) {
        self.log.push(format!("mmio-w {gpa:#x} {data:?}"));
    }
}

#[derive(Default)]
pub(crate) struct FakePlatform {
    pub aps: Vec<ApCreate>,
    pub certs: Vec<u8>,
    pub requests: usize,
}

impl GuestPlatform for FakePlatform {
    fn cpuid(&mut self, leaf: u32, subleaf: u32, xcr0: u64, _xss: u64) -> [u32; 4] {
        [leaf, subleaf, xcr0 as u32, 0xED]
    }
    fn rdmsr(&mut self, index: u32) -> Option<u64> {
        (index == 0x10).then_some(0x1122_3344_5566_7788)
    }
    fn wrmsr(&mut self, index: u32, _value: u64) -> bool {
        index == 0x10
    }
    fn c_bit(&self) -> u8 {
        51
    }
    fn ap_create(&mut self, req: ApCreate) -> Result<(), &'static str> {
        if req.apic_id >= 4 {
            return Err("no such APIC ID");
        }
        self.aps.push(req);
        Ok(())
    }
    fn guest_request(&mut self, request: &[u8; PAGE_SIZE], response: &mut [u8; PAGE_SIZE]) -> u32 {
        self.requests += 1;
        response[..8].copy_from_slice(&request[..8]);
        0
    }
    fn certificates(&self) -> &[u8] {
        &self.certs
    }
}

pub(crate) struct Rig {
    pub mem: ModelRam,
    pub bus: FakeBus,
    pub platform: FakePlatform,
    pub h: GhcbHandler,
}

impl Rig {
    pub fn new() -> Self {
        let states = PageStates::new(&[RamRegion {
            gpa: 0,
            size: 16 * MB,
        }]);
        let mut rig = Self {
            mem: ModelRam::new(states),
            bus: FakeBus::default(),
            platform: FakePlatform::default(),
            h: GhcbHandler::new(),
        };
        let r = rig.msr(msr::with_data(info::REGISTER_GHCB_REQ, GHCB >> 12));
        assert_eq!(
            r,
            Outcome::MsrResponse(msr::with_data(info::REGISTER_GHCB_RESP, GHCB >> 12))
        );
        rig
    }

    pub fn msr(&mut self, value: u64) -> Outcome {
        let mut env = Env {
            mem: &mut self.mem,
            bus: &mut self.bus,
            platform: &mut self.platform,
        };
        self.h.vmgexit(value, &mut env)
    }

    /// A page with version 2 and the exit fields set.
    pub fn page(exit: u64, info1: u64, info2: u64) -> GhcbPage {
        let mut p = GhcbPage::default();
        p.set_version(2);
        p.set(Field::ExitCode, exit);
        p.set(Field::ExitInfo1, info1);
        p.set(Field::ExitInfo2, info2);
        p
    }

    /// Write `p` at the GHCB, exit, and return the outcome and the page the guest sees.
    pub fn exit(&mut self, p: &GhcbPage) -> (Outcome, GhcbPage) {
        self.mem.host_write(GHCB, p.bytes()).unwrap();
        let out = self.msr(GHCB);
        let mut back = [0u8; PAGE_SIZE];
        self.mem.host_read(GHCB, &mut back).unwrap();
        (out, GhcbPage::from_bytes(&back))
    }

    /// Exit and return (EXITINFO1, EXITINFO2, page).
    pub fn nae(&mut self, p: &GhcbPage) -> (u64, u64, GhcbPage) {
        let (out, back) = self.exit(p);
        assert_eq!(out, Outcome::Resume);
        (
            back.get(Field::ExitInfo1).unwrap(),
            back.get(Field::ExitInfo2).unwrap(),
            back,
        )
    }
}

fn make_private(rig: &mut Rig, gpa: u64) {
    rig.mem.convert(gpa, PageSize::Size4K, true).unwrap();
    rig.mem
        .states_mut()
        .pvalidate(gpa, PageSize::Size4K, true)
        .unwrap();
}

#[test]
fn msr_sev_info_cpuid_preferred_features() {
    let mut rig = Rig::new();
    assert_eq!(
        rig.msr(info::SEV_INFO_REQ),
        Outcome::MsrResponse((2 << 48) | (2 << 32) | (51 << 24) | info::SEV_INFO_RESP)
    );
    let req = info::CPUID_REQ | (3 << 30) | (0x8000_001F << 32);
    assert_eq!(
        rig.msr(req),
        Outcome::MsrResponse((0xED << 32) | (3 << 30) | info::CPUID_RESP)
    );
    let req = info::CPUID_REQ | (0x7 << 32);
    assert_eq!(
        rig.msr(req),
        Outcome::MsrResponse((7 << 32) | info::CPUID_RESP)
    );
    assert_eq!(
        rig.msr(info::PREFERRED_GHCB_REQ),
        Outcome::MsrResponse(((1u64 << 52) - 1) << 12 | info::PREFERRED_GHCB_RESP)
    );
    assert_eq!(
        rig.msr(info::HV_FEATURES_REQ),
        Outcome::MsrResponse((0b11 << 12) | info::HV_FEATURES_RESP)
    );
    assert!(matches!(
        rig.msr(info::AP_RESET_HOLD_REQ),
        Outcome::ApHold { msr } if msr & 0xFFF == info::AP_RESET_HOLD_RESP && msr >> 12 != 0
    ));
}

#[test]
fn msr_registration_outside_ram_fails_and_keeps_old() {
    let mut rig = Rig::new();
    let fail = msr::with_data(info::REGISTER_GHCB_RESP, (1 << 52) - 1);
    for gfn in [(16 * MB) >> 12, (1 << 52) - 1] {
        assert_eq!(
            rig.msr(msr::with_data(info::REGISTER_GHCB_REQ, gfn)),
            Outcome::MsrResponse(fail)
        );
    }
    assert_eq!(rig.h.registered(), Some(GHCB));
}

#[test]
fn msr_page_state_change_converts_and_refuses_bad_requests() {
    let mut rig = Rig::new();
    let psc = |gfn: u64, op: u64| info::PSC_REQ | (gfn << 12) | (op << 52);
    assert_eq!(rig.msr(psc(0x20, 1)), Outcome::MsrResponse(msr::psc(0)));
    assert_eq!(
        rig.mem.states().state(0x20_000),
        Some(RmpState::PrivateInvalid)
    );
    assert_eq!(rig.msr(psc(0x20, 2)), Outcome::MsrResponse(msr::psc(0)));
    assert_eq!(rig.mem.states().state(0x20_000), Some(RmpState::Shared));
    assert_eq!(
        rig.msr(psc((16 * MB) >> 12, 1)),
        Outcome::MsrResponse(msr::psc(1))
    );
    // PSMASH is not an MSR-protocol operation; reserved bits set.
    for bad in [psc(0x20, 3), psc(0x20, 0), psc(0x20, 1) | (1 << 60)] {
        assert!(matches!(
            rig.msr(bad),
            Outcome::Terminate {
                by_guest: false,
                ..
            }
        ));
    }
}

#[test]
fn msr_termination_and_unknown_requests() {
    let mut rig = Rig::new();
    assert_eq!(
        rig.msr(msr::terminate(1, 0x33)),
        Outcome::Terminate {
            set: 1,
            code: 0x33,
            by_guest: true
        }
    );
    for v in [0x003, 0xFFF, 0x101, 0x016] {
        assert!(
            matches!(
                rig.msr(v),
                Outcome::Terminate {
                    by_guest: false,
                    ..
                }
            ),
            "{v:#x}"
        );
    }
}

#[test]
fn ghcb_must_be_registered_shared_and_well_formed() {
    let mut rig = Rig::new();
    // Another GPA than the registered one.
    assert!(matches!(
        rig.msr(GHCB + 0x1000),
        Outcome::Terminate {
            by_guest: false,
            ..
        }
    ));
    let mut unregistered = Rig::new();
    unregistered.h = GhcbHandler::new();
    assert!(matches!(
        unregistered.msr(GHCB),
        Outcome::Terminate {
            by_guest: false,
            ..
        }
    ));
    // Bad usage and version.
    let mut p = Rig::page(code::HV_FEATURES, 0, 0);
    p.set_version(1);
    let (i1, i2, _) = rig.nae(&p);
    assert_eq!((i1, i2), (2, reason::INVALID_USAGE));
    // Missing EXITINFO2.
    let mut p = GhcbPage::default();
    p.set_version(2);
    p.set(Field::ExitCode, code::HV_FEATURES);
    p.set(Field::ExitInfo1, 0);
    let (i1, i2, _) = rig.nae(&p);
    assert_eq!((i1, i2), (2, reason::MISSING_INPUT));
    // Unknown event.
    let (i1, i2, _) = rig.nae(&Rig::page(0x1234_5678, 0, 0));
    assert_eq!((i1, i2), (2, reason::INVALID_EVENT));
    // A private GHCB page is never read by the host.
    make_private(&mut rig, GHCB);
    assert!(matches!(
        rig.msr(GHCB),
        Outcome::Terminate {
            by_guest: false,
            ..
        }
    ));
}

#[test]
fn outputs_carry_only_host_valid_bits() {
    let mut rig = Rig::new();
    let mut p = Rig::page(code::HV_FEATURES, 0, 0);
    p.set(Field::Rbx, 99);
    let (i1, i2, back) = rig.nae(&p);
    assert_eq!((i1, i2), (0, 0b11));
    assert!(!back.is_valid(Field::Rbx));
    assert!(!back.is_valid(Field::ExitCode));
}

const IO_OUT8: u64 = 0x10 | (0x3F8 << 16);

#[test]
fn ioio_single_in_and_out() {
    let mut rig = Rig::new();
    let mut p = Rig::page(code::IOIO, IO_OUT8, 0);
    p.set(Field::Rax, 0x4241);
    assert_eq!(rig.nae(&p).0, 0);
    assert_eq!(rig.bus.log, ["out 0x3f8 [65]"]);
    let p = Rig::page(code::IOIO, 1 | 0x20 | (0x60 << 16), 0);
    let (i1, _, back) = rig.nae(&p);
    assert_eq!(i1, 0);
    assert_eq!(back.get(Field::Rax).unwrap(), 0x1110);
}

#[test]
fn ioio_hostile_inputs() {
    let mut rig = Rig::new();
    let p = Rig::page(code::IOIO, IO_OUT8, 0);
    assert_eq!(rig.nae(&p).1, reason::MISSING_INPUT, "OUT without RAX");
    for bad_size in [0u64, 0x30, 0x70, 0x40 | 0x10] {
        let mut p = Rig::page(code::IOIO, (0x3F8 << 16) | bad_size, 0);
        p.set(Field::Rax, 0);
        assert_eq!(rig.nae(&p).1, reason::INVALID_INPUT, "{bad_size:#x}");
    }
    assert!(rig.bus.log.is_empty());
}

#[test]
fn ioio_string_rep_through_shared_buffer_and_other_shared_memory() {
    let mut rig = Rig::new();
    let rep_out = IO_OUT8 | 0x4 | 0x8;
    let mut p = Rig::page(code::IOIO, rep_out, 3);
    p.set(Field::Scratch, GHCB + SHARED_BUFFER as u64);
    p.buffer_mut()[..3].copy_from_slice(b"abc");
    let (i1, i2, _) = rig.nae(&p);
    assert_eq!((i1, i2), (0, 3));
    assert_eq!(rig.bus.log.len(), 3);
    // IN string into another shared page.
    rig.bus.log.clear();
    let mut p = Rig::page(code::IOIO, 1 | 0x4 | 0x8 | 0x20 | (0x60 << 16), 2);
    p.set(Field::Scratch, 0x30_000);
    assert_eq!(rig.nae(&p).0, 0);
    let mut got = [0u8; 4];
    rig.mem.host_read(0x30_000, &mut got).unwrap();
    assert_eq!(got, [0x10, 0x11, 0x10, 0x11]);
}

#[test]
fn ioio_string_scratch_and_count_are_bounded() {
    let mut rig = Rig::new();
    let rep_out = IO_OUT8 | 0x4 | 0x8;
    make_private(&mut rig, 0x30_000);
    let cases: [(u64, u64, u64); 6] = [
        (0x30_000, 4, reason::INVALID_SCRATCH_AREA),
        (GHCB + 0xFF0 - 2, 4, reason::INVALID_SCRATCH_AREA),
        (GHCB + 0x10, 4, reason::INVALID_SCRATCH_AREA),
        (16 * MB - 2, 4, reason::INVALID_SCRATCH_AREA),
        (GHCB + SHARED_BUFFER as u64, u64::MAX, reason::INVALID_INPUT),
        (GHCB + SHARED_BUFFER as u64, 0, reason::INVALID_INPUT),
    ];
    for (scratch, count, want) in cases {
        let mut p = Rig::page(code::IOIO, rep_out, count);
        p.set(Field::Scratch, scratch);
        let (i1, i2, _) = rig.nae(&p);
        assert_eq!((i1, i2), (2, want), "{scratch:#x}");
    }
    let mut p = Rig::page(code::IOIO, IO_OUT8 | 0x4, 2);
    p.set(Field::Scratch, GHCB + SHARED_BUFFER as u64);
    assert_eq!(rig.nae(&p).1, reason::INVALID_INPUT, "count 2 without REP");
    assert!(rig.bus.log.is_empty());
}

#[test]
fn mmio_read_write_and_refusals() {
    let mut rig = Rig::new();
    let bar = 0xC000_0000;
    let buf = GHCB + SHARED_BUFFER as u64;
    let mut p = Rig::page(code::MMIO_WRITE, bar + 4, 4);
    p.set(Field::Scratch, buf);
    p.buffer_mut()[..4].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(rig.nae(&p).0, 0);
    let mut p = Rig::page(code::MMIO_READ, bar, 8);
    p.set(Field::Scratch, buf);
    let (i1, _, back) = rig.nae(&p);
    assert_eq!(i1, 0);
    assert_eq!(&back.buffer()[..8], &[0xCD; 8]);
    assert_eq!(
        rig.bus.log,
        ["mmio-w 0xc0000004 [1, 2, 3, 4]", "mmio-r 0xc0000000 8"]
    );
    for (gpa, len) in [(bar, 0), (bar, 9), (0x5000, 4), (u64::MAX - 2, 4)] {
        let mut p = Rig::page(code::MMIO_READ, gpa, len);
        p.set(Field::Scratch, buf);
        assert_eq!(rig.nae(&p).1, reason::INVALID_INPUT, "{gpa:#x}+{len}");
    }
    let p = Rig::page(code::MMIO_READ, bar, 4);
    assert_eq!(rig.nae(&p).1, reason::MISSING_INPUT, "no scratch");
    assert_eq!(rig.bus.log.len(), 2);
}

#[test]
fn msr_event_read_write_and_gp() {
    let mut rig = Rig::new();
    let mut p = Rig::page(code::MSR, 0, 0);
    p.set(Field::Rcx, 0x10);
    let (i1, _, back) = rig.nae(&p);
    assert_eq!(i1, 0);
    assert_eq!(back.get(Field::Rax).unwrap(), 0x5566_7788);
    assert_eq!(back.get(Field::Rdx).unwrap(), 0x1122_3344);
    p.set(Field::Rcx, 0x11);
    let (i1, i2, _) = rig.nae(&p);
    assert_eq!((i1, i2 & 0xFF, i2 >> 31), (1, 13, 1));
    let mut w = Rig::page(code::MSR, 1, 0);
    w.set(Field::Rcx, 0x10);
    w.set(Field::Rax, 1);
    assert_eq!(rig.nae(&w).1, reason::MISSING_INPUT, "no RDX");
    w.set(Field::Rdx, 2);
    assert_eq!(rig.nae(&w).0, 0);
    let mut bad = Rig::page(code::MSR, 2, 0);
    bad.set(Field::Rcx, 0x10);
    assert_eq!(rig.nae(&bad).1, reason::INVALID_INPUT);
    bad.set(Field::Rcx, 1 << 32);
    assert_eq!(rig.nae(&bad).1, reason::INVALID_INPUT);
}

#[test]
fn cpuid_event_and_xcr0_requirement() {
    let mut rig = Rig::new();
    let mut p = Rig::page(code::CPUID, 0, 0);
    p.set(Field::Rax, 0x8000_001F);
    p.set(Field::Rcx, 0);
    let (_, _, back) = rig.nae(&p);
    assert_eq!(back.get(Field::Rax).unwrap(), 0x8000_001F);
    assert_eq!(back.get(Field::Rdx).unwrap(), 0xED);
    p.set(Field::Rax, 0xD);
    p.set(Field::Rcx, 1);
    assert_eq!(rig.nae(&p).1, reason::MISSING_INPUT);
    p.set(Field::Xcr0, 7);
    let (_, _, back) = rig.nae(&p);
    assert_eq!(back.get(Field::Rcx).unwrap(), 7);
    let p = Rig::page(code::CPUID, 0, 0);
    assert_eq!(rig.nae(&p).1, reason::MISSING_INPUT);
}

#[test]
fn termination_and_features_events() {
    let mut rig = Rig::new();
    let (out, _) = rig.exit(&Rig::page(code::TERMINATE, 1 | (0x42 << 4), 0));
    assert_eq!(
        out,
        Outcome::Terminate {
            set: 1,
            code: 0x42,
            by_guest: true
        }
    );
}

#[test]
fn ap_creation_needs_a_vmsa_page_and_a_known_apic() {
    let mut rig = Rig::new();
    let vmsa = 0x40_000;
    let mut p = Rig::page(code::AP_CREATION, 1 | (1 << 32), vmsa);
    p.set(Field::Rax, 1);
    assert_eq!(rig.nae(&p).1, reason::INVALID_INPUT, "shared page");
    make_private(&mut rig, vmsa);
    assert_eq!(rig.nae(&p).1, reason::INVALID_INPUT, "not marked VMSA");
    rig.mem.states_mut().set_vmsa(vmsa, true).unwrap();
    assert_eq!(rig.nae(&p).0, 0);
    assert_eq!(rig.platform.aps.len(), 1);
    assert_eq!(rig.platform.aps[0].apic_id, 1);
    let mut p9 = Rig::page(code::AP_CREATION, 1 | (9 << 32), vmsa);
    p9.set(Field::Rax, 1);
    assert_eq!(rig.nae(&p9).1, reason::INVALID_INPUT, "unknown APIC");
    let no_rax = Rig::page(code::AP_CREATION, 1 | (1 << 32), vmsa);
    assert_eq!(rig.nae(&no_rax).1, reason::MISSING_INPUT);
    let bad_op = Rig::page(code::AP_CREATION, 3, vmsa);
    assert_eq!(rig.nae(&bad_op).1, reason::INVALID_INPUT);
    let destroy = Rig::page(code::AP_CREATION, 2 | (1 << 32), 0);
    assert_eq!(rig.nae(&destroy).0, 0);
}

#[test]
fn guest_request_pages_must_be_distinct_shared_pages() {
    let mut rig = Rig::new();
    let (req, resp) = (0x50_000, 0x51_000);
    rig.mem.host_write(req, b"REQUEST!").unwrap();
    let (i1, i2, _) = rig.nae(&Rig::page(code::GUEST_REQUEST, req, resp));
    assert_eq!((i1, i2), (0, 0));
    let mut got = [0u8; 8];
    rig.mem.host_read(resp, &mut got).unwrap();
    assert_eq!(&got, b"REQUEST!");
    for (a, b) in [(req, req), (req + 8, resp), (req, 16 * MB)] {
        let (_, i2, _) = rig.nae(&Rig::page(code::GUEST_REQUEST, a, b));
        assert_eq!(i2, reason::INVALID_INPUT, "{a:#x} {b:#x}");
    }
    make_private(&mut rig, resp);
    let (_, i2, _) = rig.nae(&Rig::page(code::GUEST_REQUEST, req, resp));
    assert_eq!(i2, reason::INVALID_INPUT, "private response page");
    assert_eq!(rig.platform.requests, 1);
}

#[test]
fn extended_guest_request_reports_needed_pages_then_writes_certs() {
    let mut rig = Rig::new();
    rig.platform.certs = vec![0x77; 5000];
    let (req, resp, certs) = (0x50_000, 0x51_000, 0x60_000);
    let mut p = Rig::page(code::EXT_GUEST_REQUEST, req, resp);
    p.set(Field::Rax, certs);
    p.set(Field::Rbx, 1);
    let (i1, i2, back) = rig.nae(&p);
    assert_eq!((i1, i2), (0, 1 << 32));
    assert_eq!(back.get(Field::Rbx).unwrap(), 2);
    assert_eq!(rig.platform.requests, 0);
    p.set(Field::Rbx, 2);
    assert_eq!(rig.nae(&p).1, 0);
    let mut got = vec![0u8; 5000];
    rig.mem.host_read(certs, &mut got).unwrap();
    assert!(got.iter().all(|&b| b == 0x77));
    make_private(&mut rig, certs + 0x1000);
    assert_eq!(rig.nae(&p).1, reason::INVALID_INPUT);
}

fn entry(gfn: u64, op: u8, large: bool) -> u64 {
    PscEntry {
        cur_page: 0,
        gfn,
        op,
        large,
        reserved: 0,
    }
    .to_u64()
}

fn psc_page(entries: &[u64], cur: u16, end: u16) -> GhcbPage {
    let mut p = Rig::page(code::PSC, 0, 0);
    p.set(Field::Scratch, GHCB + SHARED_BUFFER as u64);
    let b = p.buffer_mut();
    b[0..2].copy_from_slice(&cur.to_le_bytes());
    b[2..4].copy_from_slice(&end.to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        b[8 + 8 * i..16 + 8 * i].copy_from_slice(&e.to_le_bytes());
    }
    p
}

#[test]
fn psc_event_converts_4k_and_2m_and_records_progress() {
    let mut rig = Rig::new();
    let p = psc_page(
        &[
            entry(0x100, 1, false),
            entry(0x200, 1, true),
            entry(0x100, 2, false),
        ],
        0,
        2,
    );
    let (i1, i2, back) = rig.nae(&p);
    assert_eq!((i1, i2), (0, 0));
    let s = rig.mem.states();
    assert_eq!(s.state(0x100_000), Some(RmpState::Shared));
    assert_eq!(s.state(0x3FF_000), Some(RmpState::PrivateInvalid));
    assert!(s.entry(0x200_000).unwrap().large);
    let desc = PscDesc::parse(back.buffer()).unwrap();
    assert_eq!(desc.cur_entry, 3);
    assert_eq!(desc.entries[1].cur_page, 512);
}

#[test]
fn psc_event_refuses_bad_headers_and_entries_at_the_failing_entry() {
    let mut rig = Rig::new();
    let (_, i2, _) = rig.nae(&psc_page(&[], 0, 253));
    assert_eq!(i2, psc::ERROR_INVALID_HDR);
    let bad = [
        entry(0x101, 1, true),              // misaligned 2 MiB
        entry(0x100, 5, false),             // unknown op
        entry(0x100, 1, false) | (1 << 60), // reserved bit
        entry((16 * MB) >> 12, 1, false),   // outside RAM
        entry(0x100, 3, false),             // PSMASH of a 4 KiB entry
    ];
    for e in bad {
        let (_, i2, back) = rig.nae(&psc_page(&[entry(0x120, 1, false), e], 0, 1));
        assert_eq!(i2, psc::ERROR_INVALID_ENTRY, "{e:#x}");
        assert_eq!(PscDesc::parse(back.buffer()).unwrap().cur_entry, 1);
    }
    let mut p = psc_page(&[entry(0x100, 1, false)], 0, 0);
    make_private(&mut rig, 0x70_000);
    p.set(Field::Scratch, 0x70_000);
    assert_eq!(rig.nae(&p).1, reason::INVALID_SCRATCH_AREA);
}

#[test]
fn psc_apply_stops_at_the_budget_and_resumes() {
    let mut rig = Rig::new();
    let mut desc = PscDesc {
        cur_entry: 0,
        end_entry: 1,
        entries: vec![
            PscEntry::from_u64(entry(0x200, 1, true)),
            PscEntry::from_u64(entry(0x50, 1, false)),
        ],
    };
    assert_eq!(psc::apply(&mut desc, &mut rig.mem, 100), 0);
    assert_eq!((desc.cur_entry, desc.entries[0].cur_page), (0, 100));
    assert_eq!(
        rig.mem.states().state(0x200_000 + 99 * 4096),
        Some(RmpState::PrivateInvalid)
    );
    assert_eq!(
        rig.mem.states().state(0x200_000 + 100 * 4096),
        Some(RmpState::Shared)
    );
    let mut rounds = 1;
    while desc.cur_entry <= desc.end_entry {
        assert_eq!(psc::apply(&mut desc, &mut rig.mem, 100), 0);
        rounds += 1;
        assert!(rounds < 10);
    }
    assert_eq!(rounds, 6, "513 pages at 100 per exit");
    assert_eq!(
        rig.mem.states().state(0x3FF_000),
        Some(RmpState::PrivateInvalid)
    );
    assert_eq!(
        rig.mem.states().state(0x50_000),
        Some(RmpState::PrivateInvalid)
    );
}

#[test]
fn psc_psmash_unsmash_and_vmsa_refusal() {
    let mut rig = Rig::new();
    let p = psc_page(&[entry(0x200, 1, true), entry(0x200, 3, true)], 0, 1);
    assert_eq!(rig.nae(&p).1, 0);
    assert!(!rig.mem.states().entry(0x200_000).unwrap().large);
    let p = psc_page(&[entry(0x200, 4, true)], 0, 0);
    assert_eq!(rig.nae(&p).1, 0);
    assert!(rig.mem.states().entry(0x200_000).unwrap().large);
    make_private(&mut rig, 0x80_000);
    rig.mem.states_mut().set_vmsa(0x80_000, true).unwrap();
    let p = psc_page(&[entry(0x80, 2, false)], 0, 0);
    assert_eq!(rig.nae(&p).1, psc::ERROR_INVALID_ENTRY);
}

#[test]
fn psc_descriptor_round_trips() {
    let desc = PscDesc {
        cur_entry: 1,
        end_entry: 1,
        entries: vec![
            PscEntry::from_u64(entry(0xABCDE, 2, true) | 7),
            PscEntry::from_u64(entry(1, 1, false)),
        ],
    };
    assert_eq!(PscDesc::parse(&desc.to_bytes()), Some(desc));
    assert_eq!(PscDesc::parse(&[0, 0, 1, 0, 0, 0, 0, 0, 1, 2]), None);
}

#[test]
fn extended_guest_request_without_certs_writes_an_empty_table() {
    let mut rig = Rig::new();
    let (req, resp, certs) = (0x50_000, 0x51_000, 0x60_000);
    rig.mem.host_write(certs, &[0xEE; 64]).unwrap();
    let mut p = Rig::page(code::EXT_GUEST_REQUEST, req, resp);
    p.set(Field::Rax, certs);
    p.set(Field::Rbx, 0);
    let (_, i2, back) = rig.nae(&p);
    assert_eq!(i2, 1 << 32, "even an empty table needs one page");
    assert_eq!(back.get(Field::Rbx).unwrap(), 1);
    p.set(Field::Rbx, 1);
    let (i1, i2, back) = rig.nae(&p);
    assert_eq!((i1, i2), (0, 0));
    assert_eq!(back.get(Field::Rbx).unwrap(), 1);
    let mut got = [0u8; 32];
    rig.mem.host_read(certs, &mut got).unwrap();
    assert_eq!(got[..24], [0; 24]);
    assert_eq!(got[24..], [0xEE; 8]);
    p.set(Field::Rax, certs + 1);
    assert_eq!(rig.nae(&p).1, reason::INVALID_INPUT);
}
