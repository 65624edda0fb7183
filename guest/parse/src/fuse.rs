//! FUSE messages as virtio-fs carries them (VIRTIO 1.2 §5.11.6: each request is one
//! device-readable part, `fuse_in_header` plus arguments, and one device-writable part for
//! `fuse_out_header` plus the reply). Layouts follow the FUSE ABI (`include/uapi/linux/fuse.h`),
//! protocol 7.31: what `virtiofsd` negotiates with a client that asks for it, and the newest
//! minor whose request structures the probe needs no extension headers for.
//!
//! Encoding writes into a caller's buffer and decoding reads a device-written buffer; both check
//! every length, because the reply comes from the host and may be anything.

/// The FUSE major version the probe speaks.
pub const KERNEL_VERSION: u32 = 7;
/// The minor version the probe asks for (the server may answer lower).
pub const KERNEL_MINOR_VERSION: u32 = 31;
/// Node id of the share's root directory.
pub const ROOT_ID: u64 = 1;
/// Longest name the probe sends (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// `sizeof(struct fuse_in_header)`.
pub const IN_HEADER_LEN: usize = 40;
/// `sizeof(struct fuse_out_header)`.
pub const OUT_HEADER_LEN: usize = 16;
/// `sizeof(struct fuse_attr)`.
const ATTR_LEN: usize = 88;
/// `sizeof(struct fuse_entry_out)`.
pub const ENTRY_OUT_LEN: usize = 40 + ATTR_LEN;
/// `sizeof(struct fuse_open_out)`.
pub const OPEN_OUT_LEN: usize = 16;
/// `sizeof(struct fuse_read_in)` and `fuse_write_in`.
pub const READ_WRITE_IN_LEN: usize = 40;

/// `open(2)` flags the probe uses.
pub const O_RDONLY: u32 = 0;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_CREAT: u32 = 0o100;
pub const O_TRUNC: u32 = 0o1000;
/// Mode type bits (`S_IFMT`), regular file and directory.
pub const S_IFMT: u32 = 0o170_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFDIR: u32 = 0o040_000;

/// FUSE opcodes (`enum fuse_opcode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Opcode {
    Lookup = 1,
    Forget = 2,
    Getattr = 3,
    Mkdir = 9,
    Unlink = 10,
    Rmdir = 11,
    Rename = 12,
    Open = 14,
    Read = 15,
    Write = 16,
    Release = 18,
    Flush = 25,
    Init = 26,
    Create = 35,
}

/// One request's arguments. Names are single path components.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Init {
        max_readahead: u32,
        flags: u32,
    },
    Lookup {
        name: &'a [u8],
    },
    Forget {
        nlookup: u64,
    },
    Getattr,
    Open {
        flags: u32,
    },
    Read {
        fh: u64,
        offset: u64,
        size: u32,
    },
    Write {
        fh: u64,
        offset: u64,
        data: &'a [u8],
    },
    Create {
        name: &'a [u8],
        flags: u32,
        mode: u32,
    },
    Mkdir {
        name: &'a [u8],
        mode: u32,
    },
    Rename {
        newdir: u64,
        old: &'a [u8],
        new: &'a [u8],
    },
    Unlink {
        name: &'a [u8],
    },
    Rmdir {
        name: &'a [u8],
    },
    Release {
        fh: u64,
        flags: u32,
    },
    Flush {
        fh: u64,
    },
}

/// What can go wrong encoding a request or decoding a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuseError {
    /// The request does not fit the buffer given for it.
    BufferTooSmall { need: usize, have: usize },
    /// A name that is empty, too long, or holds `/` or NUL.
    BadName,
    /// The reply is shorter than its header or than what its header claims.
    ShortReply { len: usize, need: usize },
    /// The reply answers another request.
    WrongUnique { expected: u64, got: u64 },
    /// The server's answer: a negative errno (`-2` is ENOENT).
    Errno(i32),
    /// `FUSE_INIT` answered with a major version the probe does not speak.
    Version { major: u32, minor: u32 },
}

impl FuseError {
    /// Writes a one-line description to `out`.
    pub fn report<S: crate::report::Sink>(&self, out: S) -> S {
        match *self {
            FuseError::BufferTooSmall { need, have } => out
                .s("fuse: request needs ")
                .dec(need as u64)
                .s(" bytes, buffer has ")
                .dec(have as u64),
            FuseError::BadName => out.s("fuse: bad path component"),
            FuseError::ShortReply { len, need } => out
                .s("fuse: reply of ")
                .dec(len as u64)
                .s(" bytes, need ")
                .dec(need as u64),
            FuseError::WrongUnique { expected, got } => out
                .s("fuse: reply for request ")
                .dec(got)
                .s(", expected ")
                .dec(expected),
            FuseError::Errno(e) => out
                .s("fuse: server error errno=")
                .dec(e.unsigned_abs().into()),
            FuseError::Version { major, minor } => out
                .s("fuse: server speaks ")
                .dec(major.into())
                .s(".")
                .dec(minor.into()),
        }
    }
}

impl Request<'_> {
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Init { .. } => Opcode::Init,
            Request::Lookup { .. } => Opcode::Lookup,
            Request::Forget { .. } => Opcode::Forget,
            Request::Getattr => Opcode::Getattr,
            Request::Open { .. } => Opcode::Open,
            Request::Read { .. } => Opcode::Read,
            Request::Write { .. } => Opcode::Write,
            Request::Create { .. } => Opcode::Create,
            Request::Mkdir { .. } => Opcode::Mkdir,
            Request::Rename { .. } => Opcode::Rename,
            Request::Unlink { .. } => Opcode::Unlink,
            Request::Rmdir { .. } => Opcode::Rmdir,
            Request::Release { .. } => Opcode::Release,
            Request::Flush { .. } => Opcode::Flush,
        }
    }

    /// Whether the server answers at all (`FUSE_FORGET` has no reply).
    pub fn expects_reply(&self) -> bool {
        !matches!(self, Request::Forget { .. })
    }

    /// Encodes the request for node `nodeid` with id `unique` into `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8], unique: u64, nodeid: u64) -> Result<usize, FuseError> {
        let mut w = Writer {
            buf,
            pos: IN_HEADER_LEN,
        };
        if w.buf.len() < IN_HEADER_LEN {
            return Err(FuseError::BufferTooSmall {
                need: IN_HEADER_LEN,
                have: w.buf.len(),
            });
        }
        match *self {
            Request::Init {
                max_readahead,
                flags,
            } => {
                w.u32(KERNEL_VERSION)?;
                w.u32(KERNEL_MINOR_VERSION)?;
                w.u32(max_readahead)?;
                w.u32(flags)?;
            }
            Request::Lookup { name } | Request::Unlink { name } | Request::Rmdir { name } => {
                w.name(name)?
            }
            Request::Forget { nlookup } => w.u64(nlookup)?,
            Request::Getattr => {
                w.u32(0)?; // getattr_flags: no file handle given
                w.u32(0)?;
                w.u64(0)?;
            }
            Request::Open { flags } => {
                w.u32(flags)?;
                w.u32(0)?; // open_flags
            }
            Request::Read { fh, offset, size } => w.read_write_in(fh, offset, size)?,
            Request::Write { fh, offset, data } => {
                let size = u32::try_from(data.len()).map_err(|_| FuseError::BufferTooSmall {
                    need: data.len(),
                    have: u32::MAX as usize,
                })?;
                w.read_write_in(fh, offset, size)?;
                w.bytes(data)?;
            }
            Request::Create { name, flags, mode } => {
                w.u32(flags)?;
                w.u32(mode)?;
                w.u32(0)?; // umask
                w.u32(0)?; // open_flags
                w.name(name)?;
            }
            Request::Mkdir { name, mode } => {
                w.u32(mode)?;
                w.u32(0)?; // umask
                w.name(name)?;
            }
            Request::Rename { newdir, old, new } => {
                w.u64(newdir)?;
                w.name(old)?;
                w.name(new)?;
            }
            Request::Release { fh, flags } => {
                w.u64(fh)?;
                w.u32(flags)?;
                w.u32(0)?; // release_flags
                w.u64(0)?; // lock_owner
            }
            Request::Flush { fh } => {
                w.u64(fh)?;
                w.u32(0)?;
                w.u32(0)?;
                w.u64(0)?; // lock_owner
            }
        }
        let len = w.pos;
        let total = u32::try_from(len).map_err(|_| FuseError::BufferTooSmall {
            need: len,
            have: u32::MAX as usize,
        })?;
        w.pos = 0;
        w.u32(total)?;
        w.u32(self.opcode() as u32)?;
        w.u64(unique)?;
        w.u64(nodeid)?;
        w.u32(0)?; // uid: root
        w.u32(0)?; // gid
        w.u32(1)?; // pid
        w.u32(0)?; // total_extlen, padding
        Ok(len)
    }
}

/// Bounds-checked little-endian writer.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, data: &[u8]) -> Result<(), FuseError> {
        let have = self.buf.len();
        let end = self.pos.checked_add(data.len()).filter(|&e| e <= have);
        let Some(end) = end else {
            return Err(FuseError::BufferTooSmall {
                need: self.pos.saturating_add(data.len()),
                have,
            });
        };
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(data);
        }
        self.pos = end;
        Ok(())
    }

    fn u32(&mut self, v: u32) -> Result<(), FuseError> {
        self.bytes(&v.to_le_bytes())
    }

    fn u64(&mut self, v: u64) -> Result<(), FuseError> {
        self.bytes(&v.to_le_bytes())
    }

    fn name(&mut self, name: &[u8]) -> Result<(), FuseError> {
        if name.is_empty() || name.len() > NAME_MAX || name.iter().any(|&b| b == 0 || b == b'/') {
            return Err(FuseError::BadName);
        }
        self.bytes(name)?;
        self.bytes(&[0])
    }

    fn read_write_in(&mut self, fh: u64, offset: u64, size: u32) -> Result<(), FuseError> {
        self.u64(fh)?;
        self.u64(offset)?;
        self.u32(size)?;
        self.u32(0)?; // read_flags / write_flags
        self.u64(0)?; // lock_owner
        self.u32(0)?; // flags
        self.u32(0) // padding
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn need(b: &[u8], len: usize) -> Result<(), FuseError> {
    if b.len() < len {
        return Err(FuseError::ShortReply {
            len: b.len(),
            need: len,
        });
    }
    Ok(())
}

/// Checks the `fuse_out_header` of a reply the device wrote `used` bytes of into `buf`, and
/// returns the payload after it (the server's own length, which may be less than `used`).
pub fn reply_payload(buf: &[u8], used: usize, unique: u64) -> Result<&[u8], FuseError> {
    let written = buf.get(..used).ok_or(FuseError::ShortReply {
        len: buf.len(),
        need: used,
    })?;
    need(written, OUT_HEADER_LEN)?;
    let len = u32_at(written, 0) as usize;
    let error = u32_at(written, 4) as i32;
    let got = u64_at(written, 8);
    if got != unique {
        return Err(FuseError::WrongUnique {
            expected: unique,
            got,
        });
    }
    if error != 0 {
        return Err(FuseError::Errno(error));
    }
    if len < OUT_HEADER_LEN || len > written.len() {
        return Err(FuseError::ShortReply {
            len: written.len(),
            need: len.max(OUT_HEADER_LEN),
        });
    }
    Ok(written.get(OUT_HEADER_LEN..len).unwrap_or(&[]))
}

/// What `FUSE_INIT` answers that the probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitOut {
    pub major: u32,
    pub minor: u32,
    pub flags: u32,
    /// Largest `FUSE_WRITE` payload the server takes (0 from servers older than 7.5).
    pub max_write: u32,
}

impl InitOut {
    pub fn parse(p: &[u8]) -> Result<Self, FuseError> {
        need(p, 8)?;
        let (major, minor) = (u32_at(p, 0), u32_at(p, 4));
        if major != KERNEL_VERSION {
            return Err(FuseError::Version { major, minor });
        }
        // The 7.5+ layout carries max_write at byte 16; older servers send 8 bytes.
        let flags = u32_at(p, 12);
        let max_write = if p.len() >= 24 { u32_at(p, 16) } else { 0 };
        Ok(Self {
            major,
            minor,
            flags,
            max_write,
        })
    }
}

/// The attributes of `struct fuse_attr` the probe looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub mode: u32,
}

impl Attr {
    fn parse(p: &[u8]) -> Result<Self, FuseError> {
        need(p, ATTR_LEN)?;
        Ok(Self {
            ino: u64_at(p, 0),
            size: u64_at(p, 8),
            mode: u32_at(p, 60),
        })
    }

    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
}

/// `struct fuse_entry_out`: LOOKUP, MKDIR and the first half of CREATE's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryOut {
    pub nodeid: u64,
    pub attr: Attr,
}

impl EntryOut {
    pub fn parse(p: &[u8]) -> Result<Self, FuseError> {
        need(p, ENTRY_OUT_LEN)?;
        Ok(Self {
            nodeid: u64_at(p, 0),
            attr: Attr::parse(p.get(40..).unwrap_or(&[]))?,
        })
    }
}

/// `struct fuse_attr_out` (GETATTR).
pub fn parse_attr_out(p: &[u8]) -> Result<Attr, FuseError> {
    need(p, 16 + ATTR_LEN)?;
    Attr::parse(p.get(16..).unwrap_or(&[]))
}

/// `struct fuse_open_out`: the file handle of OPEN, and of CREATE after its entry.
pub fn parse_open_out(p: &[u8]) -> Result<u64, FuseError> {
    need(p, OPEN_OUT_LEN)?;
    Ok(u64_at(p, 0))
}

/// CREATE's reply: the new entry and its open file handle.
pub fn parse_create_out(p: &[u8]) -> Result<(EntryOut, u64), FuseError> {
    need(p, ENTRY_OUT_LEN + OPEN_OUT_LEN)?;
    let entry = EntryOut::parse(p)?;
    let fh = parse_open_out(p.get(ENTRY_OUT_LEN..).unwrap_or(&[]))?;
    Ok((entry, fh))
}

/// `struct fuse_write_out`: bytes the server wrote.
pub fn parse_write_out(p: &[u8]) -> Result<u32, FuseError> {
    need(p, 8)?;
    Ok(u32_at(p, 0))
}
