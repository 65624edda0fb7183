//! The host's certificate table for extended guest requests (GHCB spec 56421 §4.1.8.1,
//! "SNP Extended Guest Request"): what the guest finds in its certificate buffer next to an
//! attestation report, usually the VCEK (or VLEK), ASK and ARK certificates that let it, or
//! whoever it hands them to, check the report's signature without asking AMD's key server.
//!
//! Layout: a table of 24-byte entries `{GUID (16 bytes), offset: u32, length: u32}` (little
//! endian), ended by an entry of 24 zero bytes, followed by the certificates; each offset
//! counts from the start of the table. GUIDs are stored in the byte order of their text form
//! (VCEK 63da758d-e664-… is `63 da 75 8d e6 64 …`). The blob is handed to the guest as is, so
//! it is checked once, when it is loaded: a table without terminator, an entry pointing into
//! the table or past the end, an empty certificate or a GUID listed twice is a configuration
//! error.

use std::path::Path;

/// Bytes of one table entry (and of the terminator).
pub const ENTRY_BYTES: usize = 24;
/// Largest blob accepted: far beyond any certificate chain, small enough that a wrong file
/// (a disk image, say) is refused instead of copied into every guest that asks.
pub const MAX_BLOB_BYTES: usize = 1 << 20;

/// Why a certificate blob is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertTableError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0} bytes is more than the {MAX_BLOB_BYTES} bytes a certificate table may have")]
    TooLarge(usize),
    #[error("the table has no terminating entry of {ENTRY_BYTES} zero bytes")]
    NoTerminator,
    #[error("entry {index} has a zero GUID but is not the terminator")]
    ZeroGuid { index: usize },
    #[error("entry {index} ({guid}) is an empty certificate")]
    Empty { index: usize, guid: String },
    #[error(
        "entry {index} ({guid}) at {offset:#x}+{length:#x} is not inside the certificate area \
         {start:#x}..{end:#x}"
    )]
    OutOfBounds {
        index: usize,
        guid: String,
        offset: u32,
        length: u32,
        start: usize,
        end: usize,
    },
    #[error("GUID {0} is listed twice")]
    Duplicate(String),
}

/// One certificate of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertEntry {
    pub guid: [u8; 16],
    pub offset: u32,
    pub length: u32,
}

/// A checked certificate table, kept as the exact bytes the guest receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertTable {
    blob: Vec<u8>,
    entries: Vec<CertEntry>,
}

/// The GUIDs the GHCB spec names, in table byte order (the text form's bytes as written, the
/// order `libuuid`'s `uuid_parse` and AMD's tools produce).
pub const VCEK_GUID: [u8; 16] = guid(0x63da758d, 0xe664, 0x4564, 0xadc5, 0xf4b93be8accd);
pub const VLEK_GUID: [u8; 16] = guid(0xa8074bc2, 0xa25a, 0x483e, 0xaae6, 0x39c045a0b8a1);
pub const ASK_GUID: [u8; 16] = guid(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f, 0x05aef327c782);
pub const ARK_GUID: [u8; 16] = guid(0xc0b406a4, 0xa803, 0x4952, 0x9743, 0x3fb6014cd0ae);

const fn guid(a: u32, b: u16, c: u16, d: u16, e: u64) -> [u8; 16] {
    let (a, b, c, d, e) = (
        a.to_be_bytes(),
        b.to_be_bytes(),
        c.to_be_bytes(),
        d.to_be_bytes(),
        e.to_be_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], e[2], e[3], e[4], e[5], e[6],
        e[7],
    ]
}

/// The GUID in its usual text form, with the certificate's name when the spec defines it.
pub fn guid_text(g: &[u8; 16]) -> String {
    let hex = |r: std::ops::Range<usize>| {
        g.get(r)
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let text = format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    );
    let name = match *g {
        VCEK_GUID => " (VCEK)",
        VLEK_GUID => " (VLEK)",
        ASK_GUID => " (ASK)",
        ARK_GUID => " (ARK)",
        _ => "",
    };
    format!("{text}{name}")
}

impl CertTable {
    /// Checks `blob` and keeps it.
    pub fn parse(blob: Vec<u8>) -> Result<Self, CertTableError> {
        if blob.len() > MAX_BLOB_BYTES {
            return Err(CertTableError::TooLarge(blob.len()));
        }
        let mut entries = Vec::new();
        let mut table_end = None;
        for (index, raw) in blob.chunks_exact(ENTRY_BYTES).enumerate() {
            if raw.iter().all(|b| *b == 0) {
                table_end = Some((index + 1) * ENTRY_BYTES);
                break;
            }
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&raw[..16]);
            if guid == [0; 16] {
                return Err(CertTableError::ZeroGuid { index });
            }
            let word =
                |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
            entries.push(CertEntry {
                guid,
                offset: word(16),
                length: word(20),
            });
        }
        let start = table_end.ok_or(CertTableError::NoTerminator)?;
        let end = blob.len();
        for (index, e) in entries.iter().enumerate() {
            let guid = guid_text(&e.guid);
            if e.length == 0 {
                return Err(CertTableError::Empty { index, guid });
            }
            let from = e.offset as usize;
            let inside = from >= start
                && from
                    .checked_add(e.length as usize)
                    .is_some_and(|to| to <= end);
            if !inside {
                return Err(CertTableError::OutOfBounds {
                    index,
                    guid,
                    offset: e.offset,
                    length: e.length,
                    start,
                    end,
                });
            }
            if entries[..index].iter().any(|o| o.guid == e.guid) {
                return Err(CertTableError::Duplicate(guid));
            }
        }
        Ok(Self { blob, entries })
    }

    /// Reads and checks the table in `path`.
    pub fn load(path: &Path) -> Result<Self, CertTableError> {
        let read_err = |reason: String| CertTableError::Read {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
        if meta.len() > MAX_BLOB_BYTES as u64 {
            return Err(CertTableError::TooLarge(
                usize::try_from(meta.len()).unwrap_or(usize::MAX),
            ));
        }
        let blob = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
        Self::parse(blob)
    }

    /// The bytes the guest receives.
    pub fn bytes(&self) -> &[u8] {
        &self.blob
    }

    /// The certificates listed.
    pub fn entries(&self) -> &[CertEntry] {
        &self.entries
    }

    /// A table of `certs` (GUID, DER bytes), laid out after the terminator in order.
    pub fn build(certs: &[([u8; 16], &[u8])]) -> Result<Self, CertTableError> {
        let mut offset = (certs.len() + 1) * ENTRY_BYTES;
        let mut table = Vec::new();
        let mut data = Vec::new();
        for (guid, der) in certs {
            table.extend_from_slice(guid);
            table.extend_from_slice(&u32::try_from(offset).unwrap_or(u32::MAX).to_le_bytes());
            table.extend_from_slice(&u32::try_from(der.len()).unwrap_or(u32::MAX).to_le_bytes());
            data.extend_from_slice(der);
            offset += der.len();
        }
        table.extend_from_slice(&[0u8; ENTRY_BYTES]);
        table.extend_from_slice(&data);
        Self::parse(table)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const VCEK: [u8; 16] = [1; 16];
    const ASK: [u8; 16] = [2; 16];

    fn entry(guid: [u8; 16], offset: u32, length: u32) -> Vec<u8> {
        let mut e = guid.to_vec();
        e.extend_from_slice(&offset.to_le_bytes());
        e.extend_from_slice(&length.to_le_bytes());
        e
    }

    #[test]
    fn a_built_table_parses_back_and_keeps_its_bytes() {
        let t = CertTable::build(&[(VCEK, b"vcek-der"), (ASK, b"ask")]).unwrap();
        assert_eq!(t.entries().len(), 2);
        assert_eq!(t.entries()[0].offset, 72);
        assert_eq!(&t.bytes()[72..80], b"vcek-der");
        assert_eq!(&t.bytes()[80..83], b"ask");
        assert_eq!(CertTable::parse(t.bytes().to_vec()).unwrap(), t);
        let empty = CertTable::parse(vec![0; 24]).unwrap();
        assert!(empty.entries().is_empty());
    }

    #[test]
    fn malformed_tables_are_refused_with_the_reason() {
        let good = CertTable::build(&[(VCEK, b"vcek-der")])
            .unwrap()
            .bytes()
            .to_vec();
        let with_entry = |e: Vec<u8>| {
            let mut b = e;
            b.extend_from_slice(&[0; 24]);
            b.extend_from_slice(b"certificate");
            b
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "no terminating"),
            (good[..24].to_vec(), "no terminating"),
            (with_entry(entry([0; 16], 48, 4)), "zero GUID"),
            (with_entry(entry(VCEK, 48, 0)), "empty certificate"),
            (with_entry(entry(VCEK, 8, 4)), "not inside"), // into the table
            (with_entry(entry(VCEK, 50, 100)), "not inside"), // past the end
            (with_entry(entry(VCEK, u32::MAX, 4)), "not inside"),
            (
                {
                    let mut b = entry(VCEK, 72, 4);
                    b.extend(entry(VCEK, 76, 4));
                    b.extend_from_slice(&[0; 24]);
                    b.extend_from_slice(b"abcdefgh");
                    b
                },
                "listed twice",
            ),
            (vec![0; MAX_BLOB_BYTES + 1], "more than"),
        ];
        for (blob, want) in cases {
            let err = CertTable::parse(blob).unwrap_err().to_string();
            assert!(err.contains(want), "{err} (wanted {want})");
        }
    }

    #[test]
    fn guids_print_in_their_usual_form() {
        assert_eq!(
            VCEK_GUID,
            [
                0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8,
                0xac, 0xcd
            ]
        );
        assert_eq!(
            guid_text(&VCEK_GUID),
            "63da758d-e664-4564-adc5-f4b93be8accd (VCEK)"
        );
        assert_eq!(
            guid_text(&ARK_GUID),
            "c0b406a4-a803-4952-9743-3fb6014cd0ae (ARK)"
        );
        assert_eq!(guid_text(&[1; 16]), "01010101-0101-0101-0101-010101010101");
    }
}
