//! The boot-progress marker: one-byte writes to I/O port 0x440 that let the VMM (and tests, and
//! boot-time benchmarks) see how far the probe got without parsing the console.

/// The marker port.
pub const PORT: u16 = 0x440;
/// Written first thing in Rust code, right after the startup code reached long mode.
pub const ENTERED_RUST: u8 = 0x01;
/// Written right before the selected scenario runs.
pub const SCENARIO_START: u8 = 0x02;
/// Written right before the final power-off, reset or triple fault.
pub const ENDING: u8 = 0x03;

pub fn write(value: u8) {
    crate::port::outb(PORT, value);
}
