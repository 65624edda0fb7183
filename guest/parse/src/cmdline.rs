//! The guest command line (`probe.run=NAME probe.secs=N ...`), copied out of guest memory once
//! so scenarios can look keys up without touching the VMM's copy again.

use crate::phys::{Memory, PhysError, Region};
use crate::report::Sink;

/// Longest command line the probe keeps; a longer one is an error rather than silently cut.
pub const MAX_LEN: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError {
    Unmapped(PhysError),
    TooLong,
    BadNumber,
}

impl CmdlineError {
    pub fn report<S: Sink>(&self, out: S) -> S {
        match *self {
            CmdlineError::Unmapped(e) => e.report(out.s("command line: ")),
            CmdlineError::TooLong => out
                .s("command line: longer than ")
                .dec(MAX_LEN as u64)
                .s(" bytes or not terminated"),
            CmdlineError::BadNumber => out.s("command line: value is not a decimal number"),
        }
    }
}

/// A copy of the NUL-terminated command line.
pub struct Cmdline {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl Cmdline {
    pub fn empty() -> Self {
        Self {
            buf: [0; MAX_LEN],
            len: 0,
        }
    }

    /// Copies the string at `paddr` (0 means "no command line").
    pub fn read(mem: &dyn Memory, paddr: u64) -> Result<Self, CmdlineError> {
        let mut line = Self::empty();
        if paddr == 0 {
            return Ok(line);
        }
        // Byte by byte: the string may end right before unreadable memory.
        for i in 0..=MAX_LEN as u64 {
            let addr = paddr.checked_add(i).ok_or(CmdlineError::TooLong)?;
            let b = Region::new(mem, addr, 1)
                .map_err(CmdlineError::Unmapped)?
                .u8(0)
                .unwrap_or(0);
            if b == 0 {
                return Ok(line);
            }
            let slot = line.buf.get_mut(i as usize).ok_or(CmdlineError::TooLong)?;
            *slot = b;
            line.len += 1;
        }
        Err(CmdlineError::TooLong)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// The value of the last `key=value` word with this key (later words override earlier ones,
    /// as on a kernel command line).
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        let mut found = None;
        for word in self.as_bytes().split(|&b| b == b' ' || b == b'\t') {
            if let Some(rest) = word.strip_prefix(key.as_bytes()) {
                if let Some(value) = rest.strip_prefix(b"=") {
                    found = Some(value);
                }
            }
        }
        found
    }

    /// A decimal value of `key`, `None` if absent.
    pub fn number(&self, key: &str) -> Result<Option<u64>, CmdlineError> {
        let Some(text) = self.get(key) else {
            return Ok(None);
        };
        parse_decimal(text).map(Some).ok_or(CmdlineError::BadNumber)
    }
}

/// Parses a non-empty decimal number without overflow.
pub fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}
