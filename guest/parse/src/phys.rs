//! Guest-physical memory as the probe's parsers see it: a [`Memory`] that answers byte reads at
//! physical addresses, and checked [`Region`]s of it.
//!
//! In the guest the memory is the boot identity map (the binary's `identity` module); in host
//! tests it is a byte buffer placed at a chosen address. Every address a parser follows comes
//! from the VMM and is treated as hostile: a region is checked as a whole when it is made, and
//! every read is bounds-checked again against the region.

use crate::report::Sink;

/// A physical range that cannot be read (outside the mapped window, or wrapping around).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhysError {
    OutOfRange { addr: u64, len: u64 },
}

impl PhysError {
    pub fn report<S: Sink>(&self, out: S) -> S {
        match *self {
            PhysError::OutOfRange { addr, len } => out
                .s("physical range ")
                .hex(addr)
                .s("+")
                .hex(len)
                .s(" is not readable"),
        }
    }
}

/// Physical memory the parsers read from.
pub trait Memory {
    /// Whether all of `[addr, addr + len)` can be read.
    fn check(&self, addr: u64, len: u64) -> Result<(), PhysError>;
    /// The byte at `addr`; only called for addresses inside a range `check` accepted.
    fn byte(&self, addr: u64) -> u8;
}

/// A checked window `[addr, addr + len)` of a [`Memory`].
#[derive(Clone, Copy)]
pub struct Region<'m> {
    mem: &'m dyn Memory,
    pub addr: u64,
    pub len: u64,
}

impl<'m> Region<'m> {
    /// Checks that the whole range can be read.
    pub fn new(mem: &'m dyn Memory, addr: u64, len: u64) -> Result<Self, PhysError> {
        mem.check(addr, len)?;
        Ok(Self { mem, addr, len })
    }

    /// The memory this region is part of (to follow addresses found in it).
    pub fn memory(&self) -> &'m dyn Memory {
        self.mem
    }

    /// Reads the byte at `offset`, or `None` past the end of the region.
    pub fn u8(&self, offset: u64) -> Option<u8> {
        (offset < self.len).then(|| self.mem.byte(self.addr + offset))
    }

    fn le(&self, offset: u64, size: u64) -> Option<u64> {
        let mut value = 0u64;
        for i in (0..size).rev() {
            value = (value << 8) | u64::from(self.u8(offset.checked_add(i)?)?);
        }
        Some(value)
    }

    pub fn u32(&self, offset: u64) -> Option<u32> {
        self.le(offset, 4).map(|v| v as u32)
    }

    pub fn u64(&self, offset: u64) -> Option<u64> {
        self.le(offset, 8)
    }

    /// Copies `buf.len()` bytes from `offset`; false if that runs past the end.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> bool {
        for (i, b) in buf.iter_mut().enumerate() {
            match offset.checked_add(i as u64).and_then(|o| self.u8(o)) {
                Some(v) => *b = v,
                None => return false,
            }
        }
        true
    }

    /// A sub-region, or `None` if it does not fit.
    pub fn sub(&self, offset: u64, len: u64) -> Option<Region<'m>> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(Region {
            mem: self.mem,
            addr: self.addr + offset,
            len,
        })
    }
}
