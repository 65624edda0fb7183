//! The GHCB page layout (GHCB spec 56421 §2.2 "GHCB Layout", table 3): a save-area subset at
//! VMSA offsets, the valid bitmap, the shared buffer, version and usage.
//!
//! [`GhcbPage`] is the host's private copy. The guest can rewrite the shared page at any time,
//! so the page is read once per exit and every decision is taken on the copy; outputs are
//! written into the copy, which is written back whole.

use super::GhcbError;
use crate::page_info::PAGE_SIZE;

/// The 8-byte fields the protocol uses, named by their save-area offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// CPL (one byte at 0x0CB; valid bit 25).
    Cpl,
    /// XSS.
    Xss,
    /// DR7.
    Dr7,
    /// RAX.
    Rax,
    /// RCX.
    Rcx,
    /// RDX.
    Rdx,
    /// RBX.
    Rbx,
    /// SW_EXITCODE.
    ExitCode,
    /// SW_EXITINFO1.
    ExitInfo1,
    /// SW_EXITINFO2.
    ExitInfo2,
    /// SW_SCRATCH.
    Scratch,
    /// XCR0.
    Xcr0,
}

impl Field {
    /// Byte offset in the page.
    pub fn offset(self) -> usize {
        match self {
            Field::Cpl => 0x0C8,
            Field::Xss => 0x140,
            Field::Dr7 => 0x160,
            Field::Rax => 0x1F8,
            Field::Rcx => 0x308,
            Field::Rdx => 0x310,
            Field::Rbx => 0x318,
            Field::ExitCode => 0x390,
            Field::ExitInfo1 => 0x398,
            Field::ExitInfo2 => 0x3A0,
            Field::Scratch => 0x3A8,
            Field::Xcr0 => 0x3E8,
        }
    }

    /// Bit in the valid bitmap: the field's quadword index.
    pub fn valid_bit(self) -> usize {
        self.offset() / 8
    }
}

/// Offset of the 16-byte valid bitmap.
pub const VALID_BITMAP: usize = 0x3F0;
/// Offset of the shared buffer.
pub const SHARED_BUFFER: usize = 0x800;
/// Size of the shared buffer.
pub const SHARED_BUFFER_SIZE: usize = 0x7F0;
/// Offset of the protocol version (u16).
pub const PROTOCOL_VERSION: usize = 0xFFA;
/// Offset of the GHCB usage (u32).
pub const USAGE: usize = 0xFFC;
/// The standard GHCB format (usage 0).
pub const USAGE_STANDARD: u32 = 0;

/// A copy of a GHCB page.
#[derive(Clone)]
pub struct GhcbPage(Box<[u8; PAGE_SIZE]>);

impl std::fmt::Debug for GhcbPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GhcbPage")
            .field("version", &self.version())
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

impl Default for GhcbPage {
    fn default() -> Self {
        Self(Box::new([0; PAGE_SIZE]))
    }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut q = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        q.copy_from_slice(s);
    }
    u64::from_le_bytes(q)
}

impl GhcbPage {
    /// A copy of `bytes` (one page).
    pub fn from_bytes(bytes: &[u8; PAGE_SIZE]) -> Self {
        Self(Box::new(*bytes))
    }

    /// The page bytes.
    pub fn bytes(&self) -> &[u8; PAGE_SIZE] {
        &self.0
    }

    /// Protocol version field.
    pub fn version(&self) -> u16 {
        u16::from_le_bytes([self.0[PROTOCOL_VERSION], self.0[PROTOCOL_VERSION + 1]])
    }

    /// Usage field.
    pub fn usage(&self) -> u32 {
        let mut d = [0u8; 4];
        d.copy_from_slice(&self.0[USAGE..USAGE + 4]);
        u32::from_le_bytes(d)
    }

    /// Set the version field (guest side, tests and the model guest).
    pub fn set_version(&mut self, v: u16) {
        self.0[PROTOCOL_VERSION..PROTOCOL_VERSION + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Whether `field`'s valid bit is set.
    pub fn is_valid(&self, field: Field) -> bool {
        let bit = field.valid_bit();
        self.0[VALID_BITMAP + bit / 8] & (1 << (bit % 8)) != 0
    }

    /// The field if its valid bit is set, else the spec's "missing input" error.
    pub fn get(&self, field: Field) -> Result<u64, GhcbError> {
        if !self.is_valid(field) {
            return Err(GhcbError::MissingInput { field });
        }
        Ok(self.raw(field))
    }

    /// The field regardless of its valid bit.
    pub fn raw(&self, field: Field) -> u64 {
        let v = u64_at(&self.0[..], field.offset());
        if field == Field::Cpl {
            (v >> 24) & 0xFF
        } else {
            v
        }
    }

    /// Write `field` and set its valid bit.
    pub fn set(&mut self, field: Field, value: u64) {
        let off = field.offset();
        if field == Field::Cpl {
            self.0[0x0CB] = value as u8;
        } else {
            self.0[off..off + 8].copy_from_slice(&value.to_le_bytes());
        }
        let bit = field.valid_bit();
        self.0[VALID_BITMAP + bit / 8] |= 1 << (bit % 8);
    }

    /// Clear the whole valid bitmap (before the host writes its outputs).
    pub fn clear_valid(&mut self) {
        self.0[VALID_BITMAP..VALID_BITMAP + 16].fill(0);
    }

    /// The shared buffer.
    pub fn buffer(&self) -> &[u8] {
        &self.0[SHARED_BUFFER..SHARED_BUFFER + SHARED_BUFFER_SIZE]
    }

    /// The shared buffer, writable.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        &mut self.0[SHARED_BUFFER..SHARED_BUFFER + SHARED_BUFFER_SIZE]
    }
}
