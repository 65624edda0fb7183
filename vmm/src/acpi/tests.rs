//! Checks the tables as a guest would read them: from guest memory, starting at the RSDP.

use std::process::Command;

use devices::legacy::acpi_pm::{
    ACPI_PM_PORT, RESET_OFFSET, RESET_VALUE, SLEEP_CONTROL_OFFSET, SLEEP_STATUS_OFFSET, SLP_EN,
    SLP_TYP_SHIFT,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

fn memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), layout::HIMEM_START as usize)]).unwrap()
}

fn config(vcpus: u32) -> AcpiConfig {
    AcpiConfig {
        vcpus,
        serial: true,
        pci: false,
    }
}

fn read(mem: &GuestMemoryMmap<()>, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
}

/// A system description table as the guest finds it: length from its header.
fn table(mem: &GuestMemoryMmap<()>, addr: u64) -> Vec<u8> {
    let header = read(mem, addr, 36);
    let len = u32_at(&header, 4) as usize;
    assert!(len >= 36, "table at {addr:#x} shorter than its header");
    read(mem, addr, len)
}

/// Every table reachable from the RSDP, by signature, with its address.
struct Tables {
    rsdp: Vec<u8>,
    xsdt: (u64, Vec<u8>),
    fadt: (u64, Vec<u8>),
    madt: (u64, Vec<u8>),
    dsdt: (u64, Vec<u8>),
}

fn walk(mem: &GuestMemoryMmap<()>, rsdp_addr: GuestAddress) -> Tables {
    let rsdp = read(mem, rsdp_addr.0, 36);
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    let xsdt_addr = u64_at(&rsdp, 24);
    let xsdt = table(mem, xsdt_addr);
    assert_eq!(&xsdt[0..4], b"XSDT");
    let mut fadt = None;
    let mut madt = None;
    for entry in xsdt[36..].chunks(8) {
        let addr = u64::from_le_bytes(entry.try_into().unwrap());
        let t = table(mem, addr);
        match &t[0..4] {
            b"FACP" => assert!(fadt.replace((addr, t)).is_none(), "two FADTs"),
            b"APIC" => assert!(madt.replace((addr, t)).is_none(), "two MADTs"),
            b"MCFG" => {}
            other => panic!("unexpected table {other:?}"),
        }
    }
    let fadt = fadt.expect("XSDT lists the FADT");
    let madt = madt.expect("XSDT lists the MADT");
    let dsdt_addr = u64_at(&fadt.1, 140);
    let dsdt = table(mem, dsdt_addr);
    assert_eq!(&dsdt[0..4], b"DSDT");
    Tables {
        rsdp,
        xsdt: (xsdt_addr, xsdt),
        fadt,
        madt,
        dsdt: (dsdt_addr, dsdt),
    }
}

fn build(vcpus: u32, serial: bool) -> (GuestMemoryMmap<()>, Tables) {
    build_with_pci(vcpus, serial, false)
}

fn build_with_pci(vcpus: u32, serial: bool, pci: bool) -> (GuestMemoryMmap<()>, Tables) {
    let mem = memory();
    let rsdp = create_acpi_tables(&mem, &AcpiConfig { vcpus, serial, pci }).unwrap();
    assert_eq!(rsdp, GuestAddress(layout::RSDP_ADDR));
    let tables = walk(&mem, rsdp);
    (mem, tables)
}

#[test]
fn every_checksum_sums_to_zero() {
    let (_mem, t) = build(4, true);
    assert_eq!(t.rsdp[15], 2, "RSDP revision");
    assert_eq!(u32_at(&t.rsdp, 20), 36, "RSDP length");
    assert_eq!(sum(&t.rsdp[..20]), 0, "RSDP ACPI 1.0 checksum");
    assert_eq!(sum(&t.rsdp), 0, "RSDP extended checksum");
    for (name, bytes) in [
        ("XSDT", &t.xsdt.1),
        ("FACP", &t.fadt.1),
        ("APIC", &t.madt.1),
        ("DSDT", &t.dsdt.1),
    ] {
        assert_eq!(sum(bytes), 0, "{name} checksum");
        assert_eq!(&bytes[10..16], &OEM_ID, "{name} OEM ID");
    }
}

#[test]
fn tables_sit_in_the_reserved_area_without_overlapping() {
    let (_mem, t) = build(255, true);
    let mut spans = vec![(layout::RSDP_ADDR, layout::RSDP_ADDR + 36)];
    for (addr, bytes) in [&t.xsdt, &t.fadt, &t.madt, &t.dsdt] {
        assert_eq!(addr % 8, 0, "table at {addr:#x} aligned");
        spans.push((*addr, addr + bytes.len() as u64));
    }
    spans.sort();
    assert!(spans[0].0 >= layout::ACPI_START);
    assert!(spans.last().unwrap().1 <= layout::ACPI_END);
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "{pair:x?} overlap");
    }
}

#[test]
fn xsdt_points_at_fadt_and_madt_and_fadt_at_dsdt() {
    let (_mem, t) = build(2, true);
    let entries: Vec<u64> = t.xsdt.1[36..]
        .chunks(8)
        .map(|e| u64::from_le_bytes(e.try_into().unwrap()))
        .collect();
    assert_eq!(entries, vec![t.fadt.0, t.madt.0]);
    assert_eq!(u32_at(&t.fadt.1, 40), 0, "32-bit DSDT pointer unused");
    assert_eq!(u64_at(&t.fadt.1, 140), t.dsdt.0);
}

/// FADT offsets from ACPI 6.5 Table 5.9.
#[test]
fn fadt_describes_a_hardware_reduced_platform() {
    let (_mem, t) = build(1, true);
    let f = &t.fadt.1;
    assert_eq!(f.len(), 276);
    assert_eq!(f[8], 6, "FADT major revision");
    assert_eq!(f[131], 5, "FADT minor revision");
    let flags = u32_at(f, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_eq!(u32_at(f, 36), 0, "no FACS");
    assert_eq!(u64_at(f, 132), 0, "no X_FACS");
    assert_eq!(u16::from_le_bytes([f[109], f[110]]), fadt::IAPC_BOOT_ARCH);
    assert_eq!(
        u16::from_le_bytes([f[109], f[110]]) & (1 << 1),
        0,
        "no 8042 in firmware"
    );
    let io_byte = |off: usize, port: u16| {
        assert_eq!(f[off], 1, "GAS at {off}: system I/O space");
        assert_eq!(f[off + 1], 8, "GAS at {off}: 8 bits wide");
        assert_eq!(f[off + 2], 0, "GAS at {off}: bit offset");
        assert_eq!(f[off + 3], 1, "GAS at {off}: byte access");
        assert_eq!(u64_at(f, off + 4), u64::from(port), "GAS at {off}: port");
    };
    io_byte(116, ACPI_PM_PORT + RESET_OFFSET);
    assert_eq!(f[128], RESET_VALUE);
    io_byte(244, ACPI_PM_PORT + SLEEP_CONTROL_OFFSET);
    io_byte(256, ACPI_PM_PORT + SLEEP_STATUS_OFFSET);
    assert_eq!(u64_at(f, 268), fadt::HYPERVISOR_VENDOR_ID);
    // The probe guest's power-off write, with SLP_TYP from \_S5_, is what the device expects.
    assert_eq!((5u8 << 2) | (1 << 5), (5 << SLP_TYP_SHIFT) | SLP_EN);
}

/// The MADT's interrupt controller structures as (type, body) pairs.
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let (ty, len) = (madt[off], madt[off + 1] as usize);
        assert!(
            len >= 2 && off + len <= madt.len(),
            "bad MADT entry at {off}"
        );
        out.push((ty, madt[off..off + len].to_vec()));
        off += len;
    }
    out
}

#[test]
fn madt_has_one_enabled_local_apic_per_vcpu() {
    for vcpus in [1u32, 2, 7, 64, 255] {
        let (_mem, t) = build(vcpus, false);
        assert_eq!(u32_at(&t.madt.1, 36), layout::LAPIC_START as u32);
        let entries = madt_entries(&t.madt.1);
        let lapics: Vec<_> = entries.iter().filter(|(ty, _)| *ty == 0).collect();
        assert_eq!(lapics.len(), vcpus as usize);
        for (i, (_, e)) in lapics.iter().enumerate() {
            assert_eq!(e.len(), 8);
            assert_eq!(e[2] as usize, i, "processor UID");
            assert_eq!(e[3] as usize, i, "APIC ID");
            assert_eq!(u32_at(e, 4) & 1, 1, "enabled");
        }
        let ioapics: Vec<_> = entries.iter().filter(|(ty, _)| *ty == 1).collect();
        assert_eq!(ioapics.len(), 1);
        let io = &ioapics[0].1;
        assert_eq!(io[2], madt::IOAPIC_ID);
        assert_eq!(u32_at(io, 4), layout::IOAPIC_START as u32);
        assert_eq!(u32_at(io, 8), 0, "GSI base");
        let overrides: Vec<_> = entries.iter().filter(|(ty, _)| *ty == 2).collect();
        assert_eq!(overrides.len(), 1);
        let iso = &overrides[0].1;
        assert_eq!(
            (iso[1], iso[2], iso[3]),
            (10, 0, 0),
            "length, ISA bus, IRQ 0"
        );
        assert_eq!(u32_at(iso, 4), 2, "IRQ 0 arrives on GSI 2");
        let nmis: Vec<_> = entries.iter().filter(|(ty, _)| *ty == 4).collect();
        assert_eq!(nmis.len(), 1);
        assert_eq!(nmis[0].1, vec![4, 6, 0xff, 0, 0, 1], "all CPUs, LINT1");
        assert_eq!(entries.len(), vcpus as usize + 3);
    }
}

/// Decodes an AML PkgLength (§20.2.4): (value, bytes used).
fn pkg_length(b: &[u8]) -> (usize, usize) {
    let extra = (b[0] >> 6) as usize;
    if extra == 0 {
        return ((b[0] & 0x3f) as usize, 1);
    }
    let mut len = (b[0] & 0x0f) as usize;
    for i in 0..extra {
        len |= (b[1 + i] as usize) << (4 + 8 * i);
    }
    (len, 1 + extra)
}

#[test]
fn dsdt_has_a_well_formed_s5_package() {
    let (_mem, t) = build(2, true);
    let aml = &t.dsdt.1[36..];
    let at = aml
        .windows(5)
        .position(|w| w == [0x08, b'_', b'S', b'5', b'_'])
        .expect("Name(_S5_, ...) at the root");
    let pkg = &aml[at + 5..];
    assert_eq!(pkg[0], 0x12, "PackageOp");
    let (len, used) = pkg_length(&pkg[1..]);
    let body = &pkg[1..1 + len];
    assert_eq!(body[used], 4, "NumElements");
    // SLP_TYP_a = BytePrefix 5, then three ZeroOps.
    assert_eq!(&body[used + 1..], &[0x0a, 5, 0x00, 0x00, 0x00]);
}

#[test]
fn dsdt_lists_processors_and_com1() {
    let count =
        |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).filter(|w| *w == needle).count();
    // PNP0501 as a compressed EISA ID (DWordPrefix + 0x0105d041 little endian).
    let pnp0501 = [0x0c, 0x41, 0xd0, 0x05, 0x01];
    let (_mem, t) = build(3, true);
    let aml = &t.dsdt.1[36..];
    assert_eq!(count(aml, b"ACPI0007\0"), 3);
    for name in ["C000", "C001", "C002"] {
        assert_eq!(count(aml, name.as_bytes()), 1, "{name}");
    }
    assert_eq!(count(aml, &pnp0501), 1);
    // IO(Decode16, 0x3f8, 0x3f8, 1, 8)
    assert_eq!(
        count(aml, &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]),
        1
    );
    let (_mem, t) = build(1, false);
    assert_eq!(count(&t.dsdt.1[36..], &pnp0501), 0);
    assert_eq!(count(&t.dsdt.1[36..], b"ACPI0007\0"), 1);
}

#[test]
fn bad_vcpu_counts_are_refused() {
    let mem = memory();
    for vcpus in [0, MAX_VCPUS + 1, u32::MAX] {
        assert!(matches!(
            create_acpi_tables(&mem, &config(vcpus)),
            Err(AcpiError::VcpuCount { vcpus: v }) if v == vcpus
        ));
    }
}

#[test]
fn tables_that_do_not_fit_are_an_error_and_write_nothing() {
    let mem = memory();
    let start = layout::ACPI_START;
    let err = write_tables(&mem, &config(255), start..start + 0x400).unwrap_err();
    assert!(matches!(err, AcpiError::TooLarge { limit, .. } if limit == start + 0x400));
    assert!(read(&mem, start, 0x400).iter().all(|b| *b == 0));
}

#[test]
fn memory_that_misses_the_area_is_an_error() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x8_0000)]).unwrap();
    assert!(matches!(
        create_acpi_tables(&mem, &config(1)),
        Err(AcpiError::GuestMemory { .. })
    ));
}

/// Independent parsers: ACPICA's disassembler must accept every table, the DSDT it
/// disassembles must compile again without errors, and ACPICA's interpreter (`acpiexec`) must
/// load the namespace and evaluate `\_S5_`, a processor `_UID` and COM1's `_CRS`. Needs
/// `iasl` and `acpiexec` (Debian `acpica-tools`); skipped without them unless
/// `PODVISOR_REQUIRE_TOOLS=1`.
#[test]
fn acpica_accepts_the_tables() {
    let present = |tool: &str| Command::new(tool).arg("-v").output().is_ok();
    if !present("iasl") || !present("acpiexec") {
        assert!(
            std::env::var("PODVISOR_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "iasl and acpiexec (Debian acpica-tools) are required but not installed"
        );
        eprintln!("skipping: iasl or acpiexec not installed (Debian acpica-tools)");
        return;
    }
    let (_mem, t) = build_with_pci(4, true, true);
    let dir = crate::test_scratch::ScratchDir::new("acpi");
    for (name, bytes) in [
        // iasl cannot take a bare RSDP; its checksums are checked above.
        ("xsdt", &t.xsdt.1),
        ("facp", &t.fadt.1),
        ("apic", &t.madt.1),
        ("dsdt", &t.dsdt.1),
    ] {
        let file = dir.join(format!("{name}.dat"));
        std::fs::write(&file, bytes).unwrap();
        let out = Command::new("iasl")
            .arg("-d")
            .arg(&file)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "iasl -d {name}: {text}");
        let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
        assert!(!dsl.contains("**** "), "iasl flagged {name}:\n{dsl}");
    }
    let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
    assert!(dsl.contains("Name (_S5, Package (0x04)"), "{dsl}");
    assert!(dsl.contains("EisaId (\"PNP0501\")"), "{dsl}");
    // Hot-plug: every slot ejects through the controller, PCNT notifies arrivals and
    // departures, the GED calls it.
    assert!(dsl.contains("Device (SL1F)"), "{dsl}");
    assert!(dsl.contains("Method (_EJ0, 1"), "{dsl}");
    assert!(dsl.contains("Notify (SL05, One)"), "{dsl}");
    assert!(dsl.contains("Notify (SL05, 0x03)"), "{dsl}");
    assert!(dsl.contains("\\_SB.PCI0.PCNT ()"), "{dsl}");
    let out = Command::new("iasl")
        .arg("-p")
        .arg(dir.join("recompiled"))
        .arg(dir.join("dsdt.dsl"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "iasl recompile: {text}");
    assert!(text.contains("0 Errors"), "{text}");
    // ACPICA's AML interpreter loads the namespace and evaluates what guests use.
    let out = Command::new("acpiexec")
        .arg("-b")
        .arg(
            "Evaluate \\_S5_; Evaluate \\_SB.C003._UID; Evaluate \\_SB.COM1._CRS; \
             Evaluate \\_SB.PCI0.SL1E._ADR; Evaluate \\_SB.PCI0.PCNT",
        )
        .args(["dsdt.dat", "facp.dat", "apic.dat"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "acpiexec: {text}");
    for bad in ["ACPI Error", "ACPI Warning", "AE_"] {
        assert!(!text.contains(bad), "acpiexec reported {bad}: {text}");
    }
    let s5 = "[Package] Contains 4 Elements:\n    [Integer] = 0000000000000005\n";
    assert!(text.contains(s5), "{text}");
    assert!(
        text.contains("[Integer] = 0000000000000003"),
        "C003._UID: {text}"
    );
    assert!(
        text.contains("0000: 47 01 F8 03 F8 03 01 08 89 06 00 03 01 04 00 00"),
        "COM1._CRS: {text}"
    );
    assert!(
        text.contains("[Integer] = 00000000001E0000"),
        "SL1E._ADR: {text}"
    );
    if std::env::var_os("PODVISOR_KEEP_ACPI").is_some() {
        eprintln!("tables and disassembly kept in {}", dir.keep().display());
    }
}
