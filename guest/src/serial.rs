//! Console output on the first 16550 UART (I/O port 0x3f8), polled, 115200 8N1.
//!
//! Output is built from small pieces (`str`, decimal, hex) instead of `core::fmt`: the formatting
//! machinery of the precompiled `core` is a path where SSE code could slip into the image.

use crate::port::{inb, outb};

const COM1: u16 = 0x3f8;
const THR: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
const LSR_DATA_READY: u8 = 1 << 0;
/// Receive buffer register (read side of offset 0).
const RBR: u16 = 0;
/// Bound on polls of the line-status register per byte, so a missing or stuck UART cannot hang
/// the probe; the byte is written anyway when it runs out.
const MAX_POLLS: u32 = 100_000;

/// Programs the UART: no interrupts, divisor 1 (115200 baud), 8N1, FIFOs on.
pub fn init() {
    outb(COM1 + IER, 0x00);
    outb(COM1 + LCR, 0x80);
    outb(COM1, 0x01);
    outb(COM1 + IER, 0x00);
    outb(COM1 + LCR, 0x03);
    outb(COM1 + FCR, 0xC7);
    outb(COM1 + MCR, 0x03);
}

fn put_byte(byte: u8) {
    let mut polls = 0;
    while inb(COM1 + LSR) & LSR_THR_EMPTY == 0 && polls < MAX_POLLS {
        polls += 1;
        crate::port::spin_hint();
    }
    outb(COM1 + THR, byte);
}

/// A received byte, if one is waiting.
pub fn try_read_byte() -> Option<u8> {
    (inb(COM1 + LSR) & LSR_DATA_READY != 0).then(|| inb(COM1 + RBR))
}

/// A line being written to the console. Methods chain: `out().s("x=").dec(1).nl()`.
pub struct Out;

/// Starts console output.
pub fn out() -> Out {
    Out
}

impl Out {
    /// Writes a string; `\n` becomes `\r\n`.
    pub fn s(self, text: &str) -> Self {
        self.bytes(text.as_bytes())
    }

    /// Writes raw bytes, replacing control and non-ASCII bytes with `?` so hostile input (the
    /// command line) cannot forge extra result lines or terminal escapes.
    pub fn bytes(self, data: &[u8]) -> Self {
        for &b in data {
            match b {
                b'\n' => {
                    put_byte(b'\r');
                    put_byte(b'\n');
                }
                0x20..=0x7e => put_byte(b),
                _ => put_byte(b'?'),
            }
        }
        self
    }

    /// Writes an unsigned number in decimal.
    pub fn dec(self, value: u64) -> Self {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut v = value;
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(buf.get(i..).unwrap_or_default())
    }

    /// Writes an unsigned number as `0x`-prefixed hexadecimal.
    pub fn hex(self, value: u64) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 16];
        let mut i = buf.len();
        let mut v = value;
        loop {
            i -= 1;
            buf[i] = DIGITS[(v & 0xf) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.s("0x").bytes(buf.get(i..).unwrap_or_default())
    }

    /// Writes the low `digits` hex digits of `value`, zero-padded, without a prefix (as `lspci`
    /// prints bus/device numbers and IDs).
    pub fn hex_digits(self, value: u64, digits: u32) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = self;
        for shift in (0..digits.min(16)).rev() {
            let nibble = (value >> (shift * 4)) & 0xf;
            out = out.bytes(&[DIGITS[nibble as usize]]);
        }
        out
    }

    /// Writes `bus:device.function` as `BB:DD.F`.
    pub fn bdf(self, bus: u8, device: u8, function: u8) -> Self {
        self.hex_digits(u64::from(bus), 2)
            .s(":")
            .hex_digits(u64::from(device), 2)
            .s(".")
            .dec(u64::from(function))
    }

    /// Ends the line.
    pub fn nl(self) {
        put_byte(b'\r');
        put_byte(b'\n');
    }
}

/// Starts a `PROBE-RESULT key=` line; the caller writes the value and ends the line.
pub fn result(key: &str) -> Out {
    out().s("PROBE-RESULT ").s(key).s("=")
}

/// Starts a `PROBE-ERROR ` line; the caller writes what went wrong and ends the line.
pub fn error() -> Out {
    out().s("PROBE-ERROR ")
}

impl probe_parse::report::Sink for Out {
    fn s(self, text: &str) -> Self {
        Out::s(self, text)
    }

    fn bytes(self, data: &[u8]) -> Self {
        Out::bytes(self, data)
    }

    fn dec(self, value: u64) -> Self {
        Out::dec(self, value)
    }

    fn hex(self, value: u64) -> Self {
        Out::hex(self, value)
    }
}
