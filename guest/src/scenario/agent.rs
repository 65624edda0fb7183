//! `agent`: the pod agent of the demo. Listens on vsock port [`AGENT_PORT`] and answers one line
//! per request line, on any number of connections:
//!
//! - `echo TEXT` → `ok TEXT`
//! - `disk-sha256 N` → `ok <hex>`: SHA-256 of the first N MiB of disk 0 (`NK`: KiB, in 16 KiB
//!   steps)
//! - `read PATH` → `ok <contents>`: a file of the first virtio-fs share (PATH relative to its
//!   root; at most 4 KiB, with `\`, newlines and other control bytes escaped as `\xHH`)
//! - `poweroff` → `ok bye`, then the VM powers off
//!
//! Anything else, or a failure, answers `err <reason>`. Results: `agent-port=1024` once it
//! listens, `agent-requests=N` and `agent-end=poweroff|timeout|error` at the end (after
//! `probe.secs`, default 3600).

extern crate alloc;

use alloc::vec::Vec;

use super::blk_common::{Blk, Disks, CHUNK};
use super::fs_rw::Shares;
use super::vsock_echo::{self, Manager};
use super::Context;
use crate::clock::Clock;
use crate::fuse_client::{ClientError, Session};
use crate::power::Ending;
use crate::serial::{error, out, result};
use probe_parse::agent::{components, escape, parse_request, AgentRequest};
use probe_parse::fuse::ROOT_ID;
use sha2::{Digest, Sha256};
use virtio_drivers::device::blk::SECTOR_SIZE;
use virtio_drivers::device::socket::{SocketError, VsockAddr, VsockEventType};

pub const AGENT_PORT: u32 = 1024;
/// Longest request line kept; longer lines are answered with an error.
const MAX_LINE: usize = 4096;
/// Most file bytes `read` returns.
const MAX_READ: usize = 4096;
const MAX_CONNS: usize = 16;

struct Conn {
    peer: VsockAddr,
    line: Vec<u8>,
    out: Vec<u8>,
}

/// The devices requests use, opened lazily so the agent answers `echo` with no disk or share.
/// Each is opened once (device set-up takes DMA pages, which the probe never gives back).
struct Devices<'a> {
    ctx: &'a Context<'a>,
    shares: Option<Option<Shares>>,
    disk: Option<Option<Blk>>,
}

pub fn run(ctx: &Context) -> Ending {
    let end = serve(ctx);
    result("agent-end").s(end).nl();
    Ending::PowerOff
}

fn serve(ctx: &Context) -> &'static str {
    let secs = ctx
        .cmdline
        .number("probe.secs")
        .ok()
        .flatten()
        .unwrap_or(3600);
    let clock = match Clock::start() {
        Ok(c) => c,
        Err(e) => {
            e.report(error()).nl();
            return "error";
        }
    };
    let Some(mut vsock) = vsock_echo::open(ctx) else {
        return "error";
    };
    vsock.listen(AGENT_PORT);
    result("agent-port").dec(AGENT_PORT.into()).nl();
    out().s("probe: agent listening").nl();
    let mut devices = Devices {
        ctx,
        shares: None,
        disk: None,
    };
    let mut conns: Vec<Conn> = Vec::new();
    let mut requests = 0u64;
    let mut buf = [0u8; 1024];
    let start = clock.now_ns();
    let mut stopping = false;
    let end = loop {
        if clock.now_ns().wrapping_sub(start) >= secs.saturating_mul(1_000_000_000) {
            break "timeout";
        }
        if stopping && conns.iter().all(|c| c.out.is_empty()) {
            break "poweroff";
        }
        match vsock.poll() {
            Ok(Some(ev)) => match ev.event_type {
                VsockEventType::ConnectionRequest if ev.destination.port == AGENT_PORT => {
                    if conns.len() >= MAX_CONNS {
                        let _ = vsock.force_close(ev.source, AGENT_PORT);
                    } else {
                        conns.push(Conn {
                            peer: ev.source,
                            line: Vec::new(),
                            out: Vec::new(),
                        });
                    }
                }
                VsockEventType::Disconnected { .. } => conns.retain(|c| c.peer != ev.source),
                _ => {}
            },
            Ok(None) => {}
            Err(_) => {
                error().s("agent: vsock poll failed").nl();
                break "error";
            }
        }
        let mut i = 0;
        while let Some(c) = conns.get_mut(i) {
            let alive = step(
                &mut vsock,
                c,
                &mut buf,
                &mut devices,
                &clock,
                &mut requests,
                &mut stopping,
            );
            if alive {
                i += 1;
            } else {
                conns.remove(i);
            }
        }
    };
    result("agent-requests").dec(requests).nl();
    end
}

/// Receives, answers and sends for one connection; false once it is gone.
fn step(
    vsock: &mut Manager,
    c: &mut Conn,
    buf: &mut [u8; 1024],
    devices: &mut Devices,
    clock: &Clock,
    requests: &mut u64,
    stopping: &mut bool,
) -> bool {
    if !c.out.is_empty() {
        return match vsock.send(c.peer, AGENT_PORT, &c.out) {
            Ok(()) => {
                c.out.clear();
                true
            }
            Err(virtio_drivers::Error::SocketDeviceError(
                SocketError::InsufficientBufferSpaceInPeer,
            )) => {
                let _ = vsock.update_credit(c.peer, AGENT_PORT);
                true
            }
            Err(_) => false,
        };
    }
    let n = match vsock.recv(c.peer, AGENT_PORT, buf) {
        Ok(n) => n,
        Err(_) => return false,
    };
    if n == 0 {
        return true;
    }
    let _ = vsock.update_credit(c.peer, AGENT_PORT);
    for &b in buf.get(..n).unwrap_or(&[]) {
        if b != b'\n' {
            if c.line.len() <= MAX_LINE {
                c.line.push(b);
            }
            continue;
        }
        *requests += 1;
        let line = core::mem::take(&mut c.line);
        if line.len() > MAX_LINE {
            c.out.extend_from_slice(b"err line too long\n");
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        answer(line, &mut c.out, devices, clock, stopping);
    }
    true
}

fn answer(
    line: &[u8],
    out: &mut Vec<u8>,
    devices: &mut Devices,
    clock: &Clock,
    stopping: &mut bool,
) {
    let reply = match parse_request(line, CHUNK as u64) {
        Ok(AgentRequest::Echo(text)) => {
            out.extend_from_slice(b"ok ");
            escape(text, |b| out.push(b));
            Ok(())
        }
        Ok(AgentRequest::Poweroff) => {
            *stopping = true;
            out.extend_from_slice(b"ok bye");
            Ok(())
        }
        Ok(AgentRequest::DiskSha256 { bytes }) => devices.disk_sha256(bytes, out),
        Ok(AgentRequest::Read(path)) => devices.read(path, out, clock),
        Err(why) => Err(why),
    };
    if let Err(why) = reply {
        out.extend_from_slice(b"err ");
        out.extend_from_slice(why.as_bytes());
    }
    out.push(b'\n');
}

impl Devices<'_> {
    fn disk_sha256(&mut self, bytes: u64, out: &mut Vec<u8>) -> Result<(), &'static str> {
        let ctx = self.ctx;
        let disk = self.disk.get_or_insert_with(|| {
            Disks::discover(ctx).and_then(|mut d| d.open(0, "agent-blk0-bdf"))
        });
        let blk = disk.as_mut().ok_or("no virtio-blk disk")?;
        if blk.capacity().saturating_mul(SECTOR_SIZE as u64) < bytes {
            return Err("the disk is smaller than that");
        }
        let mut hash = Sha256::new();
        let mut buf = [0u8; CHUNK];
        let mut offset = 0u64;
        while offset < bytes {
            let sector = (offset / SECTOR_SIZE as u64) as usize;
            blk.read_blocks(sector, &mut buf)
                .map_err(|_| "disk read failed")?;
            hash.update(buf);
            offset += CHUNK as u64;
        }
        out.extend_from_slice(b"ok ");
        for b in hash.finalize() {
            for nibble in [b >> 4, b & 15] {
                out.push(
                    b"0123456789abcdef"
                        .get(usize::from(nibble))
                        .copied()
                        .unwrap_or(b'?'),
                );
            }
        }
        Ok(())
    }
}

impl Devices<'_> {
    fn session(&mut self, clock: &Clock) -> Option<&mut Session> {
        let ctx = self.ctx;
        let shares = self.shares.get_or_insert_with(|| Shares::open(ctx, clock));
        let shares = shares.as_mut()?;
        let index = shares.index_of(ctx.cmdline.get("probe.fs-tag"))?;
        shares.sessions.get_mut(index)?.as_mut()
    }

    fn read(&mut self, path: &[u8], out: &mut Vec<u8>, clock: &Clock) -> Result<(), &'static str> {
        let session = self.session(clock).ok_or("no virtio-fs share")?;
        let mut node = ROOT_ID;
        let mut parts = components(path).peekable();
        let mut name: &[u8] = &[];
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                name = part;
            } else {
                node = session.lookup(node, part, clock).map_err(why)?.nodeid;
            }
        }
        let mut data: Vec<u8> = Vec::new();
        session
            .read_file_at(node, name, clock, |chunk| {
                let room = MAX_READ.saturating_sub(data.len());
                data.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or(&[]));
            })
            .map_err(why)?;
        out.extend_from_slice(b"ok ");
        escape(&data, |b| out.push(b));
        Ok(())
    }
}

fn why(e: ClientError) -> &'static str {
    match e.errno() {
        Some(2) => "no such file",
        Some(13) => "permission denied",
        Some(21) => "is a directory",
        Some(_) => "the share answered an error",
        None => "the share does not answer",
    }
}
