//! The vsock packet format (VIRTIO 1.2 §5.10.6): the 44-byte little-endian header, its
//! operations, and moving packets between descriptor chains and host buffers.
//!
//! Pure functions over guest memory: nothing here knows about connections or sockets, so the
//! parser can be fuzzed and unit-tested over fake memory. Every length the guest wrote is
//! checked against what its descriptors really hold and against a host limit before a byte is
//! copied, so a hostile chain costs at most [`MAX_PKT_PAYLOAD`] bytes of host memory.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;
/// The host's CID (§5.10.4: 2 is the host).
pub const HOST_CID: u64 = 2;
/// The only socket type supported: stream (`VIRTIO_VSOCK_TYPE_STREAM`).
pub const TYPE_STREAM: u16 = 1;
/// Largest payload the host accepts in one guest packet or puts into one rx packet (Linux's
/// `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_PAYLOAD: usize = 64 * 1024;
/// Most descriptors looked at in one chain; a longer chain is malformed.
pub const MAX_DESCRIPTORS: usize = 64;

/// `SHUTDOWN` flags (§5.10.6.4.2).
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

/// Packet operations (§5.10.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Request,
    Response,
    Rst,
    Shutdown,
    Rw,
    CreditUpdate,
    CreditRequest,
}

impl Op {
    pub fn from_u16(op: u16) -> Option<Op> {
        Some(match op {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }

    pub fn to_u16(self) -> u16 {
        match self {
            Op::Request => 1,
            Op::Response => 2,
            Op::Rst => 3,
            Op::Shutdown => 4,
            Op::Rw => 5,
            Op::CreditUpdate => 6,
            Op::CreditRequest => 7,
        }
    }
}

/// `struct virtio_vsock_hdr`, field for field; `op` stays raw so that unknown operations can
/// be answered rather than rejected while parsing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn le_u64(b: &[u8; HDR_LEN], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn le_u32(b: &[u8; HDR_LEN], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u16(b: &[u8; HDR_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Header {
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        Header {
            src_cid: le_u64(b, 0),
            dst_cid: le_u64(b, 8),
            src_port: le_u32(b, 16),
            dst_port: le_u32(b, 20),
            len: le_u32(b, 24),
            type_: le_u16(b, 28),
            op: le_u16(b, 30),
            flags: le_u32(b, 32),
            buf_alloc: le_u32(b, 36),
            fwd_cnt: le_u32(b, 40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The operation, if it is one the spec defines.
    pub fn op(&self) -> Option<Op> {
        Op::from_u16(self.op)
    }
}

/// Why a chain could not be turned into a packet (all guest faults).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("chain holds {0} readable bytes, less than a header")]
    ShortHeader(usize),
    #[error("header says {len} payload bytes but the chain holds {have}")]
    ShortPayload { len: u32, have: usize },
    #[error("payload of {0} bytes exceeds the {MAX_PKT_PAYLOAD}-byte limit")]
    TooLong(u32),
    #[error("chain has more than {MAX_DESCRIPTORS} descriptors")]
    TooManyDescriptors,
    #[error("guest memory access failed at {0:#x}")]
    Memory(u64),
    #[error("rx buffer of {have} bytes cannot hold {need}")]
    RxTooSmall { need: usize, have: usize },
}

/// A packet the guest sent on the tx queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxPacket {
    pub hdr: Header,
    /// Exactly `hdr.len` bytes for `RW`; empty for every other operation (§5.10.6.3: only
    /// `RW` carries data, so a length elsewhere is ignored rather than copied).
    pub payload: Vec<u8>,
}

/// The guest-readable descriptors of a chain as `(address, length)`, bounded in number.
fn segments<M>(chain: DescriptorChain<M>, write_only: bool) -> Result<Vec<Descriptor>, PacketError>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    let mut out = Vec::new();
    for desc in chain {
        if desc.is_write_only() != write_only {
            continue;
        }
        if out.len() == MAX_DESCRIPTORS {
            return Err(PacketError::TooManyDescriptors);
        }
        out.push(desc);
    }
    Ok(out)
}

/// Copies `out.len()` bytes starting `skip` bytes into the segments.
fn gather<M: GuestMemory + ?Sized>(
    mem: &M,
    segs: &[Descriptor],
    mut skip: usize,
    out: &mut [u8],
) -> Result<(), PacketError> {
    let mut done = 0usize;
    for d in segs {
        if done == out.len() {
            break;
        }
        let len = d.len() as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(out.len() - done);
        let addr = d
            .addr()
            .0
            .checked_add(skip as u64)
            .ok_or(PacketError::Memory(d.addr().0))?;
        mem.read_slice(&mut out[done..done + n], GuestAddress(addr))
            .map_err(|_| PacketError::Memory(addr))?;
        done += n;
        skip = 0;
    }
    Ok(())
}

/// Parses a tx chain: header from its readable descriptors, then the payload of an `RW`.
pub fn parse_tx<M>(mem: &M::Target, chain: DescriptorChain<M>) -> Result<TxPacket, PacketError>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    let segs = segments(chain, false)?;
    let have: usize = segs.iter().map(|d| d.len() as usize).sum();
    if have < HDR_LEN {
        return Err(PacketError::ShortHeader(have));
    }
    let mut raw = [0u8; HDR_LEN];
    gather(mem, &segs, 0, &mut raw)?;
    let hdr = Header::from_bytes(&raw);
    if hdr.op() != Some(Op::Rw) || hdr.len == 0 {
        return Ok(TxPacket {
            hdr,
            payload: Vec::new(),
        });
    }
    if hdr.len as usize > MAX_PKT_PAYLOAD {
        return Err(PacketError::TooLong(hdr.len));
    }
    if have - HDR_LEN < hdr.len as usize {
        return Err(PacketError::ShortPayload {
            len: hdr.len,
            have: have - HDR_LEN,
        });
    }
    let mut payload = vec![0u8; hdr.len as usize];
    gather(mem, &segs, HDR_LEN, &mut payload)?;
    Ok(TxPacket { hdr, payload })
}

/// The device-writable descriptors of an rx chain, ready to take one packet.
pub struct RxBuffer {
    segs: Vec<Descriptor>,
    capacity: usize,
}

impl RxBuffer {
    pub fn new<M>(chain: DescriptorChain<M>) -> Result<RxBuffer, PacketError>
    where
        M: std::ops::Deref,
        M::Target: GuestMemory,
    {
        let segs = segments(chain, true)?;
        let capacity = segs.iter().map(|d| d.len() as usize).sum();
        if capacity < HDR_LEN {
            return Err(PacketError::RxTooSmall {
                need: HDR_LEN,
                have: capacity,
            });
        }
        Ok(RxBuffer { segs, capacity })
    }

    /// Most payload bytes one packet can carry in this buffer.
    pub fn max_payload(&self) -> usize {
        (self.capacity - HDR_LEN).min(MAX_PKT_PAYLOAD)
    }

    /// Writes `hdr` (with `len` set to the payload's length) and `payload`; returns the
    /// bytes written, for the used ring.
    pub fn write<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        hdr: &Header,
        payload: &[u8],
    ) -> Result<u32, PacketError> {
        let need = HDR_LEN + payload.len();
        if need > self.capacity || payload.len() > MAX_PKT_PAYLOAD {
            return Err(PacketError::RxTooSmall {
                need,
                have: self.capacity,
            });
        }
        let mut hdr = *hdr;
        hdr.len = payload.len() as u32;
        let raw = hdr.to_bytes();
        let mut sources: [&[u8]; 2] = [&raw, payload];
        let mut src_i = 0usize;
        for d in &self.segs {
            let mut addr = d.addr().0;
            let mut room = d.len() as usize;
            while room > 0 && src_i < sources.len() {
                let src = sources[src_i];
                if src.is_empty() {
                    src_i += 1;
                    continue;
                }
                let n = room.min(src.len());
                mem.write_slice(&src[..n], GuestAddress(addr))
                    .map_err(|_| PacketError::Memory(addr))?;
                sources[src_i] = &src[n..];
                addr = addr.wrapping_add(n as u64);
                room -= n;
            }
        }
        Ok(need as u32)
    }
}
