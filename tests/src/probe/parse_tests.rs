//! Host tests of the probe guest's parsers (`guest/parse`, crate `probe_parse`): crafted
//! start info, command lines and ACPI tables in a fake guest memory, including hostile ones
//! (bad checksums, lengths, pointers, unterminated strings) that a VMM under test might produce.

use probe_parse::acpi::{self, count_cpus, s5_sleep_type, AcpiError, Fadt, Table, Tables};
use probe_parse::cmdline::{parse_decimal, Cmdline, CmdlineError, MAX_LEN};
use probe_parse::phys::{Memory, PhysError};
use probe_parse::report::Sink;
use probe_parse::start_info::{StartInfo, StartInfoError, MAGIC, MEMMAP_RAM};

/// Guest memory `[base, base + bytes.len())`; everything else is unreadable.
struct FakeMemory {
    base: u64,
    bytes: Vec<u8>,
}

impl FakeMemory {
    fn new(base: u64, len: usize) -> Self {
        Self {
            base,
            bytes: vec![0; len],
        }
    }

    fn put(&mut self, addr: u64, data: &[u8]) {
        let at = (addr - self.base) as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }
}

impl Memory for FakeMemory {
    fn check(&self, addr: u64, len: u64) -> Result<(), PhysError> {
        let end = self.base + self.bytes.len() as u64;
        match addr.checked_add(len) {
            Some(e) if addr >= self.base && e <= end => Ok(()),
            _ => Err(PhysError::OutOfRange { addr, len }),
        }
    }

    fn byte(&self, addr: u64) -> u8 {
        self.bytes[(addr - self.base) as usize]
    }
}

/// Collects a report as text.
struct Text(String);

impl Sink for Text {
    fn s(mut self, text: &str) -> Self {
        self.0.push_str(text);
        self
    }
    fn bytes(mut self, data: &[u8]) -> Self {
        self.0.push_str(&String::from_utf8_lossy(data));
        self
    }
    fn dec(mut self, value: u64) -> Self {
        self.0.push_str(&value.to_string());
        self
    }
    fn hex(mut self, value: u64) -> Self {
        self.0.push_str(&format!("{value:#x}"));
        self
    }
}

fn fix_checksum(data: &mut [u8], at: usize, over: usize) {
    data[at] = 0;
    let sum = data[..over].iter().fold(0u8, |s, &b| s.wrapping_add(b));
    data[at] = 0u8.wrapping_sub(sum);
}

/// A system description table with a valid header and checksum.
fn sdt(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 36];
    t[..4].copy_from_slice(signature);
    t[4..8].copy_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t[8] = 2;
    t[10..16].copy_from_slice(b"PODVSR");
    t.extend_from_slice(body);
    let len = t.len();
    fix_checksum(&mut t, 9, len);
    t
}

fn rsdp_v2(xsdt: u64) -> Vec<u8> {
    let mut r = vec![0u8; 36];
    r[..8].copy_from_slice(b"RSD PTR ");
    r[15] = 2;
    r[20..24].copy_from_slice(&36u32.to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    fix_checksum(&mut r, 8, 20);
    fix_checksum(&mut r, 32, 36);
    r
}

fn rsdp_v0(rsdt: u32) -> Vec<u8> {
    let mut r = vec![0u8; 20];
    r[..8].copy_from_slice(b"RSD PTR ");
    r[16..20].copy_from_slice(&rsdt.to_le_bytes());
    fix_checksum(&mut r, 8, 20);
    r
}

fn madt(entries: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![0u8; 8];
    body[..4].copy_from_slice(&0xfee0_0000u32.to_le_bytes());
    for e in entries {
        body.extend_from_slice(e);
    }
    sdt(b"APIC", &body)
}

const LAPIC_ON: [u8; 8] = [0, 8, 0, 0, 1, 0, 0, 0];
const LAPIC_OFF: [u8; 8] = [0, 8, 1, 1, 0, 0, 0, 0];
const IOAPIC: [u8; 12] = [1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0];
const X2APIC_ON: [u8; 16] = [9, 16, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
const X2APIC_OFF: [u8; 16] = [9, 16, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0];

const BASE: u64 = 0xE_0000;
const RSDP: u64 = 0xE_0000;
const XSDT: u64 = 0xE_0100;
const FACP: u64 = 0xE_0200;
const DSDT: u64 = 0xE_0400;
const APIC: u64 = 0xE_0800;

fn xsdt(tables: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = tables.iter().flat_map(|a| a.to_le_bytes()).collect();
    sdt(b"XSDT", &body)
}

/// A hardware-reduced FADT (revision 6 layout, 276 bytes) like podvisor's.
fn fadt_hw_reduced(dsdt: u64) -> Vec<u8> {
    let mut body = vec![0u8; 276 - 36];
    let at = |off: usize| off - 36;
    body[at(112)..at(112) + 4]
        .copy_from_slice(&(acpi::FLAG_HW_REDUCED_ACPI | acpi::FLAG_RESET_REG_SUP).to_le_bytes());
    // RESET_REG: I/O port 0x3c0, 8 bits; RESET_VALUE 6.
    body[at(116)..at(116) + 4].copy_from_slice(&[1, 8, 0, 1]);
    body[at(120)..at(120) + 8].copy_from_slice(&0x3c0u64.to_le_bytes());
    body[at(128)] = 6;
    body[at(140)..at(140) + 8].copy_from_slice(&dsdt.to_le_bytes());
    // SLEEP_CONTROL_REG: I/O port 0x3c1, 8 bits.
    body[at(244)..at(244) + 4].copy_from_slice(&[1, 8, 0, 1]);
    body[at(248)..at(248) + 8].copy_from_slice(&0x3c1u64.to_le_bytes());
    sdt(b"FACP", &body)
}

/// `Name (\_S5_, Package (0x04) { 0x05, 0x05, Zero, Zero })`.
const S5_AML: &[u8] = &[
    0x08, 0x5C, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00,
];

fn platform() -> FakeMemory {
    let mut mem = FakeMemory::new(BASE, 0x2_0000);
    mem.put(RSDP, &rsdp_v2(XSDT));
    mem.put(XSDT, &xsdt(&[FACP, APIC]));
    mem.put(FACP, &fadt_hw_reduced(DSDT));
    mem.put(DSDT, &sdt(b"DSDT", S5_AML));
    mem.put(
        APIC,
        &madt(&[&LAPIC_ON, &LAPIC_OFF, &IOAPIC, &X2APIC_ON, &X2APIC_OFF]),
    );
    mem
}

#[test]
fn counts_enabled_local_apics_and_x2apics() {
    let mem = platform();
    let tables = Tables::discover(&mem, RSDP).unwrap();
    assert_eq!(count_cpus(&tables.find(b"APIC").unwrap()), Ok(2));
}

#[test]
fn finds_the_rsdp_by_scanning_when_no_hint() {
    let mut mem = platform();
    mem.put(RSDP, &[0; 36]);
    mem.put(0xF_5A40, &rsdp_v2(XSDT));
    let tables = Tables::discover(&mem, 0).unwrap();
    assert!(tables.find(b"FACP").is_ok());
    let empty = FakeMemory::new(BASE, 0x2_0000);
    assert_eq!(Tables::discover(&empty, 0).err(), Some(AcpiError::NoRsdp));
}

#[test]
fn falls_back_to_the_rsdt() {
    let mut mem = platform();
    let body: Vec<u8> = [APIC as u32].iter().flat_map(|a| a.to_le_bytes()).collect();
    mem.put(0xE_0180, &sdt(b"RSDT", &body));
    mem.put(RSDP, &rsdp_v0(0xE_0180));
    let tables = Tables::discover(&mem, RSDP).unwrap();
    assert_eq!(count_cpus(&tables.find(b"APIC").unwrap()), Ok(2));
    assert_eq!(
        tables.find(b"FACP").err(),
        Some(AcpiError::Missing(*b"FACP"))
    );
}

#[test]
fn rejects_bad_checksums_and_lengths() {
    let mut mem = platform();
    mem.put(RSDP + 8, &[0x55]);
    assert_eq!(
        Tables::discover(&mem, RSDP).err(),
        Some(AcpiError::BadRsdp(RSDP))
    );

    let mut mem = platform();
    mem.put(APIC + 40, &[0x77]);
    let tables = Tables::discover(&mem, RSDP).unwrap();
    assert!(matches!(
        tables.find(b"APIC").err(),
        Some(AcpiError::BadTable {
            what: "checksum mismatch",
            ..
        })
    ));

    let mut mem = platform();
    mem.put(APIC + 4, &(2u32 << 20).to_le_bytes());
    assert!(matches!(
        Table::read(&mem, APIC, Some(b"APIC")).err(),
        Some(AcpiError::BadTable {
            what: "length out of bounds",
            ..
        })
    ));
    assert!(matches!(
        Table::read(&mem, APIC, Some(b"FACP")).err(),
        Some(AcpiError::BadTable {
            what: "unexpected signature",
            ..
        })
    ));
}

#[test]
fn table_pointers_outside_memory_are_errors() {
    let mut mem = platform();
    mem.put(XSDT, &xsdt(&[0xdead_beef_0000, APIC]));
    let tables = Tables::discover(&mem, RSDP).unwrap();
    // The bad entry is skipped; the good one still found.
    assert!(tables.find(b"APIC").is_ok());
    let far = Table::read(&mem, 0xdead_beef_0000, None).err();
    assert!(matches!(far, Some(AcpiError::Unmapped(_))));
    // A table whose length runs off the end of memory.
    let end = BASE + 0x2_0000 - 40;
    mem.put(end, &sdt(b"APIC", &[0; 4]));
    mem.put(end + 4, &200u32.to_le_bytes());
    assert!(matches!(
        Table::read(&mem, end, None).err(),
        Some(AcpiError::Unmapped(_))
    ));
}

#[test]
fn madt_entries_with_bad_lengths_are_errors_not_loops() {
    for bad in [&[0u8, 0][..], &[0u8, 1][..], &[0u8, 40, 0, 0][..]] {
        let mut mem = platform();
        mem.put(APIC, &madt(&[&LAPIC_ON, bad]));
        let table = Table::read(&mem, APIC, Some(b"APIC")).unwrap();
        assert!(
            matches!(count_cpus(&table), Err(AcpiError::BadTable { .. })),
            "{bad:?}"
        );
    }
    // Short entries of known types are not counted (their flags are not there).
    let mut mem = platform();
    mem.put(
        APIC,
        &madt(&[&LAPIC_ON, &[0, 4, 0, 1], &[9, 8, 0, 0, 0, 0, 0, 0]]),
    );
    let table = Table::read(&mem, APIC, Some(b"APIC")).unwrap();
    assert_eq!(count_cpus(&table), Ok(1));
}

fn s5_of(aml: &[u8]) -> Result<u8, AcpiError> {
    let mut mem = platform();
    mem.put(DSDT, &sdt(b"DSDT", aml));
    s5_sleep_type(&Table::read(&mem, DSDT, Some(b"DSDT")).unwrap())
}

#[test]
fn reads_the_s5_sleep_type() {
    assert_eq!(s5_of(S5_AML), Ok(5));
    // Without the root prefix, with Zero / One as the value, a two-byte PkgLength.
    assert_eq!(
        s5_of(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02, 0x00, 0x00]),
        Ok(0)
    );
    assert_eq!(
        s5_of(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02, 0x01, 0x00]),
        Ok(1)
    );
    assert_eq!(
        s5_of(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x45, 0x00, 0x02, 0x0A, 0x07, 0x00]),
        Ok(7)
    );
    // A reference to _S5_ that is not a Name is skipped; the later Name is used.
    let mut aml = vec![0x70, b'_', b'S', b'5', b'_', 0x60];
    aml.extend_from_slice(S5_AML);
    assert_eq!(s5_of(&aml), Ok(5));
}

#[test]
fn malformed_s5_is_an_error() {
    assert_eq!(s5_of(&[0x10, 0x20]), Err(AcpiError::NoS5));
    assert_eq!(
        s5_of(&[0x08, b'_', b'S', b'5', b'_', 0x12]),
        Err(AcpiError::BadS5("truncated"))
    );
    assert_eq!(
        s5_of(&[0x08, b'_', b'S', b'5', b'_', 0x0A, 0x05]),
        Err(AcpiError::BadS5("not a package"))
    );
    assert_eq!(
        s5_of(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x02, 0x00]),
        Err(AcpiError::BadS5("empty package"))
    );
    assert_eq!(
        s5_of(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x03, 0x01, 0x0D, 0x41]),
        Err(AcpiError::BadS5("first element is not a byte constant"))
    );
}

#[test]
fn parses_the_fadt_power_registers() {
    let mem = platform();
    let fadt = Fadt::parse(&Table::read(&mem, FACP, Some(b"FACP")).unwrap());
    assert_eq!(fadt.dsdt, DSDT);
    assert_ne!(fadt.flags & acpi::FLAG_HW_REDUCED_ACPI, 0);
    let sleep = fadt.sleep_control.unwrap();
    assert_eq!(
        (sleep.space, sleep.address, sleep.width()),
        (acpi::SPACE_IO, 0x3c1, 1)
    );
    let reset = fadt.reset_reg.unwrap();
    assert_eq!((reset.address, fadt.reset_value), (0x3c0, 6));
    assert!(fadt.pm1a_cnt.is_none());

    // An ACPI 1.0-sized FADT: 32-bit DSDT and a PM1a control port; later fields absent.
    let mut body = vec![0u8; 116 - 36];
    body[40 - 36..44 - 36].copy_from_slice(&(DSDT as u32).to_le_bytes());
    body[64 - 36..68 - 36].copy_from_slice(&0x604u32.to_le_bytes());
    body[89 - 36] = 2;
    let mut mem = platform();
    mem.put(FACP, &sdt(b"FACP", &body));
    let fadt = Fadt::parse(&Table::read(&mem, FACP, Some(b"FACP")).unwrap());
    assert_eq!(fadt.dsdt, DSDT);
    let pm1a = fadt.pm1a_cnt.unwrap();
    assert_eq!(
        (pm1a.space, pm1a.address, pm1a.width()),
        (acpi::SPACE_IO, 0x604, 2)
    );
    assert!(fadt.sleep_control.is_none() && fadt.reset_reg.is_none() && fadt.pm1b_cnt.is_none());
}

const INFO: u64 = 0x6000;
const MEMMAP: u64 = 0x6080;
const CMDLINE: u64 = 0x2_0000;

fn start_info(version: u32, entries: &[(u64, u64, u32)]) -> FakeMemory {
    let mut mem = FakeMemory::new(0, 0x2_1000);
    let mut info = vec![0u8; 56];
    info[..4].copy_from_slice(&MAGIC.to_le_bytes());
    info[4..8].copy_from_slice(&version.to_le_bytes());
    info[24..32].copy_from_slice(&CMDLINE.to_le_bytes());
    info[32..40].copy_from_slice(&0xE_0000u64.to_le_bytes());
    info[40..48].copy_from_slice(&MEMMAP.to_le_bytes());
    info[48..52].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    mem.put(INFO, &info);
    for (i, &(addr, size, kind)) in entries.iter().enumerate() {
        let mut e = vec![0u8; 24];
        e[..8].copy_from_slice(&addr.to_le_bytes());
        e[8..16].copy_from_slice(&size.to_le_bytes());
        e[16..20].copy_from_slice(&kind.to_le_bytes());
        mem.put(MEMMAP + 24 * i as u64, &e);
    }
    mem
}

#[test]
fn reads_the_start_info_and_memory_map() {
    let map = [
        (0, 0x9fc00, MEMMAP_RAM),
        (0x9fc00, 0x400, 2),
        (0x10_0000, 0x7f0_0000, MEMMAP_RAM),
    ];
    let mem = start_info(1, &map);
    let info = StartInfo::read(&mem, INFO).unwrap();
    assert_eq!(
        (info.version, info.cmdline_paddr, info.rsdp_paddr),
        (1, CMDLINE, 0xE_0000)
    );
    let got: Vec<(u64, u64, u32)> = info.memmap().map(|e| (e.addr, e.size, e.kind)).collect();
    assert_eq!(got, map);

    // Version 0 has no memory map fields.
    let mem = start_info(0, &map);
    assert_eq!(StartInfo::read(&mem, INFO).unwrap().memmap().count(), 0);
}

#[test]
fn hostile_start_info_is_rejected() {
    let mem = start_info(1, &[]);
    assert_eq!(
        StartInfo::read(&mem, 0).err(),
        Some(StartInfoError::NullPointer)
    );
    assert!(matches!(
        StartInfo::read(&mem, 0x10_0000).err(),
        Some(StartInfoError::Unmapped(_))
    ));
    assert_eq!(
        StartInfo::read(&mem, INFO + 8).err(),
        Some(StartInfoError::BadMagic(0))
    );

    let mut mem = start_info(1, &[]);
    mem.put(INFO + 48, &5000u32.to_le_bytes());
    assert_eq!(
        StartInfo::read(&mem, INFO).err(),
        Some(StartInfoError::MemmapTooLong(5000))
    );

    let mut mem = start_info(1, &[(0, 0x1000, 1)]);
    mem.put(INFO + 40, &0x2_0ff0u64.to_le_bytes());
    assert!(matches!(
        StartInfo::read(&mem, INFO).err(),
        Some(StartInfoError::MemmapUnmapped(_))
    ));
}

fn cmdline_with(text: &[u8]) -> FakeMemory {
    let mut mem = start_info(1, &[]);
    mem.put(CMDLINE, text);
    mem
}

#[test]
fn command_line_keys() {
    let mem = cmdline_with(b"console=ttyS0 probe.run=idle\tprobe.secs=3 probe.run=boot probe.x\0");
    let line = Cmdline::read(&mem, CMDLINE).unwrap();
    assert_eq!(line.get("probe.run"), Some(&b"boot"[..]));
    assert_eq!(line.number("probe.secs"), Ok(Some(3)));
    assert_eq!(line.get("probe.x"), None);
    assert_eq!(line.get("probe.r"), None);
    assert_eq!(line.number("probe.missing"), Ok(None));
    assert_eq!(line.number("probe.run"), Err(CmdlineError::BadNumber));
    assert_eq!(Cmdline::read(&mem, 0).unwrap().as_bytes(), b"");
}

#[test]
fn decimal_numbers_do_not_overflow() {
    assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_decimal(b"18446744073709551616"), None);
    assert_eq!(parse_decimal(b""), None);
    assert_eq!(parse_decimal(b"-1"), None);
    assert_eq!(parse_decimal(b"12a"), None);
}

#[test]
fn unterminated_command_lines_are_errors() {
    let mem = cmdline_with(&vec![b'a'; MAX_LEN + 1]);
    assert_eq!(
        Cmdline::read(&mem, CMDLINE).err(),
        Some(CmdlineError::TooLong)
    );
    let exactly = {
        let mut text = vec![b'a'; MAX_LEN];
        text.push(0);
        cmdline_with(&text)
    };
    assert_eq!(
        Cmdline::read(&exactly, CMDLINE).unwrap().as_bytes().len(),
        MAX_LEN
    );
    // The string runs into unreadable memory before its NUL.
    let mut mem = start_info(1, &[]);
    let end = 0x2_1000 - 4;
    mem.put(end, b"abcd");
    assert!(matches!(
        Cmdline::read(&mem, end).err(),
        Some(CmdlineError::Unmapped(_))
    ));
}

#[test]
fn errors_report_what_and_where() {
    let text = AcpiError::BadTable {
        signature: *b"APIC",
        addr: 0xe0800,
        what: "checksum mismatch",
    }
    .report(Text(String::new()))
    .0;
    assert_eq!(text, "acpi: APIC at 0xe0800: checksum mismatch");
    let text = StartInfoError::BadMagic(0x1234)
        .report(Text(String::new()))
        .0;
    assert_eq!(text, "start info: bad magic 0x1234");
    let text = CmdlineError::Unmapped(PhysError::OutOfRange { addr: 0x10, len: 1 })
        .report(Text(String::new()))
        .0;
    assert_eq!(
        text,
        "command line: physical range 0x10+0x1 is not readable"
    );
}

fn mcfg(entries: &[(u64, u16, u8, u8)]) -> Vec<u8> {
    let mut body = vec![0u8; 8];
    for &(base, segment, start, end) in entries {
        body.extend_from_slice(&base.to_le_bytes());
        body.extend_from_slice(&segment.to_le_bytes());
        body.extend_from_slice(&[start, end, 0, 0, 0, 0]);
    }
    sdt(b"MCFG", &body)
}

#[test]
fn reads_ecam_windows_from_the_mcfg() {
    let mut mem = platform();
    mem.put(
        0xE_1000,
        &mcfg(&[(0xe000_0000, 0, 0, 0xff), (0xd000_0000, 1, 0x10, 0x0f)]),
    );
    let table = Table::read(&mem, 0xE_1000, Some(b"MCFG")).unwrap();
    let windows: Vec<_> = acpi::mcfg_windows(&table).collect();
    assert_eq!(windows.len(), 2);
    let ecam = windows[0].unwrap();
    assert_eq!(
        (ecam.base, ecam.segment, ecam.start_bus, ecam.end_bus),
        (0xe000_0000, 0, 0, 0xff)
    );
    assert!(
        matches!(windows[1], Err(AcpiError::BadTable { .. })),
        "reversed bus range"
    );

    assert_eq!(ecam.address(0, 0, 0, 0), Some(0xe000_0000));
    assert_eq!(ecam.address(0, 2, 0, 0x10), Some(0xe001_0010));
    assert_eq!(ecam.address(1, 31, 7, 0xffc), Some(0xe01f_fffc));
    assert_eq!(ecam.address(0, 32, 0, 0), None);
    assert_eq!(ecam.address(0, 0, 8, 0), None);
    assert_eq!(ecam.address(0, 0, 0, 0x1000), None);
    let high = acpi::Ecam {
        base: u64::MAX - 0xfff,
        segment: 0,
        start_bus: 4,
        end_bus: 8,
    };
    assert_eq!(high.address(3, 0, 0, 0), None, "bus below the window");
    assert_eq!(high.address(4, 0, 1, 0), None, "address overflow");
}
