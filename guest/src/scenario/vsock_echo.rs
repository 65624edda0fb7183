//! `vsock-echo`: plays the pod agent on virtio-vsock. Listens on port [`ECHO_PORT`] and echoes
//! every connection (any number at once), connects out to host port [`HELLO_PORT`] and sends
//! `probe-hello`, and ends when anything connects to port [`STOP_PORT`] (or after
//! `probe.secs=N` seconds, default 300). For throughput measurements, connections to
//! [`SINK_PORT`] are read and discarded, and connections to [`SOURCE_PORT`] get
//! `probe.vsock-source-mib` MiB (default 16) of zeros, then a shutdown.
//!
//! Parameters: `probe.vsock-listen-delay-ms=N` (0) keeps refusing connections for N ms after
//! the device is up, so tests can dial before the agent listens.
//! Results: `vsock-bdf=BB:DD.F`, `vsock-cid=N`, `vsock-accepted=N` (echo connections),
//! `vsock-echo-bytes=N`, `vsock-hello=sent|refused|pending`, `vsock-end=stop|timeout|error`.

extern crate alloc;

use alloc::vec::Vec;

use super::Context;
use crate::clock::Clock;
use crate::dma::ProbeHal;
use crate::power::Ending;
use crate::serial::{error, out, result};
use virtio_drivers::device::socket::{
    DisconnectReason, SocketError, VirtIOSocket, VsockAddr, VsockConnectionManager, VsockEventType,
    VMADDR_CID_HOST,
};
use virtio_drivers::transport::pci::bus::Command;
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;

pub const ECHO_PORT: u32 = 1024;
pub const STOP_PORT: u32 = 1025;
pub const HELLO_PORT: u32 = 2000;
pub const SINK_PORT: u32 = 1030;
pub const SOURCE_PORT: u32 = 1031;
/// The probe's port for its own connection to the host.
const HELLO_LOCAL_PORT: u32 = 4000;
/// Receive buffer per connection (the credit the host gets).
const CONN_BUFFER: u32 = 32 * 1024;
/// Bytes of each rx queue buffer.
const RX_BUFFER: usize = 4096;
/// Most bytes echoed per send.
const CHUNK: usize = 4096;
/// Most echo connections tracked at once (more are closed).
const MAX_CONNS: usize = 256;
const DEFAULT_SECS: u64 = 300;

pub(super) type Manager = VsockConnectionManager<ProbeHal, PciTransport, RX_BUFFER>;

/// One connection and the bytes received but not yet sent back (echo), or the bytes still to
/// send (source).
struct Echo {
    peer: VsockAddr,
    port: u32,
    pending: Vec<u8>,
    to_send: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hello {
    Pending,
    Sent,
    Refused,
}

pub fn run(ctx: &Context) -> Ending {
    let end = serve(ctx);
    result("vsock-end").s(end).nl();
    Ending::PowerOff
}

/// Finds the first virtio-vsock function on the root bus and brings the driver up.
pub(super) fn open(ctx: &Context) -> Option<Manager> {
    let (mut root, ecam) = super::blk_common::pci_root(ctx)?;
    let function = root
        .enumerate_bus(ecam.start_bus)
        .find(|(_, info)| virtio_device_type(info) == Some(DeviceType::Socket))
        .map(|(f, _)| f);
    let Some(function) = function else {
        error().s("vsock: no virtio-vsock device").nl();
        return None;
    };
    result("vsock-bdf")
        .bdf(function.bus, function.device, function.function)
        .nl();
    root.set_command(function, Command::MEMORY_SPACE | Command::BUS_MASTER);
    let Ok(transport) = PciTransport::new::<ProbeHal, _>(&mut root, function) else {
        error().s("vsock: unusable virtio PCI capabilities").nl();
        return None;
    };
    match VirtIOSocket::<ProbeHal, _, RX_BUFFER>::new(transport) {
        Ok(driver) => Some(VsockConnectionManager::new_with_capacity(
            driver,
            CONN_BUFFER,
        )),
        Err(_) => {
            error().s("vsock: device initialisation failed").nl();
            None
        }
    }
}

fn serve(ctx: &Context) -> &'static str {
    let (Some(secs), Some(delay_ms)) = (
        ctx.number_or("probe.secs", DEFAULT_SECS),
        ctx.number_or("probe.vsock-listen-delay-ms", 0),
    ) else {
        return "error";
    };
    let Some(source_mib) = ctx.number_or("probe.vsock-source-mib", 16) else {
        return "error";
    };
    let clock = match Clock::start() {
        Ok(c) => c,
        Err(e) => {
            e.report(error()).nl();
            return "error";
        }
    };
    let Some(mut vsock) = open(ctx) else {
        return "error";
    };
    result("vsock-cid").dec(vsock.guest_cid()).nl();
    let host = VsockAddr {
        cid: VMADDR_CID_HOST,
        port: HELLO_PORT,
    };
    let mut hello = match vsock.connect(host, HELLO_LOCAL_PORT) {
        Ok(()) => Hello::Pending,
        Err(_) => Hello::Refused,
    };
    let start = clock.now_ns();
    let mut listening = delay_ms == 0;
    if listening {
        listen_all(&mut vsock);
        out().s("probe: vsock-echo listening").nl();
    }
    let mut conns: Vec<Echo> = Vec::new();
    let mut accepted = 0u64;
    let mut echoed = 0u64;
    let mut buf = [0u8; CHUNK];
    let end = loop {
        let elapsed = clock.now_ns().wrapping_sub(start);
        if elapsed >= secs * 1_000_000_000 {
            break "timeout";
        }
        if !listening && elapsed >= delay_ms * 1_000_000 {
            listen_all(&mut vsock);
            listening = true;
            out().s("probe: vsock-echo listening").nl();
        }
        let event = match vsock.poll() {
            Ok(e) => e,
            Err(_) => {
                error().s("vsock: poll failed").nl();
                break "error";
            }
        };
        if let Some(ev) = event {
            let from_hello = ev.destination.port == HELLO_LOCAL_PORT && ev.source == host;
            match ev.event_type {
                VsockEventType::Connected if from_hello => {
                    let sent = vsock.send(host, HELLO_LOCAL_PORT, b"probe-hello").is_ok()
                        && vsock.shutdown(host, HELLO_LOCAL_PORT).is_ok();
                    hello = if sent { Hello::Sent } else { Hello::Refused };
                }
                VsockEventType::Disconnected { .. } if from_hello => {
                    if hello == Hello::Pending {
                        hello = Hello::Refused;
                    }
                }
                VsockEventType::ConnectionRequest if ev.destination.port == STOP_PORT => {
                    break "stop";
                }
                VsockEventType::ConnectionRequest => {
                    accepted += 1;
                    if conns.len() >= MAX_CONNS {
                        let _ = vsock.force_close(ev.source, ev.destination.port);
                    } else {
                        let source = ev.destination.port == SOURCE_PORT;
                        conns.push(Echo {
                            peer: ev.source,
                            port: ev.destination.port,
                            pending: Vec::new(),
                            to_send: if source { source_mib << 20 } else { 0 },
                        });
                    }
                }
                VsockEventType::Disconnected {
                    reason: DisconnectReason::Reset,
                } => conns.retain(|c| !(c.peer == ev.source && c.port == ev.destination.port)),
                _ => {}
            }
        }
        conns.retain_mut(|c| pump(&mut vsock, c, &mut buf, &mut echoed));
    };
    result("vsock-accepted").dec(accepted).nl();
    result("vsock-echo-bytes").dec(echoed).nl();
    let hello = match hello {
        Hello::Pending => "pending",
        Hello::Sent => "sent",
        Hello::Refused => "refused",
    };
    result("vsock-hello").s(hello).nl();
    end
}

fn listen_all(vsock: &mut Manager) {
    for port in [ECHO_PORT, STOP_PORT, SINK_PORT, SOURCE_PORT] {
        vsock.listen(port);
    }
}

/// Moves received bytes of one connection back to its peer (or drops them, or sends the
/// source's bytes); false once it is gone.
fn pump(vsock: &mut Manager, c: &mut Echo, buf: &mut [u8; CHUNK], echoed: &mut u64) -> bool {
    if c.port == SOURCE_PORT {
        return source(vsock, c);
    }
    if c.port == SINK_PORT {
        return match vsock.recv(c.peer, c.port, buf) {
            Ok(0) => true,
            Ok(_) => vsock.update_credit(c.peer, c.port).is_ok(),
            Err(_) => false,
        };
    }
    if c.pending.is_empty() {
        match vsock.recv(c.peer, c.port, buf) {
            Ok(0) => return true,
            Ok(n) => c.pending.extend_from_slice(&buf[..n]),
            Err(_) => return false,
        }
    }
    match vsock.send(c.peer, c.port, &c.pending) {
        Ok(()) => {
            *echoed += c.pending.len() as u64;
            c.pending.clear();
            true
        }
        Err(virtio_drivers::Error::SocketDeviceError(
            SocketError::InsufficientBufferSpaceInPeer,
        )) => {
            // The reply waits for credit; tell the host what we consumed meanwhile.
            let _ = vsock.update_credit(c.peer, c.port);
            true
        }
        Err(_) => false,
    }
}

/// Sends the next chunk of a source connection while the host has credit; shuts it down once
/// everything went out.
fn source(vsock: &mut Manager, c: &mut Echo) -> bool {
    if c.to_send == 0 {
        return true;
    }
    let n = (CHUNK as u64).min(c.to_send) as usize;
    let zeros = [0u8; CHUNK];
    match vsock.send(c.peer, c.port, &zeros[..n]) {
        Ok(()) => {
            c.to_send -= n as u64;
            if c.to_send == 0 {
                let _ = vsock.shutdown(c.peer, c.port);
            }
            true
        }
        Err(virtio_drivers::Error::SocketDeviceError(
            SocketError::InsufficientBufferSpaceInPeer,
        )) => true,
        Err(_) => false,
    }
}
