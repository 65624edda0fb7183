//! Readers for the guest kit's files, independent of the scripts that wrote them: the cpio
//! "newc" initramfs (the format of the kernel's `Documentation/driver-api/early-userspace/
//! buffer-format.rst`) and the PVH entry note of an ELF kernel (a `PT_NOTE` entry named "Xen"
//! of type 18, `XEN_ELFNOTE_PHYS32_ENTRY`).

use std::ops::Range;

/// Errors reading a kit file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cpio entry at byte {at}: {why}")]
    Cpio { at: usize, why: &'static str },
    #[error("cpio archive ends without a TRAILER!!! entry")]
    NoTrailer,
    #[error("ELF: {0}")]
    Elf(&'static str),
}

/// One member of a cpio archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    pub name: String,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    /// Device number of a character or block special file.
    pub rdev: (u32, u32),
    /// Where the member's data lies in the archive.
    pub data: Range<usize>,
}

impl CpioEntry {
    const TYPE_MASK: u32 = 0o170000;

    pub fn is_dir(&self) -> bool {
        self.mode & Self::TYPE_MASK == 0o040000
    }

    pub fn is_file(&self) -> bool {
        self.mode & Self::TYPE_MASK == 0o100000
    }

    pub fn is_char_device(&self) -> bool {
        self.mode & Self::TYPE_MASK == 0o020000
    }

    pub fn is_executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
}

const CPIO_HEADER: usize = 110;

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Parses a newc archive (magic `070701`, no CRC) up to its trailer.
pub fn cpio_entries(archive: &[u8]) -> Result<Vec<CpioEntry>, ImageError> {
    let mut entries = Vec::new();
    let mut at = 0;
    loop {
        let err = |why| ImageError::Cpio { at, why };
        let header = archive
            .get(at..at + CPIO_HEADER)
            .ok_or(ImageError::NoTrailer)?;
        if &header[..6] != b"070701" {
            return Err(err("bad magic (not newc)"));
        }
        let field = |i: usize| -> Result<u32, ImageError> {
            let text = std::str::from_utf8(&header[6 + i * 8..14 + i * 8])
                .map_err(|_| err("header field is not ASCII"))?;
            u32::from_str_radix(text, 16).map_err(|_| err("header field is not hex"))
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let name_size = field(11)? as usize;
        if name_size == 0 {
            return Err(err("empty name"));
        }
        let name_bytes = archive
            .get(at + CPIO_HEADER..at + CPIO_HEADER + name_size)
            .ok_or_else(|| err("name runs past the archive"))?;
        let name = std::str::from_utf8(&name_bytes[..name_size - 1])
            .map_err(|_| err("name is not UTF-8"))?
            .to_string();
        let start = align4(at + CPIO_HEADER + name_size);
        let end = start
            .checked_add(size)
            .filter(|end| *end <= archive.len())
            .ok_or_else(|| err("data runs past the archive"))?;
        if name == "TRAILER!!!" {
            return Ok(entries);
        }
        entries.push(CpioEntry {
            name,
            mode,
            rdev,
            data: start..end,
        });
        at = align4(end);
    }
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The 32-bit PVH entry point of an ELF64 kernel, from its Xen note of type 18; `Ok(None)` if
/// the file has no such note.
pub fn pvh_entry(elf: &[u8]) -> Result<Option<u64>, ImageError> {
    const PT_NOTE: u32 = 4;
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(ImageError::Elf("not a little-endian ELF64 file"));
    }
    let truncated = ImageError::Elf("truncated header");
    let phoff = read_u64(elf, 0x20).ok_or(truncated)? as usize;
    let phentsize = read_u16(elf, 0x36).ok_or(ImageError::Elf("truncated header"))? as usize;
    let phnum = read_u16(elf, 0x38).ok_or(ImageError::Elf("truncated header"))? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let bad_ph = || ImageError::Elf("program header outside the file");
        if read_u32(elf, ph).ok_or_else(bad_ph)? != PT_NOTE {
            continue;
        }
        let offset = read_u64(elf, ph + 8).ok_or_else(bad_ph)? as usize;
        let size = read_u64(elf, ph + 32).ok_or_else(bad_ph)? as usize;
        let notes = elf
            .get(offset..offset.saturating_add(size))
            .ok_or(ImageError::Elf("note segment outside the file"))?;
        let mut at = 0;
        while at + 12 <= notes.len() {
            let bad = || ImageError::Elf("truncated note");
            let name_size = read_u32(notes, at).ok_or_else(bad)? as usize;
            let desc_size = read_u32(notes, at + 4).ok_or_else(bad)? as usize;
            let kind = read_u32(notes, at + 8).ok_or_else(bad)?;
            let name = notes.get(at + 12..at + 12 + name_size).ok_or_else(bad)?;
            let desc_at = at + 12 + align4(name_size);
            if name.strip_suffix(b"\0").unwrap_or(name) == b"Xen"
                && kind == XEN_ELFNOTE_PHYS32_ENTRY
            {
                let entry = match desc_size {
                    4 => read_u32(notes, desc_at).map(u64::from),
                    8 => read_u64(notes, desc_at),
                    _ => None,
                };
                return entry.map(Some).ok_or_else(bad);
            }
            at = desc_at + align4(desc_size);
        }
    }
    Ok(None)
}

/// The module names in the `depends=` entry of a kernel module's `.modinfo` section.
pub fn module_depends(elf: &[u8]) -> Result<Vec<String>, ImageError> {
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) {
        return Err(ImageError::Elf("not an ELF64 module"));
    }
    let bad = || ImageError::Elf("section header outside the file");
    let shoff = read_u64(elf, 0x28).ok_or_else(bad)? as usize;
    let shentsize = read_u16(elf, 0x3a).ok_or_else(bad)? as usize;
    let shnum = read_u16(elf, 0x3c).ok_or_else(bad)? as usize;
    let shstrndx = read_u16(elf, 0x3e).ok_or_else(bad)? as usize;
    let section = |i: usize| -> Result<(usize, Range<usize>), ImageError> {
        let sh = shoff + i * shentsize;
        let name = read_u32(elf, sh).ok_or_else(bad)? as usize;
        let offset = read_u64(elf, sh + 0x18).ok_or_else(bad)? as usize;
        let size = read_u64(elf, sh + 0x20).ok_or_else(bad)? as usize;
        Ok((name, offset..offset.saturating_add(size)))
    };
    let (_, strtab) = section(shstrndx)?;
    for i in 0..shnum {
        let (name, range) = section(i)?;
        let name_at = strtab.start.saturating_add(name);
        let name_bytes = elf.get(name_at..).ok_or_else(bad)?;
        let name_end = name_bytes.iter().position(|b| *b == 0).ok_or_else(bad)?;
        if &name_bytes[..name_end] != b".modinfo" {
            continue;
        }
        let info = elf.get(range).ok_or_else(bad)?;
        for entry in info.split(|b| *b == 0) {
            if let Some(deps) = entry.strip_prefix(b"depends=") {
                let deps = std::str::from_utf8(deps)
                    .map_err(|_| ImageError::Elf("depends= is not UTF-8"))?;
                return Ok(deps
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
                    .collect());
            }
        }
        return Ok(Vec::new());
    }
    Err(ImageError::Elf("no .modinfo section"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newc(name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
        let name = format!("{name}\0");
        let fields = [
            1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            5,
            1,
            name.len() as u32,
            0,
        ];
        let mut out = b"070701".to_vec();
        for f in fields {
            out.extend(format!("{f:08X}").bytes());
        }
        out.extend(name.bytes());
        out.resize(align4(out.len()), 0);
        out.extend(data);
        out.resize(align4(out.len()), 0);
        out
    }

    #[test]
    fn reads_a_newc_archive() {
        let mut a = newc("bin", 0o040755, b"");
        a.extend(newc("init", 0o100755, b"#!/bin/sh\n"));
        a.extend(newc("dev/console", 0o020600, b""));
        a.extend(newc("TRAILER!!!", 0, b""));
        let e = cpio_entries(&a).unwrap();
        assert_eq!(e.len(), 3);
        assert!(e[0].is_dir());
        assert!(e[1].is_file() && e[1].is_executable());
        assert_eq!(&a[e[1].data.clone()], b"#!/bin/sh\n");
        assert!(e[2].is_char_device());
        assert_eq!(e[2].rdev, (5, 1));
    }

    #[test]
    fn refuses_broken_archives() {
        let good = newc("init", 0o100755, b"abc");
        assert!(matches!(cpio_entries(&good), Err(ImageError::NoTrailer)));
        let mut bad_magic = good.clone();
        bad_magic[5] = b'2';
        assert!(cpio_entries(&bad_magic).is_err());
        let truncated = &good[..good.len() - 4];
        let mut t = truncated.to_vec();
        t.extend(newc("TRAILER!!!", 0, b""));
        // The data size field still says 3 bytes, so the next header is misread.
        assert!(cpio_entries(&t).is_err());
    }

    #[test]
    fn pvh_note_is_found_or_absent() {
        // ELF64 header + one PT_NOTE program header + one Xen note of type 18.
        let mut elf = vec![0u8; 0x40 + 0x38];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let mut note = Vec::new();
        note.extend(4u32.to_le_bytes());
        note.extend(4u32.to_le_bytes());
        note.extend(18u32.to_le_bytes());
        note.extend(b"Xen\0");
        note.extend(0x0100_0850u32.to_le_bytes());
        let note_at = elf.len() as u64;
        elf[0x40..0x44].copy_from_slice(&4u32.to_le_bytes());
        elf[0x48..0x50].copy_from_slice(&note_at.to_le_bytes());
        elf[0x60..0x68].copy_from_slice(&(note.len() as u64).to_le_bytes());
        elf.extend(&note);
        assert_eq!(pvh_entry(&elf).unwrap(), Some(0x0100_0850));
        let last = elf.len() - 12;
        elf[last] = 17; // another note type
        assert_eq!(pvh_entry(&elf).unwrap(), None);
        assert!(pvh_entry(b"not an elf").is_err());
    }
}
