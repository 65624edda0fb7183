use super::guest::{GuestError, ModelGuest, ModelServices};
use super::*;
use crate::page_state::memory::ModelRam;
use crate::page_state::PageStates;
use crate::plan::RamRegion;
use crate::report::firmware::{LaunchFacts, ModelFirmware};
use crate::report::{verify, Expected};

const GHCB: u64 = 0x10_000;
const SECRETS: u64 = 0x5000;
const BAR: u64 = 0xC000_0000;

#[derive(Default)]
struct Console {
    serial: Vec<u8>,
    mmio: Vec<(u64, Vec<u8>)>,
}

impl IoBus for Console {
    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        // Line status register: transmitter empty.
        data.fill(if port == 0x3FD { 0x60 } else { 0xFF });
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) {
        if port == 0x3F8 {
            self.serial.extend_from_slice(data);
        }
    }
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (gpa as u8).wrapping_add(i as u8);
        }
    }
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) {
        self.mmio.push((gpa, data.to_vec()));
    }
}

fn facts() -> LaunchFacts {
    LaunchFacts::without_id_block([0x5e; 48], [0xab; 32], 0x30000)
}

/// RAM as a launch leaves it: the GHCB-to-be and the secrets page private and validated.
fn launched() -> (ModelRam, ModelServices) {
    let mut ram = ModelRam::new(PageStates::new(&[RamRegion {
        gpa: 0,
        size: 16 << 20,
    }]));
    for gpa in [GHCB, SECRETS] {
        ram.convert(gpa, PageSize::Size4K, true).unwrap();
        ram.states_mut()
            .pvalidate(gpa, PageSize::Size4K, true)
            .unwrap();
    }
    let fw = ModelFirmware::new(facts());
    fw.install_secrets(&mut ram, SECRETS).unwrap();
    (ram, ModelServices::new(fw, 2))
}

#[test]
fn model_guest_end_to_end() {
    let (mut ram, mut services) = launched();
    let vcek = services.firmware.vcek();
    let mut bus = Console::default();
    let mut g = ModelGuest::new(&mut ram, &mut bus, &mut services, GHCB);
    g.register_ghcb().unwrap();
    // Virtio rings live in shared memory: accept them first (as private), then share them.
    g.accept(0x100_000, 4).unwrap();
    g.share(0x100_000, 4).unwrap();
    assert!(g.mem.states().is_shared(0x100_000, 4 * 4096));
    assert_eq!(g.inb(0x3FD).unwrap(), 0x60);
    g.print(0x3F8, b"hello from an SNP guest\n").unwrap();
    g.mmio_write(BAR + 0x14, &[0xF]).unwrap();
    assert_eq!(
        g.mmio_read(BAR + 0x10, 4).unwrap(),
        [0x10, 0x11, 0x12, 0x13]
    );
    g.start_ap(1, 0x200_000, 1).unwrap();
    let report = g
        .request_report(SECRETS, 0x300_000, 0x301_000, &[7; 64])
        .unwrap();
    let second = g
        .request_report(SECRETS, 0x300_000, 0x301_000, &[8; 64])
        .unwrap();
    // 2 (share + register the GHCB) + 2 PSC + IN + OUTS + 2 MMIO + 2 (PSC + AP) + 2 requests.
    assert_eq!(g.handler.exits, 12);
    assert_eq!(bus.serial, b"hello from an SNP guest\n");
    assert_eq!(bus.mmio, [(BAR + 0x14, vec![0xF])]);
    assert_eq!(services.aps.len(), 1);
    let expected = Expected {
        measurement: Some([0x5e; 48]),
        host_data: Some([0xab; 32]),
        report_data: Some([7; 64]),
        policy: Some(0x30000),
    };
    verify(&report, &vcek, &expected).unwrap();
    assert_eq!(
        verify(&second, &vcek, &Expected::default())
            .unwrap()
            .report_data,
        [8; 64]
    );
}

#[test]
fn model_guest_cannot_use_private_pages_as_shared() {
    let (mut ram, mut services) = launched();
    let mut bus = Console::default();
    let mut g = ModelGuest::new(&mut ram, &mut bus, &mut services, GHCB);
    // Writing the GHCB before sharing it faults (nested page fault: C-bit clear on a private
    // page), so nothing reaches the host.
    let err = g.print(0x3F8, b"x").unwrap_err();
    assert!(matches!(err, GuestError::Memory(_)), "{err}");
    g.register_ghcb().unwrap();
    // A report request whose response page is private is refused by the host.
    g.accept(0x301_000, 1).unwrap();
    let err = g
        .request_report(SECRETS, 0x300_000, 0x301_000, &[0; 64])
        .unwrap_err();
    assert!(matches!(err, GuestError::Refused { info1: 2, .. }), "{err}");
    // Double validation is caught by the guest.
    let err = g.accept(0x301_000, 1).unwrap_err();
    assert!(matches!(err, GuestError::Pvalidate(_)), "{err}");
    // AP 5 does not exist.
    assert!(g.start_ap(5, 0x200_000, 1).is_err());
    assert!(bus.serial.is_empty());
}

#[test]
fn an_extended_request_returns_the_configured_certificate_table() {
    let (mut ram, services) = launched();
    let table = services.firmware.certificate_table().unwrap();
    let mut services = services.with_certificates(&table);
    let mut bus = Console::default();
    let mut g = ModelGuest::new(&mut ram, &mut bus, &mut services, GHCB);
    g.register_ghcb().unwrap();
    let reqs = (0x300_000, 0x301_000);
    // No room: the host says how many pages the table needs.
    assert_eq!(
        g.request_extended_report(SECRETS, reqs, (0x400_000, 0), &[3; 64]),
        Err(GuestError::Refused {
            event: "guest request",
            info1: 0,
            info2: 1 << 32,
        })
    );
    let (report, certs) = g
        .request_extended_report(SECRETS, reqs, (0x400_000, 1), &[3; 64])
        .unwrap();
    assert_eq!(&certs[..table.bytes().len()], table.bytes());
    // The guest finds the VCEK certificate in it and verifies its report with that key.
    let got = crate::certs::CertTable::parse(certs[..table.bytes().len()].to_vec()).unwrap();
    let vcek = got
        .entries()
        .iter()
        .find(|e| e.guid == crate::certs::VCEK_GUID)
        .unwrap();
    let der = &certs[vcek.offset as usize..(vcek.offset + vcek.length) as usize];
    let key = crate::report::vcek_cert::vcek_from_certificate_der(der).unwrap();
    let expected = Expected {
        measurement: Some([0x5e; 48]),
        host_data: Some([0xab; 32]),
        report_data: Some([3; 64]),
        policy: Some(0x30000),
    };
    verify(&report, &key, &expected).unwrap();
}
