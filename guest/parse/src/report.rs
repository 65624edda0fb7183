//! Where error reports go. Errors describe themselves piece by piece into a [`Sink`] (the serial
//! console in the guest, a string in host tests) instead of through `core::fmt`, whose
//! precompiled code is a path by which SSE instructions could enter the guest image.

/// A writer of report pieces; methods chain.
pub trait Sink: Sized {
    fn s(self, text: &str) -> Self;
    /// Raw bytes from guest memory or the command line; the sink decides how to show them.
    fn bytes(self, data: &[u8]) -> Self;
    fn dec(self, value: u64) -> Self;
    /// `0x`-prefixed lowercase hexadecimal.
    fn hex(self, value: u64) -> Self;
}
