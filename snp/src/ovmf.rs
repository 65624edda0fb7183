//! OVMF firmware images as QEMU launches them under SEV-SNP: the GUIDed footer table at the
//! end of the flash image and the SEV metadata it points to.
//!
//! Where this sits: `podvisor measure --ovmf` and any OVMF-based launch read the image once
//! through [`OvmfImage::parse`], then [`launch`] turns it into the ordered list of launch pages
//! and the expected digest.
//!
//! Layout (edk2 `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm` and `X64/OvmfSevMetadata.asm`;
//! QEMU `hw/i386/pc_sysfw_ovmf.c`): the image is mapped so that it ends at 4 GiB. 32 bytes
//! before its end sits the footer entry, and the table grows downwards from there. Every entry
//! is `data || u16 size || GUID`, `size` counting all three parts; the footer entry's `size`
//! spans the whole table including itself. The SEV metadata entry holds a u32 offset *from the
//! end of the image* to a header `"ASEV", u32 size, u32 version = 1, u32 count` followed by
//! `count` section descriptors `{u32 gpa, u32 size, u32 type}`.
//!
//! Every offset and length in the image is checked before use; a malformed image is an error,
//! never a panic or a silently different digest.
//!
//! Stricter than `sev-snp-measure` on purpose, so that an accepted image has exactly one
//! meaning: images without SEV metadata (OVMF builds without SNP support; the reference tool
//! measures them without any metadata pages, a guest that cannot boot), secrets or CPUID
//! sections that are not exactly one page (QEMU launches `size` bytes, the reference tool one
//! page), overlapping sections, sections reaching into the flash window and duplicate table
//! GUIDs are all refused.

pub mod hashes;
pub mod launch;
pub mod vcpu;

use std::fmt;

/// Where the firmware image ends in guest physical memory (the reset vector is at 4 GiB − 16).
pub const FOUR_GIB: u64 = 1 << 32;
/// Largest firmware image accepted; real OVMF builds are 2–4 MiB, and the flash window below
/// 4 GiB must leave room for the MMIO hole.
pub const MAX_IMAGE_SIZE: usize = 64 << 20;
/// Bytes between the footer entry and the end of the image (reset vector and padding).
const FOOTER_TAIL: usize = 32;
/// Size of an entry trailer: u16 size + 16-byte GUID.
const ENTRY_TRAILER: usize = 18;
/// Size of the SEV metadata header.
const METADATA_HEADER: usize = 16;
/// Size of one SEV metadata section descriptor.
const SECTION_DESC: usize = 12;

/// Errors reading an OVMF image.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OvmfError {
    /// The image is mapped page by page below 4 GiB.
    #[error("firmware image size {size:#x} is not a non-zero multiple of 4 KiB")]
    BadImageSize { size: usize },
    /// Refused before reading to bound memory use.
    #[error("firmware image is {size} bytes, more than the {MAX_IMAGE_SIZE}-byte limit")]
    ImageTooLarge { size: u64 },
    /// No footer GUID 32 bytes before the end: not an OVMF with a GUIDed table.
    #[error("no OVMF footer table (GUID {OVMF_TABLE_FOOTER_GUID} not found 50 bytes before the end of the image)")]
    NoFooter,
    /// The footer's total size is smaller than its own trailer or larger than the image.
    #[error("OVMF footer table size {size} is invalid for an image of {image} bytes")]
    BadFooterSize { size: u16, image: usize },
    /// An entry's size is shorter than its trailer or runs past the start of the table.
    #[error("OVMF table entry {guid} has invalid size {size} ({remaining} table bytes left)")]
    BadEntrySize {
        guid: Guid,
        size: u16,
        remaining: usize,
    },
    /// Two entries with the same GUID make the image ambiguous.
    #[error("OVMF table has more than one entry with GUID {guid}")]
    DuplicateEntry { guid: Guid },
    /// A table entry is too short for the value it must hold.
    #[error("OVMF table entry {guid} has {len} data bytes, needs at least {need}")]
    ShortEntry { guid: Guid, len: usize, need: usize },
    /// A required table entry is absent.
    #[error(
        "OVMF table has no {what} entry (GUID {guid}); is this an SEV-SNP capable OVMF build?"
    )]
    MissingEntry { what: &'static str, guid: Guid },
    /// The metadata offset points outside the image or the header does not fit.
    #[error("SEV metadata offset {offset:#x} from the end is outside the {image}-byte image")]
    MetadataOutOfImage { offset: u32, image: usize },
    /// Wrong signature in the metadata header.
    #[error("SEV metadata signature is {found:02x?}, expected \"ASEV\"")]
    BadMetadataSignature { found: [u8; 4] },
    /// Only version 1 of the metadata is defined.
    #[error("SEV metadata version {version} is not supported (expected 1)")]
    BadMetadataVersion { version: u32 },
    /// Header size inconsistent with the descriptor count or the image.
    #[error("SEV metadata size {size} cannot hold {count} sections within the image")]
    BadMetadataSize { size: u32, count: u32 },
    /// A section type this crate does not know how to launch.
    #[error("SEV metadata section {index} has unknown type {kind:#x}")]
    UnknownSectionType { index: usize, kind: u32 },
    /// Sections are guest-physical ranges launched page by page.
    #[error("SEV metadata section {index} ({kind}) at {gpa:#x} size {size:#x} is empty or not 4 KiB aligned")]
    UnalignedSection {
        index: usize,
        kind: SectionKind,
        gpa: u32,
        size: u32,
    },
    /// Sections must lie below the flash window and not overlap each other.
    #[error("SEV metadata section {index} ({kind}) at {gpa:#x} size {size:#x} overlaps {other}")]
    OverlappingSection {
        index: usize,
        kind: SectionKind,
        gpa: u32,
        size: u32,
        other: String,
    },
    /// Secrets and CPUID sections are single pages; tools disagree on larger ones.
    #[error("SEV metadata section {index} ({kind}) must be exactly one page, is {size:#x} bytes")]
    SinglePageSection {
        index: usize,
        kind: SectionKind,
        size: u32,
    },
    /// An SNP launch needs the secrets page and the CPUID page exactly once.
    #[error("SEV metadata declares {count} {kind} sections, expected exactly one")]
    SectionCount { kind: SectionKind, count: usize },
}

/// A GUID in its mixed-endian on-disk form (first three fields little-endian, as EFI stores
/// them).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Build from the textual fields `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Marks the end of the GUIDed table (96b582de-1fb2-45f7-baea-a366c55a082d).
pub const OVMF_TABLE_FOOTER_GUID: Guid = Guid::from_fields(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// SEV-ES AP reset block: u32 address where APs start (00f771de-1a7e-4fcb-890e-68c77e2fb44e).
pub const SEV_ES_RESET_BLOCK_GUID: Guid = Guid::from_fields(
    0x00f7_71de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// SEV metadata: u32 offset from the image end (dc886566-984a-4798-a75e-5585a7bf67cc).
pub const OVMF_SEV_METADATA_GUID: Guid = Guid::from_fields(
    0xdc88_6566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);
/// Kernel hashes table: u32 GPA, then its size (7255371f-3a3b-4b04-927b-1da6efa8d454).
pub const SEV_HASH_TABLE_RV_GUID: Guid = Guid::from_fields(
    0x7255_371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);

/// Kinds of SEV metadata sections (edk2 `OvmfSevMetadata.asm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// Memory the SEC phase uses before it can validate pages itself (type 1).
    SnpSecMemory,
    /// The SNP secrets page (type 2).
    SnpSecrets,
    /// The SNP CPUID table page (type 3).
    Cpuid,
    /// The SVSM calling-area page (type 4).
    SvsmCaa,
    /// The page holding the SEV kernel/initrd/cmdline hashes table (type 0x10).
    SnpKernelHashes,
}

impl SectionKind {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(SectionKind::SnpSecMemory),
            2 => Some(SectionKind::SnpSecrets),
            3 => Some(SectionKind::Cpuid),
            4 => Some(SectionKind::SvsmCaa),
            0x10 => Some(SectionKind::SnpKernelHashes),
            _ => None,
        }
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionKind::SnpSecMemory => "SNP_SEC_MEMORY",
            SectionKind::SnpSecrets => "SNP_SECRETS",
            SectionKind::Cpuid => "CPUID",
            SectionKind::SvsmCaa => "SVSM_CAA",
            SectionKind::SnpKernelHashes => "SNP_KERNEL_HASHES",
        })
    }
}

/// One validated SEV metadata section: a page-aligned guest-physical range below the flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    pub gpa: u32,
    pub size: u32,
}

impl Section {
    /// Number of 4 KiB pages in the section.
    pub fn pages(&self) -> u64 {
        u64::from(self.size) / 4096
    }
}

/// A parsed, validated OVMF image.
#[derive(Debug, Clone)]
pub struct OvmfImage {
    data: Vec<u8>,
    sections: Vec<Section>,
    ap_reset_eip: u32,
    hashes_table: Option<u32>,
}

impl OvmfImage {
    /// Parse and validate an image held in memory.
    pub fn parse(data: Vec<u8>) -> Result<Self, OvmfError> {
        if data.is_empty() || data.len() % 4096 != 0 {
            return Err(OvmfError::BadImageSize { size: data.len() });
        }
        if data.len() > MAX_IMAGE_SIZE {
            return Err(OvmfError::ImageTooLarge {
                size: data.len() as u64,
            });
        }
        let table = parse_footer_table(&data)?;
        let reset = find_entry(&table, SEV_ES_RESET_BLOCK_GUID, "SEV-ES AP reset block", 4)?;
        let ap_reset_eip = le32(reset, 0);
        let meta = find_entry(&table, OVMF_SEV_METADATA_GUID, "SEV metadata", 4)?;
        let sections = parse_metadata(&data, le32(meta, 0))?;
        let hashes_table = match table.iter().find(|e| e.guid == SEV_HASH_TABLE_RV_GUID) {
            Some(_) => Some(le32(
                find_entry(&table, SEV_HASH_TABLE_RV_GUID, "SEV hash table", 4)?,
                0,
            )),
            None => None,
        };
        let image = OvmfImage {
            data,
            sections,
            ap_reset_eip,
            hashes_table,
        };
        image.check_sections()?;
        log::debug!(
            "OVMF image: {} bytes at {:#x}, {} SEV sections, AP reset {:#x}",
            image.data.len(),
            image.gpa(),
            image.sections.len(),
            image.ap_reset_eip
        );
        Ok(image)
    }

    /// The image bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// GPA of the first byte: the image ends at 4 GiB.
    pub fn gpa(&self) -> u64 {
        FOUR_GIB - self.data.len() as u64
    }

    /// SEV metadata sections in image order (the launch order).
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// EIP at which application processors start (SEV-ES AP reset block).
    pub fn ap_reset_eip(&self) -> u32 {
        self.ap_reset_eip
    }

    /// GPA of the kernel hashes table, if the build declares one with a non-zero GPA.
    pub fn hashes_table_gpa(&self) -> Option<u32> {
        self.hashes_table.filter(|&gpa| gpa != 0)
    }

    /// The single section of `kind`, if present.
    pub fn section(&self, kind: SectionKind) -> Option<&Section> {
        self.sections.iter().find(|s| s.kind == kind)
    }

    /// Shape checks that make the launch well defined: aligned, non-overlapping sections below
    /// the flash, one secrets and one CPUID page.
    fn check_sections(&self) -> Result<(), OvmfError> {
        let flash = (self.gpa(), FOUR_GIB);
        for (index, s) in self.sections.iter().enumerate() {
            if s.size == 0 || s.gpa % 4096 != 0 || s.size % 4096 != 0 {
                return Err(OvmfError::UnalignedSection {
                    index,
                    kind: s.kind,
                    gpa: s.gpa,
                    size: s.size,
                });
            }
            let start = u64::from(s.gpa);
            let end = start + u64::from(s.size);
            let overlap = |other: String| OvmfError::OverlappingSection {
                index,
                kind: s.kind,
                gpa: s.gpa,
                size: s.size,
                other,
            };
            if end > flash.0 {
                return Err(overlap(format!(
                    "the firmware image at {:#x}..{:#x}",
                    flash.0, flash.1
                )));
            }
            for (j, o) in self.sections.iter().enumerate().take(index) {
                let (os, oe) = (u64::from(o.gpa), u64::from(o.gpa) + u64::from(o.size));
                if start < oe && os < end {
                    return Err(overlap(format!("section {j} ({})", o.kind)));
                }
            }
            if matches!(s.kind, SectionKind::SnpSecrets | SectionKind::Cpuid) && s.size != 4096 {
                return Err(OvmfError::SinglePageSection {
                    index,
                    kind: s.kind,
                    size: s.size,
                });
            }
        }
        for kind in [SectionKind::SnpSecrets, SectionKind::Cpuid] {
            let count = self.sections.iter().filter(|s| s.kind == kind).count();
            if count != 1 {
                return Err(OvmfError::SectionCount { kind, count });
            }
        }
        let hashes = self
            .sections
            .iter()
            .filter(|s| s.kind == SectionKind::SnpKernelHashes)
            .count();
        if hashes > 1 {
            return Err(OvmfError::SectionCount {
                kind: SectionKind::SnpKernelHashes,
                count: hashes,
            });
        }
        Ok(())
    }
}

/// One entry of the footer table.
#[derive(Debug, Clone)]
struct TableEntry {
    guid: Guid,
    data: Vec<u8>,
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn guid_at(b: &[u8], off: usize) -> Guid {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[off..off + 16]);
    Guid(g)
}

/// Walk the table backwards from the footer (QEMU `pc_system_parse_ovmf_flash`).
fn parse_footer_table(data: &[u8]) -> Result<Vec<TableEntry>, OvmfError> {
    // The image is at least one page, so the footer trailer fits.
    let footer = data.len() - FOOTER_TAIL - ENTRY_TRAILER;
    if guid_at(data, footer + 2) != OVMF_TABLE_FOOTER_GUID {
        return Err(OvmfError::NoFooter);
    }
    let total = le16(data, footer);
    let table_len = usize::from(total)
        .checked_sub(ENTRY_TRAILER)
        .filter(|&len| len <= footer)
        .ok_or(OvmfError::BadFooterSize {
            size: total,
            image: data.len(),
        })?;
    let table = &data[footer - table_len..footer];
    let mut end = table.len();
    let mut entries: Vec<TableEntry> = Vec::new();
    while end > 0 {
        if end < ENTRY_TRAILER {
            return Err(OvmfError::BadFooterSize {
                size: total,
                image: data.len(),
            });
        }
        let guid = guid_at(table, end - 16);
        let size = le16(table, end - ENTRY_TRAILER);
        let len = usize::from(size);
        if len < ENTRY_TRAILER || len > end {
            return Err(OvmfError::BadEntrySize {
                guid,
                size,
                remaining: end,
            });
        }
        if entries.iter().any(|e| e.guid == guid) {
            return Err(OvmfError::DuplicateEntry { guid });
        }
        entries.push(TableEntry {
            guid,
            data: table[end - len..end - ENTRY_TRAILER].to_vec(),
        });
        end -= len;
    }
    Ok(entries)
}

fn find_entry<'a>(
    table: &'a [TableEntry],
    guid: Guid,
    what: &'static str,
    need: usize,
) -> Result<&'a [u8], OvmfError> {
    let entry = table
        .iter()
        .find(|e| e.guid == guid)
        .ok_or(OvmfError::MissingEntry { what, guid })?;
    if entry.data.len() < need {
        return Err(OvmfError::ShortEntry {
            guid,
            len: entry.data.len(),
            need,
        });
    }
    Ok(&entry.data)
}

/// Read the SEV metadata header and its section descriptors.
fn parse_metadata(data: &[u8], offset: u32) -> Result<Vec<Section>, OvmfError> {
    let out_of_image = OvmfError::MetadataOutOfImage {
        offset,
        image: data.len(),
    };
    let start = data
        .len()
        .checked_sub(offset as usize)
        .ok_or(out_of_image.clone())?;
    if start + METADATA_HEADER > data.len() {
        return Err(out_of_image);
    }
    let mut sig = [0u8; 4];
    sig.copy_from_slice(&data[start..start + 4]);
    if &sig != b"ASEV" {
        return Err(OvmfError::BadMetadataSignature { found: sig });
    }
    let size = le32(data, start + 4);
    let version = le32(data, start + 8);
    let count = le32(data, start + 12);
    if version != 1 {
        return Err(OvmfError::BadMetadataVersion { version });
    }
    let bad_size = OvmfError::BadMetadataSize { size, count };
    let needed = (count as usize)
        .checked_mul(SECTION_DESC)
        .and_then(|n| n.checked_add(METADATA_HEADER))
        .ok_or(bad_size.clone())?;
    if (size as usize) < needed || start + size as usize > data.len() {
        return Err(bad_size);
    }
    let mut sections = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let off = start + METADATA_HEADER + index * SECTION_DESC;
        let raw_kind = le32(data, off + 8);
        let kind = SectionKind::from_u32(raw_kind).ok_or(OvmfError::UnknownSectionType {
            index,
            kind: raw_kind,
        })?;
        sections.push(Section {
            kind,
            gpa: le32(data, off),
            size: le32(data, off + 4),
        });
    }
    Ok(sections)
}

#[cfg(test)]
mod tests;
