//! The SNP Page State Change NAE event (GHCB spec 56421 §4.1.6): a descriptor in the scratch
//! area lists up to 253 entries; the host applies entries `cur_entry..=end_entry` in order and
//! records its progress in the descriptor (cur_entry, and cur_page inside a 2 MiB entry), so
//! the guest can re-issue the same descriptor after an early return or after the error entry
//! (Linux `vmgexit_psc` loops while cur_entry <= end_entry).
//!
//! Error values in SW_EXITINFO2 follow Linux `VMGEXIT_PSC_ERROR_*`.

use super::nae::{read_scratch, scratch, write_scratch, Answer};
use super::page::GhcbPage;
use super::{Env, GhcbError, SharedMemory};
use crate::ghcb::msr::PscOp;
use crate::page_state::{PageSize, PAGES_PER_2M};
use crate::plan::PAGE_SIZE_U64;

/// Most entries in one descriptor (the shared buffer holds the 8-byte header and 253 entries).
pub const MAX_ENTRIES: usize = 253;
/// Header size.
pub const HEADER: usize = 8;
/// A host error while applying an entry.
pub const ERROR_GENERIC: u64 = 0x100 << 32;
/// cur_entry/end_entry out of range.
pub const ERROR_INVALID_HDR: u64 = (1 << 32) | 1;
/// An entry is malformed or names pages the operation cannot apply to.
pub const ERROR_INVALID_ENTRY: u64 = (1 << 32) | 2;
/// 4 KiB pages applied per exit before the host returns and lets the guest re-issue.
pub const PAGES_PER_EXIT: u64 = 4 * PAGES_PER_2M;

/// One descriptor entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PscEntry {
    /// Progress inside a 2 MiB entry (pages done).
    pub cur_page: u16,
    /// First GFN.
    pub gfn: u64,
    /// Raw operation (1 private, 2 shared, 3 PSMASH, 4 UNSMASH).
    pub op: u8,
    /// 2 MiB entry.
    pub large: bool,
    /// Bits 63:57, must be zero.
    pub reserved: u8,
}

impl PscEntry {
    /// Decode an entry.
    pub fn from_u64(v: u64) -> Self {
        Self {
            cur_page: (v & 0xFFF) as u16,
            gfn: (v >> 12) & ((1 << 40) - 1),
            op: ((v >> 52) & 0xF) as u8,
            large: (v >> 56) & 1 == 1,
            reserved: (v >> 57) as u8,
        }
    }

    /// Encode an entry.
    pub fn to_u64(self) -> u64 {
        u64::from(self.cur_page & 0xFFF)
            | ((self.gfn & ((1 << 40) - 1)) << 12)
            | (u64::from(self.op & 0xF) << 52)
            | (u64::from(self.large) << 56)
            | (u64::from(self.reserved & 0x7F) << 57)
    }

    fn size(self) -> PageSize {
        if self.large {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        }
    }
}

/// A descriptor as read from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PscDesc {
    /// First entry still to apply.
    pub cur_entry: u16,
    /// Last entry.
    pub end_entry: u16,
    /// Entries `0..=end_entry`.
    pub entries: Vec<PscEntry>,
}

impl PscDesc {
    /// Parse a descriptor from `bytes` (header plus entries; extra bytes ignored).
    /// `None` if the header is out of range or `bytes` too short.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let cur_entry = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]);
        let end_entry = u16::from_le_bytes([*bytes.get(2)?, *bytes.get(3)?]);
        if usize::from(end_entry) >= MAX_ENTRIES {
            return None;
        }
        let n = usize::from(end_entry) + 1;
        let body = bytes.get(HEADER..HEADER + 8 * n)?;
        let entries = body
            .chunks_exact(8)
            .map(|c| {
                let mut q = [0u8; 8];
                q.copy_from_slice(c);
                PscEntry::from_u64(u64::from_le_bytes(q))
            })
            .collect();
        Some(Self {
            cur_entry,
            end_entry,
            entries,
        })
    }

    /// Serialize header and entries.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 8 * self.entries.len());
        out.extend_from_slice(&self.cur_entry.to_le_bytes());
        out.extend_from_slice(&self.end_entry.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for e in &self.entries {
            out.extend_from_slice(&e.to_u64().to_le_bytes());
        }
        out
    }
}

/// Apply entries from `cur_entry` on, at most `budget` 4 KiB pages, updating progress in
/// `desc`. Returns the SW_EXITINFO2 value: 0, or an `ERROR_*` with `cur_entry` left at the
/// failing entry.
pub fn apply(desc: &mut PscDesc, mem: &mut dyn SharedMemory, budget: u64) -> u64 {
    let mut left = budget;
    while desc.cur_entry <= desc.end_entry {
        let Some(e) = desc.entries.get_mut(usize::from(desc.cur_entry)) else {
            return ERROR_INVALID_HDR;
        };
        let npages = e.size().pages();
        if e.reserved != 0 || u64::from(e.cur_page) > npages || e.gfn % npages != 0 {
            return ERROR_INVALID_ENTRY;
        }
        let Some(op) = PscOp::from_bits(u64::from(e.op)) else {
            return ERROR_INVALID_ENTRY;
        };
        let gpa = e.gfn * PAGE_SIZE_U64;
        if u64::from(e.cur_page) == npages {
            // Finished before an early return; the guest re-issued the descriptor.
            desc.cur_entry += 1;
            continue;
        }
        if left == 0 {
            return 0;
        }
        let result = match op {
            PscOp::Psmash | PscOp::Unsmash if !e.large => return ERROR_INVALID_ENTRY,
            PscOp::Psmash => mem.psmash(gpa).map(|()| {
                left -= 1;
                npages
            }),
            PscOp::Unsmash => mem.unsmash(gpa).map(|()| {
                left -= 1;
                npages
            }),
            PscOp::Private | PscOp::Shared => {
                convert_entry(e, gpa, op == PscOp::Private, mem, &mut left)
            }
        };
        match result {
            Ok(done) if done >= npages => {
                // As KVM does: a finished entry shows all its pages done.
                e.cur_page = npages as u16;
                desc.cur_entry += 1;
            }
            Ok(_) => return 0,
            Err(GhcbError::Memory(err)) => {
                log::warn!("PSC entry at {gpa:#x}: host memory failure: {err}");
                return ERROR_GENERIC;
            }
            Err(err) => {
                log::debug!("PSC entry at {gpa:#x} refused: {err}");
                return ERROR_INVALID_ENTRY;
            }
        }
    }
    0
}

/// Convert the rest of one entry; a whole untouched 2 MiB entry moves as one RMP entry.
/// Returns the entry's pages done so far.
fn convert_entry(
    e: &mut PscEntry,
    gpa: u64,
    private: bool,
    mem: &mut dyn SharedMemory,
    left: &mut u64,
) -> Result<u64, GhcbError> {
    if !e.large {
        mem.convert(gpa, PageSize::Size4K, private)?;
        *left -= 1;
        return Ok(1);
    }
    if e.cur_page == 0 && *left >= PAGES_PER_2M {
        mem.convert(gpa, PageSize::Size2M, private)?;
        *left -= PAGES_PER_2M;
        return Ok(PAGES_PER_2M);
    }
    // Resumed 2 MiB entry: the rest page by page (the RMP entry is then 4 KiB-sized).
    while u64::from(e.cur_page) < PAGES_PER_2M && *left > 0 {
        mem.convert(
            gpa + u64::from(e.cur_page) * PAGE_SIZE_U64,
            PageSize::Size4K,
            private,
        )?;
        e.cur_page += 1;
        *left -= 1;
    }
    Ok(u64::from(e.cur_page))
}

/// The NAE event: read the descriptor from the scratch area, apply, write progress back.
pub(crate) fn psc_event(
    page: &mut GhcbPage,
    ghcb: u64,
    env: &mut Env<'_>,
) -> Result<Answer, GhcbError> {
    let head = scratch(page, ghcb, HEADER as u64, env)?;
    let mut hdr = [0u8; HEADER];
    read_scratch(page, head, &mut hdr, env)?;
    let end = u16::from_le_bytes([hdr[2], hdr[3]]);
    if usize::from(end) >= MAX_ENTRIES {
        return Ok(Answer::with(ERROR_INVALID_HDR, Vec::new()));
    }
    let len = HEADER + 8 * (usize::from(end) + 1);
    let whole = scratch(page, ghcb, len as u64, env)?;
    let mut bytes = vec![0u8; len];
    read_scratch(page, whole, &mut bytes, env)?;
    let Some(mut desc) = PscDesc::parse(&bytes) else {
        return Ok(Answer::with(ERROR_INVALID_HDR, Vec::new()));
    };
    let status = apply(&mut desc, env.mem, PAGES_PER_EXIT);
    write_scratch(page, whole, &desc.to_bytes(), env)?;
    Ok(Answer::with(status, Vec::new()))
}
