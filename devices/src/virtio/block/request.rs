//! The pure half of virtio-blk: a descriptor chain in guest memory becomes a typed
//! [`Request`] (VIRTIO 1.2 §5.2.6), or a [`RequestError`] saying why the guest's chain is
//! unusable. Nothing here touches a host file, so it is fuzzed and unit-tested over fake
//! guest memory.
//!
//! Layout accepted (§5.2.6, "the driver MUST NOT make assumptions about framing"): a 16-byte
//! header at the start of the device-readable part (it may span descriptors), then the data
//! bytes, then the one status byte, which is the last byte of the last descriptor and must be
//! device-writable. Data of a read (and GET_ID) must be device-writable, data of a write
//! (and DISCARD/WRITE_ZEROES) device-readable; a chain that mixes them is refused.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use crate::dma::DmaGuard;

/// Request types (§5.2.6).
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;
/// Status values (§5.2.6).
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
/// Sector size of the request protocol, whatever the backing store's block size.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = 20;
/// Size of one DISCARD/WRITE_ZEROES segment: le64 sector, le32 num_sectors, le32 flags.
pub const RANGE_SEGMENT_BYTES: usize = 16;
/// WRITE_ZEROES flag: the device may deallocate the range.
pub const WRITE_ZEROES_FLAG_UNMAP: u32 = 1;
const HEADER_BYTES: u64 = 16;

/// Why a chain is unusable. `status` tells whether an error status can still be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("chain has more than {0} descriptors")]
    TooManyDescriptors(usize),
    #[error("chain is empty or its status byte is missing or not device-writable")]
    NoStatus,
    #[error("descriptor at {addr:#x}+{len:#x} is outside guest RAM")]
    OutsideRam { addr: u64, len: u32 },
    #[error("descriptor at {addr:#x}+{len:#x} points into memory the guest made private")]
    PrivateMemory { addr: u64, len: u32 },
    #[error("header is shorter than 16 bytes or not device-readable")]
    BadHeader,
    #[error("data of a type-{0} request has the wrong direction")]
    WrongDirection(u32),
    #[error("data length {0} is not a whole number of sectors")]
    Unaligned(u64),
    #[error(
        "{kind} of {sectors} sector(s) at sector {sector} is past the end ({capacity} sectors)"
    )]
    OutOfRange {
        kind: &'static str,
        sector: u64,
        sectors: u64,
        capacity: u64,
    },
    #[error("DISCARD/WRITE_ZEROES payload of {0} bytes is not 1..={1} whole segments")]
    BadSegments(u64, usize),
    #[error("unsupported request type {0}")]
    Unsupported(u32),
}

/// A guest buffer, already checked to lie in RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// One range of a DISCARD or WRITE_ZEROES request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectorRange {
    pub sector: u64,
    pub sectors: u32,
    pub flags: u32,
}

/// What the guest asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    Read { sector: u64 },
    Write { sector: u64 },
    Flush,
    GetId,
    Discard(Vec<SectorRange>),
    WriteZeroes(Vec<SectorRange>),
}

/// A parsed request: its kind, the data buffers, and where its status goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestKind,
    pub data: Vec<Segment>,
    pub status: GuestAddress,
}

impl Request {
    /// Total bytes in the data buffers.
    pub fn data_len(&self) -> u64 {
        self.data.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// Limits the parser enforces besides the chain itself.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Capacity of the disk in sectors.
    pub capacity: u64,
    /// Most descriptors accepted in one chain (direct or indirect).
    pub max_descriptors: usize,
    /// Most DISCARD/WRITE_ZEROES segments in one request.
    pub max_range_segments: usize,
}

/// The result of parsing: a request, or an error with the status address if it can be
/// answered at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Ok(Request),
    /// Answer with `status` at `at`.
    Failed {
        error: RequestError,
        at: GuestAddress,
        status: u8,
    },
    /// Nothing can be written back; the chain is returned with a used length of zero.
    Unanswerable(RequestError),
}

/// Parses one chain. `descriptors` is the chain as `virtio-queue` walks it (loops and
/// over-long chains already cut at the queue size); `limits.max_descriptors` is enforced on
/// top, because an indirect table may hold up to 65535 entries.
pub fn parse<M: GuestMemory>(
    mem: &M,
    descriptors: impl Iterator<Item = Descriptor>,
    limits: &Limits,
) -> Parsed {
    parse_guarded(mem, descriptors, limits, &DmaGuard::unrestricted())
}

/// [`parse`], with every buffer also checked against `dma`: a buffer in a page a
/// confidential guest made private fails the request with IOERR (or leaves it unanswerable
/// when the status byte itself is private).
pub fn parse_guarded<M: GuestMemory>(
    mem: &M,
    descriptors: impl Iterator<Item = Descriptor>,
    limits: &Limits,
    dma: &DmaGuard,
) -> Parsed {
    let mut descs = Vec::new();
    for d in descriptors {
        if descs.len() == limits.max_descriptors {
            return Parsed::Unanswerable(RequestError::TooManyDescriptors(limits.max_descriptors));
        }
        descs.push(d);
    }
    let Some(last) = descs.last().copied() else {
        return Parsed::Unanswerable(RequestError::NoStatus);
    };
    if !last.is_write_only() || last.len() == 0 {
        return Parsed::Unanswerable(RequestError::NoStatus);
    }
    let status = match last.addr().checked_add(u64::from(last.len()) - 1) {
        Some(a) if mem.check_range(a, 1, Permissions::Write) => a,
        _ => {
            return Parsed::Unanswerable(RequestError::OutsideRam {
                addr: last.addr().0,
                len: last.len(),
            })
        }
    };
    if !dma.allows(status.0, 1) {
        return Parsed::Unanswerable(RequestError::PrivateMemory {
            addr: last.addr().0,
            len: last.len(),
        });
    }
    let fail = |error: RequestError| {
        let status_byte = match error {
            RequestError::Unsupported(_) => S_UNSUPP,
            _ => S_IOERR,
        };
        Parsed::Failed {
            error,
            at: status,
            status: status_byte,
        }
    };
    // Every buffer but the status byte, checked against RAM.
    let mut buffers = Vec::with_capacity(descs.len());
    for (i, d) in descs.iter().enumerate() {
        let len = if i + 1 == descs.len() {
            d.len() - 1
        } else {
            d.len()
        };
        if len == 0 {
            continue;
        }
        let access = if d.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if !mem.check_range(d.addr(), len as usize, access) {
            return fail(RequestError::OutsideRam {
                addr: d.addr().0,
                len: d.len(),
            });
        }
        if !dma.allows(d.addr().0, u64::from(len)) {
            return fail(RequestError::PrivateMemory {
                addr: d.addr().0,
                len: d.len(),
            });
        }
        buffers.push((
            Segment {
                addr: d.addr(),
                len,
            },
            d.is_write_only(),
        ));
    }
    let (header, data) = match split_header(mem, &buffers) {
        Some(v) => v,
        None => return fail(RequestError::BadHeader),
    };
    match build(mem, header, data, limits) {
        Ok(kind_and_data) => Parsed::Ok(Request {
            kind: kind_and_data.0,
            data: kind_and_data.1,
            status,
        }),
        Err(e) => fail(e),
    }
}

struct Header {
    kind: u32,
    sector: u64,
}

/// Reads the 16-byte header from the leading device-readable buffers; returns it with the
/// remaining buffers (the first one possibly shortened).
fn split_header<M: GuestMemory>(
    mem: &M,
    buffers: &[(Segment, bool)],
) -> Option<(Header, Vec<(Segment, bool)>)> {
    let mut raw = [0u8; HEADER_BYTES as usize];
    let mut filled = 0usize;
    let mut rest = Vec::new();
    for &(seg, writable) in buffers {
        if filled < raw.len() {
            if writable {
                return None;
            }
            let take = (raw.len() - filled).min(seg.len as usize);
            mem.read_slice(&mut raw[filled..filled + take], seg.addr)
                .ok()?;
            filled += take;
            if take < seg.len as usize {
                rest.push((
                    Segment {
                        addr: seg.addr.checked_add(take as u64)?,
                        len: seg.len - take as u32,
                    },
                    writable,
                ));
            }
        } else {
            rest.push((seg, writable));
        }
    }
    if filled < raw.len() {
        return None;
    }
    let kind = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let mut sector = [0u8; 8];
    sector.copy_from_slice(&raw[8..16]);
    Some((
        Header {
            kind,
            sector: u64::from_le_bytes(sector),
        },
        rest,
    ))
}

fn build<M: GuestMemory>(
    mem: &M,
    header: Header,
    data: Vec<(Segment, bool)>,
    limits: &Limits,
) -> Result<(RequestKind, Vec<Segment>), RequestError> {
    let (want_writable, needs_data) = match header.kind {
        T_IN | T_GET_ID => (true, true),
        T_OUT | T_DISCARD | T_WRITE_ZEROES => (false, true),
        T_FLUSH => (false, false),
        other => return Err(RequestError::Unsupported(other)),
    };
    if needs_data && data.iter().any(|&(_, w)| w != want_writable) {
        return Err(RequestError::WrongDirection(header.kind));
    }
    let segments: Vec<Segment> = if needs_data {
        data.into_iter().map(|(s, _)| s).collect()
    } else {
        Vec::new()
    };
    let total: u64 = segments.iter().map(|s| u64::from(s.len)).sum();
    let check_range =
        |kind: &'static str, sector: u64, sectors: u64| match sector.checked_add(sectors) {
            Some(end) if end <= limits.capacity => Ok(()),
            _ => Err(RequestError::OutOfRange {
                kind,
                sector,
                sectors,
                capacity: limits.capacity,
            }),
        };
    let kind = match header.kind {
        T_IN | T_OUT => {
            if total % SECTOR_SIZE != 0 {
                return Err(RequestError::Unaligned(total));
            }
            let name = if header.kind == T_IN { "read" } else { "write" };
            check_range(name, header.sector, total / SECTOR_SIZE)?;
            if header.kind == T_IN {
                RequestKind::Read {
                    sector: header.sector,
                }
            } else {
                RequestKind::Write {
                    sector: header.sector,
                }
            }
        }
        T_FLUSH => RequestKind::Flush,
        T_GET_ID => RequestKind::GetId,
        _ => {
            let ranges = read_ranges(mem, &segments, total, limits.max_range_segments)?;
            for r in &ranges {
                check_range("discard/write-zeroes", r.sector, u64::from(r.sectors))?;
            }
            if header.kind == T_DISCARD {
                RequestKind::Discard(ranges)
            } else {
                RequestKind::WriteZeroes(ranges)
            }
        }
    };
    Ok((kind, segments))
}

/// Reads the DISCARD/WRITE_ZEROES segments, which may span descriptors.
fn read_ranges<M: GuestMemory>(
    mem: &M,
    segments: &[Segment],
    total: u64,
    max: usize,
) -> Result<Vec<SectorRange>, RequestError> {
    let count = total / RANGE_SEGMENT_BYTES as u64;
    if total % RANGE_SEGMENT_BYTES as u64 != 0 || count == 0 || count > max as u64 {
        return Err(RequestError::BadSegments(total, max));
    }
    let mut raw = vec![0u8; total as usize];
    let mut at = 0usize;
    for s in segments {
        let end = at + s.len as usize;
        mem.read_slice(&mut raw[at..end], s.addr)
            .map_err(|_| RequestError::OutsideRam {
                addr: s.addr.0,
                len: s.len,
            })?;
        at = end;
    }
    Ok(raw
        .chunks_exact(RANGE_SEGMENT_BYTES)
        .map(|c| {
            let mut sector = [0u8; 8];
            sector.copy_from_slice(&c[0..8]);
            SectorRange {
                sector: u64::from_le_bytes(sector),
                sectors: u32::from_le_bytes([c[8], c[9], c[10], c[11]]),
                flags: u32::from_le_bytes([c[12], c[13], c[14], c[15]]),
            }
        })
        .collect())
}
