//! Host backends of virtio-blk: where the sectors live. The device logic only sees the
//! [`DiskBackend`] trait; [`FileDisk`] serves a raw image file or block device, [`MemDisk`]
//! is the in-memory fake the tests use (it can also inject host errors).
// One libc call (`fallocate`, for DISCARD and WRITE_ZEROES) has no safe wrapper in std.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

/// Errors opening a backend (host configuration, reported at VM build).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot open disk image {path:?}: {source}")]
    Open { path: String, source: io::Error },
    #[error("cannot size disk image {path:?}: {source}")]
    Size { path: String, source: io::Error },
    #[error("disk image {path:?} is not a regular file or block device")]
    NotADisk { path: String },
}

/// Byte-addressed storage. Every offset and length handed in has been checked against
/// [`DiskBackend::size`] by the request logic.
pub trait DiskBackend: Send {
    /// Size in bytes.
    fn size(&self) -> u64;
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (`fdatasync` for files).
    fn flush(&mut self) -> io::Result<()>;
    /// Whether [`DiskBackend::discard`] and [`DiskBackend::write_zeroes`] are available.
    fn supports_discard(&self) -> bool;
    /// Deallocates the range; reads of it return zeros afterwards.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Zeroes the range, deallocating it if `unmap`.
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;
}

/// A raw image: a regular file or a block device, opened read-only when the disk is.
pub struct FileDisk {
    file: File,
    size: u64,
    punch_holes: bool,
}

impl FileDisk {
    pub fn open(path: &Path, readonly: bool) -> Result<Self, BackendError> {
        let name = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(|source| BackendError::Open {
                path: name.clone(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| BackendError::Size {
            path: name.clone(),
            source,
        })?;
        let kind = meta.file_type();
        let (size, punch_holes) = if kind.is_file() {
            (meta.len(), true)
        } else if kind.is_block_device() {
            // A block device's metadata length is 0; its end is where seeking stops.
            let size = io::Seek::seek(&mut &file, io::SeekFrom::End(0)).map_err(|source| {
                BackendError::Size {
                    path: name.clone(),
                    source,
                }
            })?;
            (size, false)
        } else {
            return Err(BackendError::NotADisk { path: name });
        };
        Ok(Self {
            file,
            size,
            punch_holes: punch_holes && !readonly,
        })
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate reads only its integer arguments (an fd this struct owns, a mode,
        // a range); a bad range makes it fail with an errno, it never touches our memory.
        let ret = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl DiskBackend for FileDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn supports_discard(&self) -> bool {
        self.punch_holes
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        let mode = if unmap {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        self.fallocate(mode, offset, len)
    }
}

/// An in-memory disk for tests; `fail_with` makes every later I/O fail with that errno.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    pub data: Vec<u8>,
    pub fail_with: Option<i32>,
    pub flushes: u32,
}

impl MemDisk {
    pub fn new(size: usize) -> Self {
        Self {
            data: vec![0; size],
            ..Self::default()
        }
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        if let Some(errno) = self.fail_with {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.data.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        Ok(start..end)
    }
}

impl DiskBackend for MemDisk {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let r = self.check(offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let r = self.check(offset, buf.len())?;
        self.data[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.check(0, 0)?;
        self.flushes += 1;
        Ok(())
    }
    fn supports_discard(&self) -> bool {
        true
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, true)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let r = self.check(offset, len)?;
        self.data[r].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn file_disk_reads_writes_flushes_and_punches() {
        let dir = std::env::temp_dir().join(format!("podvisor-filedisk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![0xaa; 1 << 16]).unwrap();
        drop(f);
        let mut disk = FileDisk::open(&path, false).unwrap();
        assert_eq!(disk.size(), 1 << 16);
        disk.write_at(&[1, 2, 3], 512).unwrap();
        disk.flush().unwrap();
        let mut b = [0u8; 4];
        disk.read_at(&mut b, 511).unwrap();
        assert_eq!(b, [0xaa, 1, 2, 3]);
        assert!(
            disk.read_at(&mut b, (1 << 16) - 2).is_err(),
            "short read is an error"
        );
        if disk.supports_discard() && disk.discard(4096, 4096).is_ok() {
            disk.read_at(&mut b, 4096).unwrap();
            assert_eq!(b, [0; 4]);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 16);
        }
        let mut ro = FileDisk::open(&path, true).unwrap();
        assert!(!ro.supports_discard());
        assert!(
            ro.write_at(&[9], 0).is_err(),
            "read-only file refuses writes"
        );
        assert!(
            FileDisk::open(&dir, false).is_err(),
            "a directory is not a disk"
        );
        assert!(FileDisk::open(&dir.join("missing"), false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mem_disk_injects_errors() {
        let mut d = MemDisk::new(1024);
        d.write_at(&[7; 8], 8).unwrap();
        d.fail_with = Some(libc::EIO);
        let mut b = [0u8; 8];
        assert_eq!(
            d.read_at(&mut b, 8).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        d.fail_with = None;
        d.read_at(&mut b, 8).unwrap();
        assert_eq!(b, [7; 8]);
        assert!(d.read_at(&mut b, 1020).is_err());
    }
}
