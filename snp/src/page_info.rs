//! The SNP launch digest: the PAGE_INFO hash chain that firmware extends on every
//! SNP_LAUNCH_UPDATE (AMD SEV-SNP Firmware ABI 56860, §8.17 "SNP_LAUNCH_UPDATE", table
//! "Layout of the PAGE_INFO Structure").
//!
//! Every launch path in the crate (OVMF, IGVM, the software platform model) measures through
//! [`LaunchDigest`], so one chain implementation decides the digest bit for bit. The chain is
//! order-sensitive: callers must extend in exactly the order the pages reach firmware.
//!
//! Contract for callers:
//! - [`LaunchDigest::new`] starts at 48 zero bytes (SNP_LAUNCH_START).
//! - [`LaunchDigest::extend`] measures one 4 KiB page; `contents` is hashed only for
//!   [`PageType::Normal`] and [`PageType::Vmsa`] (zero-padded to 4 KiB when shorter) and ignored
//!   for every other type, whose PAGE_INFO carries 48 zero bytes instead.
//! - [`LaunchDigest::extend_pages`] / [`LaunchDigest::extend_blank`] are loops over `extend`.

use sha2::{Digest, Sha384};
use std::fmt;

/// Size of a launch page; KVM always issues 4 KiB LAUNCH_UPDATEs.
pub const PAGE_SIZE: usize = 4096;
/// Size of the launch digest (SHA-384 output).
pub const LAUNCH_DIGEST_SIZE: usize = 48;
/// Size of PAGE_INFO, also stored in its LENGTH field.
pub const PAGE_INFO_SIZE: usize = 0x70;
/// GPA under which KVM (and sev-snp-measure) measures every VMSA: the all-ones GPA masked to
/// 52 bits and page-aligned (KVM `sev.c`, `snp_launch_update_vmsa`).
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// Highest guest physical address bit the RMP can describe (52-bit physical addresses).
const MAX_GPA: u64 = (1 << 52) - 1;

/// Errors while extending the launch digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageInfoError {
    /// PAGE_INFO.GPA is a page address; firmware rejects an unaligned one.
    #[error("launch page GPA {gpa:#x} is not 4 KiB aligned")]
    UnalignedGpa { gpa: u64 },
    /// The GPA does not fit the 52-bit physical address space.
    #[error("launch page GPA {gpa:#x} is beyond the 52-bit guest physical address space")]
    GpaTooLarge { gpa: u64 },
    /// More than one page of data was passed for a single page.
    #[error("launch page at GPA {gpa:#x} has {len} bytes of contents, more than one 4 KiB page")]
    ContentsTooLarge { gpa: u64, len: usize },
    /// A range of pages runs past the end of the physical address space.
    #[error("launch range at GPA {gpa:#x} with {pages} pages overflows the address space")]
    RangeOverflow { gpa: u64, pages: u64 },
    /// A byte that is not one of the page types of ABI §8.17 table "Page Types".
    #[error("unknown SNP page type {0:#x}")]
    UnknownPageType(u8),
}

/// SNP launch page types (Firmware ABI §8.17, table "Page Types"; KVM's
/// `KVM_SEV_SNP_PAGE_TYPE_*` use the same values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageType {
    /// Data encrypted in place; its SHA-384 is measured.
    Normal = 1,
    /// A vCPU save area; measured like a normal page, issued only by KVM itself.
    Vmsa = 2,
    /// Firmware zero-fills the page; measured without contents.
    Zero = 3,
    /// Contents encrypted but not measured.
    Unmeasured = 4,
    /// Firmware writes the secrets page; measured without contents.
    Secrets = 5,
    /// Firmware validates a CPUID table; measured without contents.
    Cpuid = 6,
}

impl PageType {
    /// Whether PAGE_INFO.CONTENTS holds the page hash (true) or 48 zero bytes (false).
    pub fn measures_contents(self) -> bool {
        matches!(self, PageType::Normal | PageType::Vmsa)
    }

    /// The firmware encoding.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for PageType {
    type Error = PageInfoError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            1 => Ok(PageType::Normal),
            2 => Ok(PageType::Vmsa),
            3 => Ok(PageType::Zero),
            4 => Ok(PageType::Unmeasured),
            5 => Ok(PageType::Secrets),
            6 => Ok(PageType::Cpuid),
            other => Err(PageInfoError::UnknownPageType(other)),
        }
    }
}

/// One PAGE_INFO record, the 112-byte input of each chain step (ABI §8.17, PAGE_INFO table).
///
/// The four bytes at 0x64 hold VMPL permission bytes and a reserved byte. KVM passes no VMPL
/// permissions, so they are zero in every launch this crate models; they are kept as one
/// opaque field because references disagree on their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageInfo {
    /// DIGEST_CUR: the launch digest before this page.
    pub digest_cur: [u8; LAUNCH_DIGEST_SIZE],
    /// CONTENTS: SHA-384 of the page, or zeros for types that do not measure contents.
    pub contents: [u8; LAUNCH_DIGEST_SIZE],
    /// PAGE_TYPE.
    pub page_type: PageType,
    /// IMI_PAGE (bit 0 at 0x63): only migration-agent images set it.
    pub imi_page: bool,
    /// Bytes 0x64..0x68: VMPL permissions and reserved, zero for KVM launches.
    pub vmpl_perms: [u8; 4],
    /// GPA: the guest physical byte address of the page.
    pub gpa: u64,
}

impl PageInfo {
    /// The packed little-endian encoding that firmware hashes.
    pub fn to_bytes(&self) -> [u8; PAGE_INFO_SIZE] {
        let mut out = [0u8; PAGE_INFO_SIZE];
        out[0x00..0x30].copy_from_slice(&self.digest_cur);
        out[0x30..0x60].copy_from_slice(&self.contents);
        out[0x60..0x62].copy_from_slice(&(PAGE_INFO_SIZE as u16).to_le_bytes());
        out[0x62] = self.page_type.as_u8();
        out[0x63] = u8::from(self.imi_page);
        out[0x64..0x68].copy_from_slice(&self.vmpl_perms);
        out[0x68..0x70].copy_from_slice(&self.gpa.to_le_bytes());
        out
    }
}

/// SHA-384 of one page, zero-padded to 4 KiB (igvm crate and firmware agree: the page is
/// always 4 KiB; a shorter source is the start of a zeroed page).
pub fn page_hash(contents: &[u8]) -> Result<[u8; LAUNCH_DIGEST_SIZE], PageInfoError> {
    if contents.len() > PAGE_SIZE {
        return Err(PageInfoError::ContentsTooLarge {
            gpa: 0,
            len: contents.len(),
        });
    }
    let mut hasher = Sha384::new();
    hasher.update(contents);
    let pad = [0u8; PAGE_SIZE];
    hasher.update(&pad[..PAGE_SIZE - contents.len()]);
    Ok(hasher.finalize().into())
}

/// The running SNP launch digest (the guest context's LD).
#[derive(Clone, PartialEq, Eq)]
pub struct LaunchDigest {
    ld: [u8; LAUNCH_DIGEST_SIZE],
    pages: u64,
}

impl Default for LaunchDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LaunchDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaunchDigest")
            .field("ld", &self.to_hex())
            .field("pages", &self.pages)
            .finish()
    }
}

impl fmt::Display for LaunchDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl LaunchDigest {
    /// The digest right after SNP_LAUNCH_START: 48 zero bytes.
    pub fn new() -> Self {
        Self {
            ld: [0u8; LAUNCH_DIGEST_SIZE],
            pages: 0,
        }
    }

    /// Continue a chain from a known intermediate digest (e.g. a precomputed firmware-volume
    /// digest, as `sev-snp-measure --snp-ovmf-hash` does).
    pub fn from_seed(seed: [u8; LAUNCH_DIGEST_SIZE]) -> Self {
        Self { ld: seed, pages: 0 }
    }

    /// The current digest bytes.
    pub fn as_bytes(&self) -> &[u8; LAUNCH_DIGEST_SIZE] {
        &self.ld
    }

    /// How many pages were measured since creation.
    pub fn pages_measured(&self) -> u64 {
        self.pages
    }

    /// Lower-case hex, the format attestation tooling prints.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.ld)
    }

    /// Measure one 4 KiB page at `gpa` as `page_type`.
    ///
    /// `contents` (at most 4 KiB, zero-padded) is hashed for NORMAL and VMSA pages and ignored
    /// for every other type, so callers may pass the source buffer regardless of type.
    pub fn extend(
        &mut self,
        gpa: u64,
        page_type: PageType,
        contents: &[u8],
    ) -> Result<(), PageInfoError> {
        check_gpa(gpa)?;
        if contents.len() > PAGE_SIZE {
            return Err(PageInfoError::ContentsTooLarge {
                gpa,
                len: contents.len(),
            });
        }
        let contents = if page_type.measures_contents() {
            page_hash(contents)?
        } else {
            [0u8; LAUNCH_DIGEST_SIZE]
        };
        let info = PageInfo {
            digest_cur: self.ld,
            contents,
            page_type,
            imi_page: false,
            vmpl_perms: [0; 4],
            gpa,
        };
        self.ld = Sha384::digest(info.to_bytes()).into();
        self.pages += 1;
        log::trace!("measured {page_type:?} page at {gpa:#x}");
        Ok(())
    }

    /// Measure `data` as consecutive pages starting at `gpa`; the last page is zero-padded.
    /// Empty `data` measures nothing.
    pub fn extend_pages(
        &mut self,
        gpa: u64,
        page_type: PageType,
        data: &[u8],
    ) -> Result<(), PageInfoError> {
        let pages = data.len().div_ceil(PAGE_SIZE) as u64;
        check_range(gpa, pages)?;
        for (i, chunk) in data.chunks(PAGE_SIZE).enumerate() {
            self.extend(gpa + (i as u64) * PAGE_SIZE as u64, page_type, chunk)?;
        }
        Ok(())
    }

    /// Measure `pages` consecutive pages starting at `gpa` with no source data (all-zero pages
    /// for NORMAL/VMSA; the contents are irrelevant for every other type).
    pub fn extend_blank(
        &mut self,
        gpa: u64,
        page_type: PageType,
        pages: u64,
    ) -> Result<(), PageInfoError> {
        check_range(gpa, pages)?;
        for i in 0..pages {
            self.extend(gpa + i * PAGE_SIZE as u64, page_type, &[])?;
        }
        Ok(())
    }
}

fn check_gpa(gpa: u64) -> Result<(), PageInfoError> {
    if gpa % PAGE_SIZE as u64 != 0 {
        return Err(PageInfoError::UnalignedGpa { gpa });
    }
    if gpa > MAX_GPA {
        return Err(PageInfoError::GpaTooLarge { gpa });
    }
    Ok(())
}

/// Checks the whole range up front so a failing range leaves the digest untouched.
fn check_range(gpa: u64, pages: u64) -> Result<(), PageInfoError> {
    check_gpa(gpa)?;
    if pages == 0 {
        return Ok(());
    }
    let last = pages
        .checked_sub(1)
        .and_then(|n| n.checked_mul(PAGE_SIZE as u64))
        .and_then(|off| gpa.checked_add(off))
        .ok_or(PageInfoError::RangeOverflow { gpa, pages })?;
    if last > MAX_GPA {
        return Err(PageInfoError::RangeOverflow { gpa, pages });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
