//! The ACPI tables the probe reads (ACPI 6.5): RSDP (§5.2.5) → XSDT/RSDT (§5.2.7, §5.2.8) →
//! FADT (§5.2.9), MADT (§5.2.12), the `\_S5_` package in the DSDT (§7.4.2), and MCFG (PCI
//! Firmware Specification 3.3 §4.1.2) for PCI configuration access.
//!
//! The VMM built these tables, so they are checked like any other hostile input: signatures,
//! lengths, checksums and bounds before a field is used, and every walk is bounded.

use crate::phys::{Memory, PhysError, Region};
use crate::report::Sink;

const SDT_HEADER_LEN: u64 = 36;
/// Upper bound on any table; generous for a DSDT, small enough to bound the work.
const MAX_TABLE_LEN: u64 = 1 << 20;
/// Where the RSDP may sit when the start info does not name it (ACPI §5.2.5.1).
const BIOS_AREA: (u64, u64) = (0xE_0000, 0x10_0000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    Unmapped(PhysError),
    NoRsdp,
    BadRsdp(u64),
    BadTable {
        signature: [u8; 4],
        addr: u64,
        what: &'static str,
    },
    Missing([u8; 4]),
    NoS5,
    BadS5(&'static str),
}

impl AcpiError {
    pub fn report<S: Sink>(&self, out: S) -> S {
        let out = out.s("acpi: ");
        match *self {
            AcpiError::Unmapped(e) => e.report(out),
            AcpiError::NoRsdp => out.s("no RSDP in the start info or in 0xe0000-0xfffff"),
            AcpiError::BadRsdp(addr) => out.s("invalid RSDP at ").hex(addr),
            AcpiError::BadTable {
                signature,
                addr,
                what,
            } => out.bytes(&signature).s(" at ").hex(addr).s(": ").s(what),
            AcpiError::Missing(signature) => out.s("no ").bytes(&signature).s(" table"),
            AcpiError::NoS5 => out.s("no \\_S5_ package in the DSDT"),
            AcpiError::BadS5(what) => out.s("\\_S5_: ").s(what),
        }
    }
}

fn checksum_ok(region: &Region<'_>) -> bool {
    let mut sum: u8 = 0;
    for i in 0..region.len {
        sum = sum.wrapping_add(region.u8(i).unwrap_or(0));
    }
    sum == 0
}

/// Validates an RSDP candidate and returns the root table: XSDT (if revision ≥ 2 and present)
/// or RSDT, with the width of its entries.
fn root_from_rsdp(mem: &dyn Memory, addr: u64) -> Result<(u64, u64), AcpiError> {
    let v1 = Region::new(mem, addr, 20).map_err(AcpiError::Unmapped)?;
    let mut sig = [0u8; 8];
    if !v1.read(0, &mut sig) || &sig != b"RSD PTR " || !checksum_ok(&v1) {
        return Err(AcpiError::BadRsdp(addr));
    }
    let revision = v1.u8(15).unwrap_or(0);
    if revision >= 2 {
        let v2 = Region::new(mem, addr, 36).map_err(AcpiError::Unmapped)?;
        let length = u64::from(v2.u32(20).unwrap_or(0));
        if !(36..=4096).contains(&length) {
            return Err(AcpiError::BadRsdp(addr));
        }
        let full = Region::new(mem, addr, length).map_err(AcpiError::Unmapped)?;
        if !checksum_ok(&full) {
            return Err(AcpiError::BadRsdp(addr));
        }
        let xsdt = v2.u64(24).unwrap_or(0);
        if xsdt != 0 {
            return Ok((xsdt, 8));
        }
    }
    let rsdt = u64::from(v1.u32(16).unwrap_or(0));
    if rsdt == 0 {
        return Err(AcpiError::BadRsdp(addr));
    }
    Ok((rsdt, 4))
}

/// Scans the BIOS read-only area on 16-byte boundaries for a valid RSDP.
fn scan_bios_area(mem: &dyn Memory) -> Option<u64> {
    (BIOS_AREA.0..BIOS_AREA.1)
        .step_by(16)
        .find(|&addr| root_from_rsdp(mem, addr).is_ok())
}

/// A checked system description table: header valid, length in bounds, checksum zero.
#[derive(Clone, Copy)]
pub struct Table<'m> {
    pub signature: [u8; 4],
    pub region: Region<'m>,
}

impl<'m> Table<'m> {
    /// Reads the table at `addr`; `expect` is its signature if the caller knows it.
    pub fn read(
        mem: &'m dyn Memory,
        addr: u64,
        expect: Option<&[u8; 4]>,
    ) -> Result<Self, AcpiError> {
        let head = Region::new(mem, addr, SDT_HEADER_LEN).map_err(AcpiError::Unmapped)?;
        let mut signature = [0u8; 4];
        head.read(0, &mut signature);
        let bad = |what| AcpiError::BadTable {
            signature,
            addr,
            what,
        };
        if expect.is_some_and(|e| *e != signature) {
            return Err(bad("unexpected signature"));
        }
        let length = u64::from(head.u32(4).unwrap_or(0));
        if !(SDT_HEADER_LEN..=MAX_TABLE_LEN).contains(&length) {
            return Err(bad("length out of bounds"));
        }
        let region = Region::new(mem, addr, length).map_err(AcpiError::Unmapped)?;
        if !checksum_ok(&region) {
            return Err(bad("checksum mismatch"));
        }
        Ok(Self { signature, region })
    }

    /// The bytes after the 36-byte header.
    pub fn body(&self) -> Region<'m> {
        self.region
            .sub(SDT_HEADER_LEN, self.region.len - SDT_HEADER_LEN)
            .unwrap_or(self.region)
    }
}

/// The root table (XSDT or RSDT) and what it points to.
#[derive(Clone, Copy)]
pub struct Tables<'m> {
    root: Table<'m>,
    entry_size: u64,
}

impl<'m> Tables<'m> {
    /// Finds the root table from the start info's RSDP address, else by scanning the BIOS area.
    pub fn discover(mem: &'m dyn Memory, rsdp_hint: u64) -> Result<Self, AcpiError> {
        let rsdp = if rsdp_hint != 0 {
            rsdp_hint
        } else {
            scan_bios_area(mem).ok_or(AcpiError::NoRsdp)?
        };
        let (root_addr, entry_size) = root_from_rsdp(mem, rsdp)?;
        let expect = if entry_size == 8 { b"XSDT" } else { b"RSDT" };
        let root = Table::read(mem, root_addr, Some(expect))?;
        Ok(Self { root, entry_size })
    }

    /// The first table with this signature.
    pub fn find(&self, signature: &[u8; 4]) -> Result<Table<'m>, AcpiError> {
        let mem = self.root.region.memory();
        let body = self.root.body();
        let count = body.len / self.entry_size;
        for i in 0..count {
            let off = i * self.entry_size;
            let addr = if self.entry_size == 8 {
                body.u64(off)
            } else {
                body.u32(off).map(u64::from)
            };
            let Some(addr) = addr.filter(|&a| a != 0) else {
                continue;
            };
            let Ok(head) = Region::new(mem, addr, 4) else {
                continue;
            };
            let mut sig = [0u8; 4];
            if head.read(0, &mut sig) && &sig == signature {
                return Table::read(mem, addr, Some(signature));
            }
        }
        Err(AcpiError::Missing(*signature))
    }
}

/// An ACPI Generic Address Structure (§5.2.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gas {
    pub space: u8,
    pub bit_width: u8,
    pub access_size: u8,
    pub address: u64,
}

pub const SPACE_MEMORY: u8 = 0;
pub const SPACE_IO: u8 = 1;

impl Gas {
    fn read(region: &Region<'_>, offset: u64) -> Option<Self> {
        Some(Self {
            space: region.u8(offset)?,
            bit_width: region.u8(offset + 1)?,
            access_size: region.u8(offset + 3)?,
            address: region.u64(offset + 4)?,
        })
    }

    /// Access width in bytes: from the access size field, else from the register width.
    pub fn width(&self) -> u64 {
        match self.access_size {
            1 => 1,
            2 => 2,
            3 => 4,
            4 => 8,
            _ => match self.bit_width {
                16 => 2,
                32 => 4,
                64 => 8,
                _ => 1,
            },
        }
    }
}

/// The FADT fields used for power-off and reset (ACPI 6.5 Table 5.9).
#[derive(Debug, Clone, Copy)]
pub struct Fadt {
    pub dsdt: u64,
    pub flags: u32,
    pub pm1a_cnt: Option<Gas>,
    pub pm1b_cnt: Option<Gas>,
    pub reset_reg: Option<Gas>,
    pub reset_value: u8,
    pub sleep_control: Option<Gas>,
}

/// FADT flag: the platform has no fixed-hardware PM1 blocks; sleep goes through
/// SLEEP_CONTROL_REG.
pub const FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;
/// FADT flag: RESET_REG and RESET_VALUE are valid.
pub const FLAG_RESET_REG_SUP: u32 = 1 << 10;

impl Fadt {
    pub fn parse(table: &Table<'_>) -> Self {
        let r = &table.region;
        let gas = |offset: u64| Gas::read(r, offset).filter(|g| g.address != 0);
        // A fixed 32-bit PM1 control block is an I/O port number (width from PM1_CNT_LEN).
        let legacy_pm1 = |offset: u64| {
            let port = u64::from(r.u32(offset)?);
            let len = r.u8(89).unwrap_or(2);
            (port != 0).then_some(Gas {
                space: SPACE_IO,
                bit_width: len.saturating_mul(8),
                access_size: 0,
                address: port,
            })
        };
        let x_dsdt = r.u64(140).unwrap_or(0);
        Self {
            dsdt: if x_dsdt != 0 {
                x_dsdt
            } else {
                u64::from(r.u32(40).unwrap_or(0))
            },
            flags: r.u32(112).unwrap_or(0),
            pm1a_cnt: gas(172).or_else(|| legacy_pm1(64)),
            pm1b_cnt: gas(184).or_else(|| legacy_pm1(68)),
            reset_reg: gas(116),
            reset_value: r.u8(128).unwrap_or(0),
            sleep_control: gas(244),
        }
    }
}

/// Counts enabled processors in the MADT: Local APIC (type 0) and Local x2APIC (type 9)
/// entries with the Enabled flag (bit 0).
pub fn count_cpus(madt: &Table<'_>) -> Result<u64, AcpiError> {
    let body = madt.body();
    // 8 bytes of local APIC address and flags precede the entries.
    let mut off = 8;
    let mut cpus = 0;
    while off + 2 <= body.len {
        let kind = body.u8(off).unwrap_or(0);
        let len = u64::from(body.u8(off + 1).unwrap_or(0));
        if len < 2 || off + len > body.len {
            return Err(AcpiError::BadTable {
                signature: madt.signature,
                addr: madt.region.addr,
                what: "interrupt controller entry with bad length",
            });
        }
        let flags = match (kind, len) {
            (0, 8..) => body.u32(off + 4),
            (9, 16..) => body.u32(off + 8),
            _ => None,
        };
        if flags.is_some_and(|f| f & 1 != 0) {
            cpus += 1;
        }
        off += len;
    }
    Ok(cpus)
}

/// Reads SLP_TYPa for S5 from the `\_S5_` package in the DSDT: the name, then PackageOp (0x12),
/// PkgLength, NumElements, and the first element as BytePrefix (0x0A) n, ZeroOp or OneOp.
pub fn s5_sleep_type(dsdt: &Table<'_>) -> Result<u8, AcpiError> {
    let aml = dsdt.body();
    let mut at = 0;
    while at + 4 <= aml.len {
        let mut name = [0u8; 4];
        aml.read(at, &mut name);
        if &name != b"_S5_" {
            at += 1;
            continue;
        }
        // Only a NameOp (0x08), optionally with a root prefix, introduces the object we want.
        let prev = if at >= 1 { aml.u8(at - 1) } else { None };
        let prev2 = if at >= 2 { aml.u8(at - 2) } else { None };
        let named = prev == Some(0x08) || (prev == Some(b'\\') && prev2 == Some(0x08));
        if !named {
            at += 1;
            continue;
        }
        return parse_s5_package(&aml, at + 4);
    }
    Err(AcpiError::NoS5)
}

fn parse_s5_package(aml: &Region<'_>, mut at: u64) -> Result<u8, AcpiError> {
    let mut next = || {
        let b = aml.u8(at).ok_or(AcpiError::BadS5("truncated"));
        at += 1;
        b
    };
    if next()? != 0x12 {
        return Err(AcpiError::BadS5("not a package"));
    }
    // PkgLength: bits 7-6 of the lead byte count the bytes that follow it.
    let lead = next()?;
    for _ in 0..(lead >> 6) {
        next()?;
    }
    let elements = next()?;
    if elements == 0 {
        return Err(AcpiError::BadS5("empty package"));
    }
    match next()? {
        0x0A => next().map(|v| v & 0x7),
        0x00 => Ok(0),
        0x01 => Ok(1),
        _ => Err(AcpiError::BadS5("first element is not a byte constant")),
    }
}

/// Size of one MCFG allocation entry (PCI Firmware Specification 3.3, Table 4-3).
const MCFG_ENTRY_LEN: u64 = 16;
/// Reserved bytes between the MCFG header and its first entry.
const MCFG_RESERVED: u64 = 8;

/// One enhanced configuration access (ECAM) window from the MCFG table: the configuration
/// space of buses `start_bus..=end_bus` of a PCI segment, 4 KiB per function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecam {
    pub base: u64,
    pub segment: u16,
    pub start_bus: u8,
    pub end_bus: u8,
}

impl Ecam {
    /// Physical address of configuration register `offset` of `bus:device.function`, or
    /// `None` if any part is out of range (bus outside the window, device > 31, function > 7,
    /// offset past 4 KiB, or an address that overflows).
    pub fn address(&self, bus: u8, device: u8, function: u8, offset: u16) -> Option<u64> {
        if bus < self.start_bus
            || bus > self.end_bus
            || device > 31
            || function > 7
            || offset > 0xfff
        {
            return None;
        }
        let index = (u64::from(bus - self.start_bus) << 20)
            | (u64::from(device) << 15)
            | (u64::from(function) << 12)
            | u64::from(offset);
        self.base.checked_add(index)
    }
}

/// The ECAM windows an MCFG table lists; entries whose bus range is reversed are an error.
pub fn mcfg_windows<'a>(mcfg: &'a Table<'_>) -> impl Iterator<Item = Result<Ecam, AcpiError>> + 'a {
    let body = mcfg.body();
    let count = body.len.saturating_sub(MCFG_RESERVED) / MCFG_ENTRY_LEN;
    (0..count).map(move |i| {
        let at = MCFG_RESERVED + i * MCFG_ENTRY_LEN;
        let bad = AcpiError::BadTable {
            signature: mcfg.signature,
            addr: mcfg.region.addr,
            what: "MCFG entry with a reversed bus range or no base",
        };
        let window = Ecam {
            base: body.u64(at).unwrap_or(0),
            segment: body.u32(at + 8).unwrap_or(0) as u16,
            start_bus: body.u8(at + 10).unwrap_or(0),
            end_bus: body.u8(at + 11).unwrap_or(0),
        };
        if window.base == 0 || window.end_bus < window.start_bus {
            Err(bad)
        } else {
            Ok(window)
        }
    })
}
