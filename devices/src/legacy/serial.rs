//! The COM1 16550A UART.
//!
//! Register semantics come from `vm_superio::Serial`; this module adapts it to the port bus,
//! raises its interrupt through an `EventFd` (the VMM registers that fd as an irqfd for
//! [`COM1_IRQ`], so a transmit-empty interrupt never leaves the vCPU thread for a VMM
//! thread), and sends guest output to any writer: the process's stdout for an interactive
//! run, a file or pipe the test fixture reads, or a sink.

use std::io::{self, Write};

use vm_superio::serial::{Error as UartError, NoEvents};
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use super::{low_byte, RateLimitedLog};
use crate::bus::BusDevice;

/// The first I/O port of COM1.
pub const COM1_PORT: u16 = 0x3f8;
/// Number of ports a 16550 decodes (THR/RBR .. SCR).
pub const SERIAL_PORT_LEN: u16 = 8;
/// The ISA interrupt line (and, with the identity-mapped IOAPIC pins, the GSI) of COM1.
pub const COM1_IRQ: u32 = 4;

/// Errors from the serial device's host side.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("cannot duplicate the serial interrupt eventfd: {0}")]
    CloneEventFd(#[source] io::Error),
    #[error("serial receive FIFO has room for {room} bytes, {len} offered")]
    InputFull { room: usize, len: usize },
    #[error("cannot raise the serial interrupt after queueing input: {0}")]
    Interrupt(#[source] io::Error),
}

/// Raises the UART interrupt by writing to an eventfd (an irqfd on the VMM side).
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// A 16550A UART at [`COM1_PORT`], output only so far (input can be fed with
/// [`Serial::queue_input`]).
pub struct Serial<W: Write + Send> {
    uart: vm_superio::Serial<EventFdTrigger, NoEvents, W>,
    bad_access: RateLimitedLog,
}

impl<W: Write + Send> Serial<W> {
    /// Builds the UART. `interrupt` is signalled whenever the UART raises its interrupt line;
    /// the caller keeps a clone to register as an irqfd. Guest output goes to `out`, flushed
    /// after every byte so that a console line appears as soon as it is written.
    pub fn new(interrupt: EventFd, out: W) -> Self {
        Self {
            uart: vm_superio::Serial::new(EventFdTrigger(interrupt), out),
            bad_access: RateLimitedLog::default(),
        }
    }

    /// Like [`Serial::new`], returning a clone of the interrupt eventfd as well, for the
    /// caller to register with KVM.
    pub fn with_interrupt_clone(
        interrupt: EventFd,
        out: W,
    ) -> Result<(Self, EventFd), SerialError> {
        let clone = interrupt.try_clone().map_err(SerialError::CloneEventFd)?;
        Ok((Self::new(interrupt, out), clone))
    }

    /// Offers host input to the guest (the receive FIFO). All of `input` is queued or none.
    pub fn queue_input(&mut self, input: &[u8]) -> Result<(), SerialError> {
        let room = self.uart.fifo_capacity();
        if input.len() > room {
            return Err(SerialError::InputFull {
                room,
                len: input.len(),
            });
        }
        match self.uart.enqueue_raw_bytes(input) {
            Ok(_) => Ok(()),
            Err(UartError::Trigger(e)) => Err(SerialError::Interrupt(e)),
            Err(UartError::FullFifo) => Err(SerialError::InputFull {
                room,
                len: input.len(),
            }),
            Err(UartError::IOError(e)) => Err(SerialError::Interrupt(e)),
        }
    }

    /// The writer guest output goes to.
    pub fn writer(&self) -> &W {
        self.uart.writer()
    }
}

impl<W: Write + Send> BusDevice for Serial<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Every UART register is one byte; a wider access reads the register at its offset
        // in the low byte and nothing (all-ones, as from an undriven ISA bus) above it.
        let Some((first, rest)) = data.split_first_mut() else {
            return;
        };
        rest.fill(0xff);
        match u8::try_from(offset) {
            Ok(off) if off < SERIAL_PORT_LEN as u8 => *first = self.uart.read(off),
            _ => {
                *first = 0xff;
                self.bad_access
                    .warn(format_args!("serial: read of unknown offset {offset:#x}"));
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(value) = low_byte(data) else {
            return;
        };
        let off = match u8::try_from(offset) {
            Ok(off) if off < SERIAL_PORT_LEN as u8 => off,
            _ => {
                self.bad_access
                    .warn(format_args!("serial: write to unknown offset {offset:#x}"));
                return;
            }
        };
        if let Err(e) = self.uart.write(off, value) {
            // The guest cannot cause these (full host pipe, failed eventfd write), but it
            // could repeat them at every byte, so they are rate-limited like guest faults.
            let msg = match e {
                UartError::Trigger(e) => format!("cannot raise interrupt: {e}"),
                UartError::IOError(e) => format!("cannot write output: {e}"),
                UartError::FullFifo => "receive FIFO full".to_string(),
            };
            self.bad_access.warn(format_args!("serial: {msg}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the test can read back while the device owns a handle to it.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const LSR: u64 = 5;
    const SCR: u64 = 7;

    fn serial() -> (Serial<SharedBuf>, EventFd, SharedBuf) {
        let out = SharedBuf::default();
        let evt = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let (serial, irq) = Serial::with_interrupt_clone(evt, out.clone()).unwrap();
        (serial, irq, out)
    }

    #[test]
    fn transmits_guest_bytes_to_the_writer() {
        let (mut s, _irq, out) = serial();
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hi\n");
        let mut lsr = [0u8];
        s.read(LSR, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty after transmit");
    }

    #[test]
    fn raises_the_interrupt_when_thr_empty_is_enabled() {
        let (mut s, irq, _out) = serial();
        s.write(IER, &[0x02]);
        s.write(0, b"x");
        assert_eq!(irq.read().unwrap(), 1);
        let mut iir = [0u8];
        s.read(IIR, &mut iir);
        assert_eq!(iir[0] & 0x0f, 0x02, "THR-empty interrupt pending");
    }

    #[test]
    fn wide_and_out_of_range_accesses_are_harmless() {
        let (mut s, _irq, out) = serial();
        s.write(SCR, &[0x5a, 0x11, 0x22, 0x33]);
        let mut wide = [0u8; 4];
        s.read(SCR, &mut wide);
        assert_eq!(wide, [0x5a, 0xff, 0xff, 0xff]);
        let mut b = [0u8];
        s.read(8, &mut b);
        assert_eq!(b, [0xff]);
        s.write(u64::MAX, b"z");
        s.write(0, &[]);
        s.read(0, &mut []);
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn divisor_latch_does_not_leak_into_output() {
        let (mut s, _irq, out) = serial();
        s.write(LCR, &[0x80]);
        s.write(0, &[0x01]);
        s.write(LCR, &[0x03]);
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn queued_input_is_read_back_and_bounded() {
        let (mut s, _irq, _out) = serial();
        s.queue_input(b"ok").unwrap();
        let mut b = [0u8];
        s.read(0, &mut b);
        assert_eq!(b, [b'o']);
        s.read(0, &mut b);
        assert_eq!(b, [b'k']);
        let huge = vec![0u8; 4096];
        assert!(matches!(
            s.queue_input(&huge),
            Err(SerialError::InputFull { len: 4096, .. })
        ));
    }
}
