//! One stream connection's state machine (VIRTIO 1.2 §5.10.6.3–§5.10.6.6), free of sockets:
//! connection set-up, credit-based flow control in both directions, shutdown and reset.
//!
//! The muxer owns the Unix socket behind each connection and does the I/O; this type decides
//! what the guest may be sent (credit), what the guest may send (our `buf_alloc`), which
//! control packets are owed, and when the connection is over. Counters are `u32` and wrap,
//! as the spec's `fwd_cnt` and `buf_alloc` do.

use std::collections::VecDeque;
use std::time::Instant;

use super::packet::{Header, Op, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// Receive buffer the host grants each connection: the most guest bytes it holds for a
/// Unix socket that is not reading.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Freed receive space that makes the host volunteer a `CREDIT_UPDATE`.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: `REQUEST` queued or sent, waiting for the guest's `RESPONSE`.
    Connecting {
        deadline: Instant,
    },
    Established,
    /// The host side closed; `SHUTDOWN` sent, waiting for the guest's `RST`.
    Closing {
        deadline: Instant,
    },
}

/// What a guest packet means for the muxer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing to do beyond what the connection now owes (see [`Connection::next_control`]).
    None,
    /// The guest accepted a host-initiated connection: tell the Unix client.
    Connected,
    /// Bytes were queued for the Unix socket.
    DataForHost,
    /// The guest will send no more: half-close the Unix socket once its bytes are written.
    PeerShutdownSend,
    /// The connection is over; drop it without a word to the guest.
    Closed,
    /// The guest broke the protocol or closed for good: drop it and send `RST`.
    Reset,
}

/// One connection between a host port and a guest port.
#[derive(Debug)]
pub struct Connection {
    pub local_port: u32,
    pub peer_port: u32,
    state: State,
    /// The guest's receive buffer and how much of what we sent it has consumed.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Payload bytes sent to the guest.
    tx_cnt: u32,
    /// Payload bytes received from the guest and bytes of them written to the host.
    rx_cnt: u32,
    fwd_cnt: u32,
    /// `fwd_cnt` as last told to the guest.
    fwd_cnt_sent: u32,
    /// Bytes waiting for the Unix socket; the first `unaccounted` are host-generated (the
    /// `OK` line) and do not count against the guest's credit.
    to_host: VecDeque<u8>,
    unaccounted: usize,
    /// Client bytes read before the connection was set up, owed to the guest first.
    to_guest: Vec<u8>,
    owe_request: bool,
    owe_response: bool,
    owe_credit_update: bool,
    owe_shutdown: bool,
    peer_shutdown: u32,
    host_eof: bool,
}

impl Connection {
    fn blank(local_port: u32, peer_port: u32, state: State) -> Connection {
        Connection {
            local_port,
            peer_port,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            to_host: VecDeque::new(),
            unaccounted: 0,
            to_guest: Vec::new(),
            owe_request: false,
            owe_response: false,
            owe_credit_update: false,
            owe_shutdown: false,
            peer_shutdown: 0,
            host_eof: false,
        }
    }

    /// A Unix client asked for guest port `peer_port`; `early` are bytes it sent behind its
    /// `CONNECT` line. A `REQUEST` is owed; the guest must answer before `deadline`.
    pub fn host_initiated(
        local_port: u32,
        peer_port: u32,
        early: Vec<u8>,
        deadline: Instant,
    ) -> Connection {
        let mut c = Connection::blank(local_port, peer_port, State::Connecting { deadline });
        c.owe_request = true;
        c.to_guest = early;
        c
    }

    /// The guest's `REQUEST` (header `hdr`) reached a host socket: a `RESPONSE` is owed.
    pub fn guest_initiated(hdr: &Header) -> Connection {
        let mut c = Connection::blank(hdr.dst_port, hdr.src_port, State::Established);
        c.peer_buf_alloc = hdr.buf_alloc;
        c.peer_fwd_cnt = hdr.fwd_cnt;
        c.owe_response = true;
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Bytes the guest can still take (§5.10.6.3.1: `buf_alloc - (tx_cnt - fwd_cnt)`);
    /// zero if the guest's numbers make no sense.
    pub fn peer_free(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Handles a packet the guest sent on this connection.
    pub fn on_packet(&mut self, hdr: &Header, payload: &[u8]) -> Event {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
        if hdr.type_ != TYPE_STREAM {
            return Event::Reset;
        }
        match (hdr.op(), self.state) {
            (Some(Op::Rst), _) => Event::Closed,
            (Some(Op::Response), State::Connecting { .. }) => {
                self.state = State::Established;
                Event::Connected
            }
            (Some(Op::Rw), State::Established) => self.take_data(payload),
            // Data after the host closed has nowhere to go.
            (Some(Op::Rw), State::Closing { .. }) => Event::None,
            (Some(Op::CreditRequest), State::Established) => {
                self.owe_credit_update = true;
                Event::None
            }
            (Some(Op::CreditUpdate), _) | (Some(Op::CreditRequest), _) => Event::None,
            (Some(Op::Shutdown), State::Closing { .. }) => Event::Reset,
            (Some(Op::Shutdown), _) => {
                self.peer_shutdown |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
                    Event::Reset
                } else if self.peer_shutdown & SHUTDOWN_SEND != 0 {
                    Event::PeerShutdownSend
                } else {
                    Event::None
                }
            }
            // A second REQUEST, a RESPONSE out of turn, data before set-up, unknown ops.
            _ => Event::Reset,
        }
    }

    fn take_data(&mut self, payload: &[u8]) -> Event {
        if payload.is_empty() {
            return Event::None;
        }
        let held = self.rx_cnt.wrapping_sub(self.fwd_cnt);
        let fits = held
            .checked_add(payload.len() as u32)
            .is_some_and(|n| n <= BUF_ALLOC);
        if !fits || self.peer_shutdown & SHUTDOWN_SEND != 0 {
            // The guest ignored our credit (or sent after promising not to).
            return Event::Reset;
        }
        self.to_host.extend(payload);
        self.rx_cnt = self.rx_cnt.wrapping_add(payload.len() as u32);
        Event::DataForHost
    }

    /// The guest accepted: the client learns its host port before any guest byte.
    pub fn queue_ok_line(&mut self) {
        let line = format!("OK {}\n", self.local_port);
        for (i, b) in line.bytes().enumerate() {
            self.to_host.insert(self.unaccounted + i, b);
        }
        self.unaccounted += line.len();
    }

    /// The bytes waiting for the Unix socket, front first.
    pub fn to_host(&self) -> &[u8] {
        self.to_host.as_slices().0
    }

    pub fn has_data_for_host(&self) -> bool {
        !self.to_host.is_empty()
    }

    /// `n` bytes of [`Self::to_host`] reached the Unix socket.
    pub fn wrote_to_host(&mut self, n: usize) {
        let n = n.min(self.to_host.len());
        self.to_host.drain(..n);
        let own = n.min(self.unaccounted);
        self.unaccounted -= own;
        self.fwd_cnt = self.fwd_cnt.wrapping_add((n - own) as u32);
        if self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD {
            self.owe_credit_update = true;
        }
    }

    /// Whether the guest can be sent data now (established, credit left, not shut).
    pub fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && self.peer_free() > 0
    }

    /// Whether bytes are waiting to go out before any read from the Unix socket.
    pub fn has_early_data(&self) -> bool {
        !self.to_guest.is_empty()
    }

    /// Takes up to `max` early bytes (bounded by credit) to send as one `RW`.
    pub fn take_early_data(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.to_guest.len()).min(self.peer_free() as usize);
        self.to_guest.drain(..n).collect()
    }

    /// `n` payload bytes went to the guest.
    pub fn sent_to_guest(&mut self, n: usize) {
        self.tx_cnt = self.tx_cnt.wrapping_add(n as u32);
    }

    /// The Unix client closed (read returned 0): tell the guest, and give it until
    /// `deadline` to reset.
    pub fn host_closed(&mut self, deadline: Instant) {
        self.host_eof = true;
        if self.state == State::Established {
            self.owe_shutdown = true;
        }
        self.state = State::Closing { deadline };
    }

    pub fn host_eof(&self) -> bool {
        self.host_eof
    }

    /// Whether the guest said it will send nothing more.
    pub fn peer_done_sending(&self) -> bool {
        self.peer_shutdown & SHUTDOWN_SEND != 0
    }

    pub fn owes_control(&self) -> bool {
        self.owe_request || self.owe_response || self.owe_shutdown || self.owe_credit_update
    }

    /// The next control packet owed to the guest, if any, in the order the protocol needs.
    pub fn next_control(&mut self, guest_cid: u64) -> Option<Header> {
        let (op, flags) = if std::mem::take(&mut self.owe_request) {
            (Op::Request, 0)
        } else if std::mem::take(&mut self.owe_response) {
            (Op::Response, 0)
        } else if std::mem::take(&mut self.owe_shutdown) {
            (Op::Shutdown, SHUTDOWN_RCV | SHUTDOWN_SEND)
        } else if std::mem::take(&mut self.owe_credit_update) {
            (Op::CreditUpdate, 0)
        } else {
            return None;
        };
        let mut h = self.header(guest_cid, op);
        h.flags = flags;
        Some(h)
    }

    /// A header from this connection's host end, carrying current credit information.
    pub fn header(&mut self, guest_cid: u64, op: Op) -> Header {
        self.fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op.to_u16(),
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }
}

/// An `RST` answering `hdr` (source and destination swapped), for packets no connection
/// takes.
pub fn rst_reply(hdr: &Header) -> Header {
    Header {
        src_cid: hdr.dst_cid,
        dst_cid: hdr.src_cid,
        src_port: hdr.dst_port,
        dst_port: hdr.src_port,
        len: 0,
        type_: TYPE_STREAM,
        op: Op::Rst.to_u16(),
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    }
}
