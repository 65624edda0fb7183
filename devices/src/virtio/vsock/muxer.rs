//! The hybrid-vsock backend: one listening Unix socket multiplexed onto the guest's vsock
//! streams, wire-compatible with Firecracker's and Cloud Hypervisor's (what Kata speaks).
//!
//! * Host-initiated: a client connects to `PATH` and writes `CONNECT <port>\n` (keyword in any
//!   case, at most [`MAX_CONNECT_LINE`] bytes, possibly in pieces). The muxer sends the guest
//!   a `REQUEST` from a fresh host port (from 2^30 up); on `RESPONSE` it writes
//!   `OK <host_port>\n`, then relays bytes both ways. Bytes the client sent right behind its
//!   line are kept and go to the guest first. Refusal (guest `RST`), silence for
//!   [`CONNECT_TIMEOUT`], a malformed line or a full table close the client with no text.
//! * Guest-initiated: a `REQUEST` to host port `P` connects to `PATH_P`; failure is an `RST`.
//!
//! All sockets are non-blocking and registered edge-triggered in the muxer's own epoll, whose
//! fd the worker waits on. Memory is bounded: at most [`MAX_CONNECTIONS`] sockets, each with
//! at most [`conn::BUF_ALLOC`] bytes held for the host, and at most [`MAX_CONTROL`] queued
//! control packets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::conn::{rst_reply, Connection, Event, State};
use super::packet::{Header, Op, TxPacket, HOST_CID, TYPE_STREAM};

/// Longest `CONNECT` line, newline included.
pub const MAX_CONNECT_LINE: usize = 32;
/// How long a client may take to send its line, and the guest to answer the `REQUEST`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guest gets to reset a connection the host closed.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most Unix connections (handshaking or relaying) at once.
pub const MAX_CONNECTIONS: usize = 1023;
/// Most control packets (mostly `RST`s) queued for a guest that does not read its rx queue.
pub const MAX_CONTROL: usize = 2048;
/// First host port handed to host-initiated connections.
pub const FIRST_HOST_PORT: u32 = 1 << 30;
/// Most listener accepts per wake-up.
const ACCEPT_BUDGET: usize = 64;

/// Errors setting up the muxer (host faults).
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    #[error("cannot set up the muxer's epoll: {0}")]
    Epoll(io::Error),
    #[error("cannot make the vsock listener non-blocking: {0}")]
    Listener(io::Error),
}

/// (host port, guest port).
type Key = (u32, u32);

struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

struct Live {
    stream: UnixStream,
    conn: Connection,
    /// Already in the ready queue.
    queued: bool,
    /// The host port came from [`Muxer::allocate_port`] and goes back on removal.
    allocated_port: bool,
}

enum Slot {
    Handshake(Handshake),
    Conn(Key),
}

/// What happened, for tests and observability.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MuxerStats {
    pub accepted: u64,
    pub refused: u64,
    pub established: u64,
    pub dropped_packets: u64,
    pub dropped_control: u64,
}

/// Whether `e` says the process (or the system) ran out of descriptors.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// The descriptor [`Muxer`] keeps in reserve: a duplicate of its listener, which needs no
/// path (Landlock cannot refuse it).
fn take_reserve(listener: &UnixListener) -> Option<OwnedFd> {
    listener.as_fd().try_clone_to_owned().ok()
}

/// Parses a `CONNECT <port>` line (without its newline).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let keyword = words.next()?;
    let port = words.next()?;
    if !keyword.eq_ignore_ascii_case("connect") || words.next().is_some() {
        return None;
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// The Unix-socket side of the device.
pub struct Muxer {
    guest_cid: u64,
    path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    slots: HashMap<RawFd, Slot>,
    conns: HashMap<Key, Live>,
    host_ports: HashSet<u32>,
    next_port: u32,
    ready: VecDeque<Key>,
    control: VecDeque<Header>,
    stats: MuxerStats,
    /// One descriptor held back: when `accept` fails for want of descriptors (EMFILE), the
    /// muxer gives it up to take the waiting client off the backlog and close it, so the
    /// client sees its connection end instead of waiting unanswered.
    reserve: Option<OwnedFd>,
}

impl Muxer {
    /// Serves `listener` (bound to `path`) for the guest with CID `guest_cid`.
    pub fn new(guest_cid: u64, path: PathBuf, listener: UnixListener) -> Result<Self, MuxerError> {
        listener
            .set_nonblocking(true)
            .map_err(MuxerError::Listener)?;
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, listener.as_raw_fd() as u64),
            )
            .map_err(MuxerError::Epoll)?;
        let reserve = take_reserve(&listener);
        Ok(Muxer {
            guest_cid,
            path,
            listener,
            epoll,
            slots: HashMap::new(),
            conns: HashMap::new(),
            host_ports: HashSet::new(),
            next_port: FIRST_HOST_PORT,
            ready: VecDeque::new(),
            control: VecDeque::new(),
            stats: MuxerStats::default(),
            reserve,
        })
    }

    /// Gives the listener back (device reset); every connection is closed.
    pub fn into_listener(self) -> UnixListener {
        self.listener
    }

    /// The fd the worker waits on: readable when any socket needs attention.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    pub fn stats(&self) -> &MuxerStats {
        &self.stats
    }

    /// Unix connections open (handshaking or relaying).
    pub fn open_connections(&self) -> usize {
        self.slots.len()
    }

    /// Handles ready sockets (at most `budget` epoll events).
    pub fn handle_events(&mut self, budget: usize) {
        let mut events = vec![EpollEvent::default(); budget.max(1)];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("vsock muxer epoll: {e}");
                return;
            }
        };
        for ev in events.iter().take(n) {
            let fd = ev.data() as RawFd;
            if fd == self.listener.as_raw_fd() {
                self.accept();
                continue;
            }
            let key = match self.slots.get(&fd) {
                Some(Slot::Handshake(_)) => {
                    self.read_handshake(fd);
                    continue;
                }
                Some(Slot::Conn(key)) => *key,
                None => continue,
            };
            let set = ev.event_set();
            if set.intersects(EventSet::OUT | EventSet::ERROR | EventSet::HANG_UP) {
                self.flush(key);
            }
            if set.intersects(EventSet::IN | EventSet::ERROR | EventSet::HANG_UP) {
                self.mark_ready(key);
            }
        }
    }

    fn register(&self, fd: RawFd) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(
                EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED | EventSet::READ_HANG_UP,
                fd as u64,
            ),
        )
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_exhaustion(&e) && self.reserve.take().is_some() => {
                    if let Ok((client, _)) = self.listener.accept() {
                        drop(client);
                        self.stats.refused += 1;
                        log::warn!("vsock: out of file descriptors, a host client was closed");
                    }
                    self.reserve = take_reserve(&self.listener);
                    continue;
                }
                Err(e) => {
                    log::warn!("vsock: accept on {}: {e}", self.path.display());
                    if self.reserve.is_none() {
                        self.reserve = take_reserve(&self.listener);
                    }
                    return;
                }
            };
            if self.slots.len() >= MAX_CONNECTIONS {
                self.stats.refused += 1;
                continue;
            }
            if stream.set_nonblocking(true).is_err() || self.register(stream.as_raw_fd()).is_err() {
                self.stats.refused += 1;
                continue;
            }
            self.stats.accepted += 1;
            let fd = stream.as_raw_fd();
            self.slots.insert(
                fd,
                Slot::Handshake(Handshake {
                    stream,
                    line: Vec::with_capacity(MAX_CONNECT_LINE),
                    deadline: Instant::now() + CONNECT_TIMEOUT,
                }),
            );
            // Bytes may already be there; edge-triggered epoll would not say so again.
            self.read_handshake(fd);
        }
    }

    /// Reads what the client sent of its `CONNECT` line; acts once it is complete.
    fn read_handshake(&mut self, fd: RawFd) {
        let Some(Slot::Handshake(hs)) = self.slots.get_mut(&fd) else {
            return;
        };
        let mut buf = [0u8; MAX_CONNECT_LINE];
        let outcome = loop {
            let room = MAX_CONNECT_LINE - hs.line.len();
            if room == 0 {
                break None;
            }
            match hs.stream.read(&mut buf[..room]) {
                Ok(0) => break None,
                Ok(n) => {
                    hs.line.extend_from_slice(&buf[..n]);
                    if let Some(nl) = hs.line.iter().position(|&b| b == b'\n') {
                        break Some(nl);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break None,
            }
        };
        let Some(Slot::Handshake(hs)) = self.slots.remove(&fd) else {
            return;
        };
        let port = outcome.and_then(|nl| parse_connect(&hs.line[..nl]).map(|p| (nl, p)));
        let Some((nl, port)) = port else {
            self.stats.refused += 1;
            return; // Dropping the stream closes it with no text.
        };
        let local = self.allocate_port();
        let early = hs.line[nl + 1..].to_vec();
        let conn = Connection::host_initiated(local, port, early, Instant::now() + CONNECT_TIMEOUT);
        self.insert(hs.stream, conn, true);
    }

    fn allocate_port(&mut self) -> u32 {
        loop {
            let port = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_HOST_PORT);
            if !self.host_ports.contains(&port) {
                self.host_ports.insert(port);
                return port;
            }
        }
    }

    fn insert(&mut self, stream: UnixStream, conn: Connection, allocated_port: bool) {
        let key = (conn.local_port, conn.peer_port);
        self.slots.insert(stream.as_raw_fd(), Slot::Conn(key));
        self.conns.insert(
            key,
            Live {
                stream,
                conn,
                queued: false,
                allocated_port,
            },
        );
        self.mark_ready(key);
    }

    fn mark_ready(&mut self, key: Key) {
        if let Some(live) = self.conns.get_mut(&key) {
            if !live.queued {
                live.queued = true;
                self.ready.push_back(key);
            }
        }
    }

    fn push_control(&mut self, hdr: Header) {
        if self.control.len() >= MAX_CONTROL {
            self.stats.dropped_control += 1;
            return;
        }
        self.control.push_back(hdr);
    }

    /// Drops a connection; with `rst`, the guest is told.
    fn remove(&mut self, key: Key, rst: bool) {
        let Some(mut live) = self.conns.remove(&key) else {
            return;
        };
        self.slots.remove(&live.stream.as_raw_fd());
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            live.stream.as_raw_fd(),
            EpollEvent::default(),
        );
        if live.allocated_port {
            self.host_ports.remove(&key.0);
        }
        if rst {
            let hdr = live.conn.header(self.guest_cid, Op::Rst);
            self.push_control(hdr);
        }
    }

    /// Handles one packet the guest sent.
    pub fn on_guest_packet(&mut self, pkt: &TxPacket) {
        let hdr = &pkt.hdr;
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            // Not from this guest or not for us: nobody to answer.
            self.stats.dropped_packets += 1;
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        let Some(live) = self.conns.get_mut(&key) else {
            match hdr.op() {
                Some(Op::Rst) => {}
                Some(Op::Request) if hdr.type_ == TYPE_STREAM => self.guest_connect(hdr),
                _ => self.push_control(rst_reply(hdr)),
            }
            return;
        };
        let could_send = live.conn.can_send_data();
        match live.conn.on_packet(hdr, &pkt.payload) {
            Event::None => {}
            Event::Connected => {
                live.conn.queue_ok_line();
                self.stats.established += 1;
                self.flush(key);
            }
            Event::DataForHost | Event::PeerShutdownSend => self.flush(key),
            Event::Closed => {
                self.flush(key);
                return self.remove(key, false);
            }
            Event::Reset => {
                // Best effort: what the guest sent before closing still reaches the client.
                self.flush(key);
                return self.remove(key, true);
            }
        }
        if let Some(live) = self.conns.get(&key) {
            if live.conn.owes_control() || (!could_send && live.conn.can_send_data()) {
                self.mark_ready(key);
            }
        }
    }

    fn guest_connect(&mut self, hdr: &Header) {
        let target = format!("{}_{}", self.path.display(), hdr.dst_port);
        if self.slots.len() >= MAX_CONNECTIONS {
            self.stats.refused += 1;
            return self.push_control(rst_reply(hdr));
        }
        let stream = match connect_without_waiting(&target) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("vsock: guest port {} → {target}: {e}", hdr.src_port);
                return self.push_control(rst_reply(hdr));
            }
        };
        if self.register(stream.as_raw_fd()).is_err() {
            return self.push_control(rst_reply(hdr));
        }
        self.stats.established += 1;
        self.insert(stream, Connection::guest_initiated(hdr), false);
    }

    /// Writes what the guest sent to the client; resets the connection if the client is gone.
    fn flush(&mut self, key: Key) {
        let Some(live) = self.conns.get_mut(&key) else {
            return;
        };
        let mut failed = false;
        while live.conn.has_data_for_host() {
            match live.stream.write(live.conn.to_host()) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => live.conn.wrote_to_host(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            return self.remove(key, true);
        }
        if !live.conn.has_data_for_host() && live.conn.peer_done_sending() {
            let _ = live.stream.shutdown(Shutdown::Write);
        }
        if live.conn.owes_control() {
            self.mark_ready(key);
        }
    }

    /// Whether a packet for the guest may be waiting.
    pub fn has_pending_rx(&self) -> bool {
        !self.control.is_empty() || !self.ready.is_empty()
    }

    /// The next packet for the guest, with at most `max_payload` bytes of data put in
    /// `payload`. Looks at each waiting connection at most once.
    pub fn next_rx(&mut self, max_payload: usize, payload: &mut Vec<u8>) -> Option<Header> {
        payload.clear();
        if let Some(h) = self.control.pop_front() {
            return Some(h);
        }
        for _ in 0..self.ready.len() {
            let key = self.ready.pop_front()?;
            let Some(live) = self.conns.get_mut(&key) else {
                continue;
            };
            live.queued = false;
            if let Some(h) = live.conn.next_control(self.guest_cid) {
                self.mark_ready(key);
                return Some(h);
            }
            if !live.conn.can_send_data() || live.conn.host_eof() {
                continue;
            }
            if live.conn.has_early_data() {
                *payload = live.conn.take_early_data(max_payload);
            } else {
                let want = max_payload.min(live.conn.peer_free() as usize);
                payload.resize(want, 0);
                match live.stream.read(payload) {
                    Ok(0) => {
                        payload.clear();
                        live.conn.host_closed(Instant::now() + CLOSE_TIMEOUT);
                        self.mark_ready(key);
                        continue;
                    }
                    Ok(n) => payload.truncate(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        payload.clear();
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        payload.clear();
                        self.mark_ready(key);
                        continue;
                    }
                    Err(_) => {
                        payload.clear();
                        self.remove(key, true);
                        return self.control.pop_front();
                    }
                }
            }
            if payload.is_empty() {
                continue;
            }
            live.conn.sent_to_guest(payload.len());
            let h = live.conn.header(self.guest_cid, Op::Rw);
            self.mark_ready(key);
            return Some(h);
        }
        None
    }

    /// Ends handshakes and connections past their deadline; returns the nearest deadline
    /// still pending.
    pub fn sweep(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut expired_hs = Vec::new();
        for (fd, slot) in &self.slots {
            if let Slot::Handshake(hs) = slot {
                if hs.deadline <= now {
                    expired_hs.push(*fd);
                } else {
                    next = Some(next.map_or(hs.deadline, |n| n.min(hs.deadline)));
                }
            }
        }
        for fd in expired_hs {
            self.stats.refused += 1;
            self.slots.remove(&fd);
        }
        let mut expired = Vec::new();
        for (key, live) in &self.conns {
            match live.conn.state() {
                State::Connecting { deadline } | State::Closing { deadline } => {
                    if deadline <= now {
                        expired.push(*key);
                    } else {
                        next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    }
                }
                State::Established => {}
            }
        }
        for key in expired {
            self.remove(key, true);
        }
        next
    }
}

/// Connects to a host listener without ever blocking the worker: a listener whose backlog is
/// full (a host process that stopped accepting) answers `EAGAIN` at once, which the guest
/// sees as RST, instead of stalling every connection of the device behind it.
fn connect_without_waiting(path: &str) -> io::Result<UnixStream> {
    // socket2 opens it close-on-exec.
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&socket2::SockAddr::unix(path)?)?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(socket)))
}
