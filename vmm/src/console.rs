//! Host stdin to the guest's COM1 receive FIFO, so `podvisor run --serial stdout` is an
//! interactive console.
//!
//! A thread named `console-in` blocks on stdin and queues what it reads into the UART; when
//! the 64-byte FIFO is full it waits for the guest to drain it instead of dropping input. The
//! terminal is left in its normal (line-buffered) mode: a line is sent when Enter is pressed,
//! and Ctrl-C still reaches podvisor, which stops the VM. The thread ends at end of input, or
//! at once when podvisor runs as a background job (the guest then gets no input); while the
//! VM lives it costs one blocked read.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::legacy::serial::{Serial, SerialError};

/// The UART as the VMM holds it, with its output sink boxed.
pub type SharedSerial = Arc<Mutex<Serial<Box<dyn Write + Send>>>>;

/// How long to wait for the guest to drain a full receive FIFO before trying again.
const FIFO_FULL_BACKOFF: Duration = Duration::from_millis(10);

/// Starts forwarding `input` (normally stdin) into `serial`.
pub fn forward_input(
    serial: SharedSerial,
    input: impl Read + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
            // A background job that reads its terminal is stopped by SIGTTIN, VM and all.
            // With the signal blocked in this thread the read fails with EIO instead, and
            // only console input is lost.
            if let Err(e) = vmm_sys_util::signal::block_signal(libc::SIGTTIN) {
                log::warn!("console input disabled: cannot block SIGTTIN: {e}");
                return;
            }
            crate::seccomp::enter(crate::seccomp::Role::Serial);
            pump(&serial, input)
        })
        .map(|_| ())
}

/// Copies `input` into the UART until end of input or a read error.
fn pump(serial: &SharedSerial, mut input: impl Read) {
    let mut buf = [0u8; 256];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                log::info!("console input unavailable: not the terminal's foreground job");
                return;
            }
            Err(e) => {
                log::warn!("console input stopped: {e}");
                return;
            }
        };
        let mut pending = &buf[..n];
        while !pending.is_empty() {
            match queue(serial, pending) {
                Ok(taken) => pending = &pending[taken..],
                Err(e) => {
                    log::warn!("console input stopped: {e}");
                    return;
                }
            }
            if !pending.is_empty() {
                std::thread::sleep(FIFO_FULL_BACKOFF);
            }
        }
    }
}

/// Queues as much of `bytes` as the FIFO takes now; returns how many bytes it took.
fn queue(serial: &SharedSerial, bytes: &[u8]) -> Result<usize, SerialError> {
    let mut uart = serial.lock().unwrap_or_else(|e| e.into_inner());
    match uart.queue_input(bytes) {
        Ok(()) => Ok(bytes.len()),
        Err(SerialError::InputFull { room, .. }) => {
            let take = room.min(bytes.len());
            if take > 0 {
                uart.queue_input(&bytes[..take])?;
            }
            Ok(take)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::bus::BusDevice;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    /// Reads the receive buffer register until the line status says it is empty.
    fn drain(serial: &SharedSerial) -> Vec<u8> {
        let mut out = Vec::new();
        let mut uart = serial.lock().unwrap();
        loop {
            let mut lsr = [0u8];
            uart.read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                return out;
            }
            let mut rbr = [0u8];
            uart.read(0, &mut rbr);
            out.push(rbr[0]);
        }
    }

    #[test]
    fn input_larger_than_the_fifo_arrives_whole_and_in_order() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let sink: Box<dyn Write + Send> = Box::new(std::io::sink());
        let serial: SharedSerial = Arc::new(Mutex::new(Serial::new(irq, sink)));
        let input: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        forward_input(serial.clone(), std::io::Cursor::new(input.clone())).unwrap();
        let mut received = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while received.len() < input.len() && std::time::Instant::now() < deadline {
            received.extend(drain(&serial));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(received, input);
    }
}
