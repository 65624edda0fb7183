//! The SEV hashes table for measured direct kernel boot: QEMU writes SHA-256 digests of the
//! kernel, initrd and command line into a page that OVMF later compares against what it loads
//! through fw_cfg. The page is launched as NORMAL, so the three digests become part of the
//! launch measurement (QEMU `target/i386/sev.c`, `sev_add_kernel_loader_hashes`; edk2
//! `OvmfPkg/Library/BlobVerifierLib/BlobVerifierSevHashes.c`).
//!
//! Layout, packed little-endian: table header `{GUID, u16 length}` then three entries
//! `{GUID, u16 length, [u8; 32] sha256}` in the order cmdline, initrd, kernel; `length` of the
//! table is 168 (header + entries, without padding), of an entry 50. The table is padded with
//! zeros to a multiple of 16 (176 bytes) and placed at the table GPA's offset within a zeroed
//! 4 KiB page.

use super::Guid;
use sha2::{Digest, Sha256};
use std::io::Read;

/// Header GUID of the table (9438d606-4f22-4cc9-b479-a793d411fd21).
pub const SEV_HASH_TABLE_HEADER_GUID: Guid = Guid::from_fields(
    0x9438_d606,
    0x4f22,
    0x4cc9,
    [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
);
/// Kernel entry GUID (4de79437-abd2-427f-b835-d5b172d2045b).
pub const SEV_KERNEL_ENTRY_GUID: Guid = Guid::from_fields(
    0x4de7_9437,
    0xabd2,
    0x427f,
    [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
);
/// Initrd entry GUID (44baf731-3a2f-4bd7-9af1-41e29169781d).
pub const SEV_INITRD_ENTRY_GUID: Guid = Guid::from_fields(
    0x44ba_f731,
    0x3a2f,
    0x4bd7,
    [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
);
/// Command-line entry GUID (97d02dd8-bd20-4c94-aa78-e7714d36ab2a).
pub const SEV_CMDLINE_ENTRY_GUID: Guid = Guid::from_fields(
    0x97d0_2dd8,
    0xbd20,
    0x4c94,
    [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
);

const ENTRY_SIZE: usize = 16 + 2 + 32;
/// Table length as recorded in its header (no padding).
pub const TABLE_SIZE: usize = 16 + 2 + 3 * ENTRY_SIZE;
/// Table size as placed in guest memory (padded to 16 bytes).
pub const PADDED_TABLE_SIZE: usize = TABLE_SIZE.div_ceil(16) * 16;

/// Errors building the hashes table.
#[derive(Debug, thiserror::Error)]
pub enum HashesError {
    /// The command line is passed to the guest as a C string.
    #[error("kernel command line contains a NUL byte at offset {offset}")]
    NulInCmdline { offset: usize },
    /// The table must fit in the page after its offset.
    #[error("hashes table at page offset {offset:#x} does not fit in a 4 KiB page")]
    TableCrossesPage { offset: usize },
    /// Reading a kernel or initrd failed.
    #[error("reading {what} for hashing: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// SHA-256 digests of a direct-boot kernel, initrd and command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevHashes {
    pub kernel: [u8; 32],
    pub initrd: [u8; 32],
    pub cmdline: [u8; 32],
}

impl SevHashes {
    /// Hash in-memory blobs. A missing initrd hashes as empty; a missing or empty command line
    /// as the single NUL byte QEMU passes.
    pub fn new(
        kernel: &[u8],
        initrd: Option<&[u8]>,
        cmdline: Option<&str>,
    ) -> Result<Self, HashesError> {
        Ok(Self {
            kernel: Sha256::digest(kernel).into(),
            initrd: Sha256::digest(initrd.unwrap_or_default()).into(),
            cmdline: cmdline_hash(cmdline)?,
        })
    }

    /// Hash streamed blobs, so multi-hundred-megabyte initrds need not be held in memory.
    pub fn from_readers(
        kernel: &mut dyn Read,
        initrd: Option<&mut dyn Read>,
        cmdline: Option<&str>,
    ) -> Result<Self, HashesError> {
        let kernel = sha256_reader(kernel, "kernel")?;
        let initrd = match initrd {
            Some(r) => sha256_reader(r, "initrd")?,
            None => Sha256::digest([]).into(),
        };
        Ok(Self {
            kernel,
            initrd,
            cmdline: cmdline_hash(cmdline)?,
        })
    }

    /// The padded table as QEMU writes it.
    pub fn table(&self) -> [u8; PADDED_TABLE_SIZE] {
        let mut t = [0u8; PADDED_TABLE_SIZE];
        t[0..16].copy_from_slice(&SEV_HASH_TABLE_HEADER_GUID.0);
        t[16..18].copy_from_slice(&(TABLE_SIZE as u16).to_le_bytes());
        let entries = [
            (SEV_CMDLINE_ENTRY_GUID, &self.cmdline),
            (SEV_INITRD_ENTRY_GUID, &self.initrd),
            (SEV_KERNEL_ENTRY_GUID, &self.kernel),
        ];
        for (i, (guid, hash)) in entries.iter().enumerate() {
            let off = 18 + i * ENTRY_SIZE;
            t[off..off + 16].copy_from_slice(&guid.0);
            t[off + 16..off + 18].copy_from_slice(&(ENTRY_SIZE as u16).to_le_bytes());
            t[off + 18..off + 50].copy_from_slice(*hash);
        }
        t
    }

    /// The launch page: zeros with the table at `offset` (the table GPA's offset in its page).
    pub fn page(&self, offset: usize) -> Result<Vec<u8>, HashesError> {
        if offset
            .checked_add(PADDED_TABLE_SIZE)
            .is_none_or(|end| end > 4096)
        {
            return Err(HashesError::TableCrossesPage { offset });
        }
        let mut page = vec![0u8; 4096];
        page[offset..offset + PADDED_TABLE_SIZE].copy_from_slice(&self.table());
        Ok(page)
    }
}

/// SHA-256 of a blob, the hash the table uses (exposed so reports hash inputs the same way).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn cmdline_hash(cmdline: Option<&str>) -> Result<[u8; 32], HashesError> {
    let cmdline = cmdline.unwrap_or_default();
    if let Some(offset) = cmdline.bytes().position(|b| b == 0) {
        return Err(HashesError::NulInCmdline { offset });
    }
    let mut h = Sha256::new();
    h.update(cmdline.as_bytes());
    h.update([0u8]);
    Ok(h.finalize().into())
}

fn sha256_reader(r: &mut dyn Read, what: &'static str) -> Result<[u8; 32], HashesError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(HashesError::Read { what, source }),
        };
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_qemu() {
        assert_eq!(TABLE_SIZE, 168);
        assert_eq!(PADDED_TABLE_SIZE, 176);
    }

    #[test]
    fn guid_bytes_are_mixed_endian() {
        assert_eq!(
            SEV_HASH_TABLE_HEADER_GUID.0,
            [
                0x06, 0xd6, 0x38, 0x94, 0x22, 0x4f, 0xc9, 0x4c, 0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11,
                0xfd, 0x21
            ]
        );
        assert_eq!(
            SEV_KERNEL_ENTRY_GUID.to_string(),
            "4de79437-abd2-427f-b835-d5b172d2045b"
        );
    }

    /// Expected SHA-256 of the padded table for kernel "K", initrd "I", cmdline "c=1",
    /// computed with Python (`hashlib`, `uuid.UUID(...).bytes_le`, `struct`).
    #[test]
    fn kat_table() {
        let h = SevHashes::new(b"K", Some(b"I"), Some("c=1")).unwrap();
        let t = h.table();
        assert_eq!(
            crate::hex::encode(&Sha256::digest(t)),
            "f89da3f7863d822f4062167fc13322bd988494f300102108c2fa93cd6299be3b"
        );
        assert!(t[TABLE_SIZE..].iter().all(|&b| b == 0));
    }

    #[test]
    fn defaults_are_empty_initrd_and_nul_cmdline() {
        let a = SevHashes::new(b"K", None, None).unwrap();
        let b = SevHashes::new(b"K", Some(b""), Some("")).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            crate::hex::encode(&a.cmdline),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn readers_match_slices() {
        let kernel = vec![7u8; 200_000];
        let mut k: &[u8] = &kernel;
        let mut i: &[u8] = b"initrd";
        let a = SevHashes::from_readers(&mut k, Some(&mut i), Some("x")).unwrap();
        let b = SevHashes::new(&kernel, Some(b"initrd"), Some("x")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_nul_and_page_overflow() {
        assert!(matches!(
            SevHashes::new(b"", None, Some("a\0b")),
            Err(HashesError::NulInCmdline { offset: 1 })
        ));
        let h = SevHashes::new(b"", None, None).unwrap();
        assert!(h.page(4096 - PADDED_TABLE_SIZE).is_ok());
        assert!(matches!(
            h.page(4096 - PADDED_TABLE_SIZE + 1),
            Err(HashesError::TableCrossesPage { .. })
        ));
        assert!(h.page(usize::MAX).is_err());
        let p = h.page(0xc00).unwrap();
        assert_eq!(&p[0xc00..0xc00 + PADDED_TABLE_SIZE], &h.table());
        assert!(p[..0xc00].iter().all(|&b| b == 0));
    }
}
