//! The muxer with real Unix sockets; the guest's packets are made by hand.

use super::*;

struct Setup {
    _dir: TempDir,
    path: PathBuf,
    muxer: Muxer,
}

/// A directory removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vsock-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup() -> Setup {
    let dir = TempDir::new();
    let path = dir.0.join("v.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let muxer = Muxer::new(GUEST_CID, path.clone(), listener).unwrap();
    Setup {
        _dir: dir,
        path,
        muxer,
    }
}

/// Polls the muxer until it has a packet for the guest (or 5 s pass).
fn next(m: &mut Muxer) -> Option<(Header, Vec<u8>)> {
    let end = Instant::now() + Duration::from_secs(5);
    let mut payload = Vec::new();
    loop {
        m.handle_events(64);
        if let Some(h) = m.next_rx(4096, &mut payload) {
            return Some((h, payload));
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Asserts that nothing is waiting for the guest after the sockets settled.
fn quiet(m: &mut Muxer) {
    std::thread::sleep(Duration::from_millis(20));
    m.handle_events(64);
    let mut payload = Vec::new();
    assert_eq!(m.next_rx(4096, &mut payload), None);
}

fn from_guest(h: Header, payload: &[u8]) -> TxPacket {
    let mut h = h;
    h.len = payload.len() as u32;
    TxPacket {
        hdr: h,
        payload: payload.to_vec(),
    }
}

fn read_exactly(s: &mut UnixStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Reads until EOF (a reset, from closing with unread bytes, counts); returns what came.
fn read_to_eof(s: &mut UnixStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading to EOF: {e}"),
    }
    out
}

#[test]
fn host_initiated_relays_both_ways_and_keeps_early_bytes() {
    let mut s = setup();
    let mut client = UnixStream::connect(&s.path).unwrap();
    client.write_all(b"conn").unwrap();
    s.muxer.handle_events(64);
    std::thread::sleep(Duration::from_millis(10));
    client.write_all(b"ect 1024\nhello").unwrap();
    let (req, _) = next(&mut s.muxer).unwrap();
    assert_eq!(req.op(), Some(Op::Request));
    assert_eq!((req.dst_cid, req.dst_port), (GUEST_CID, 1024));
    assert_eq!(req.src_port, FIRST_HOST_PORT);
    s.muxer
        .on_guest_packet(&from_guest(hdr(Op::Response, 1024, req.src_port), &[]));
    let line = format!("OK {}\n", FIRST_HOST_PORT);
    assert_eq!(read_exactly(&mut client, line.len()), line.as_bytes());
    let (rw, data) = next(&mut s.muxer).unwrap();
    assert_eq!(rw.op(), Some(Op::Rw));
    assert_eq!(data, b"hello");
    client.write_all(b" more").unwrap();
    let (_, data) = next(&mut s.muxer).unwrap();
    assert_eq!(data, b" more");
    s.muxer
        .on_guest_packet(&from_guest(hdr(Op::Rw, 1024, req.src_port), b"world"));
    assert_eq!(read_exactly(&mut client, 5), b"world");
    // The client leaves: the guest is asked to close, and its RST ends the connection.
    drop(client);
    let (sd, _) = next(&mut s.muxer).unwrap();
    assert_eq!(sd.op(), Some(Op::Shutdown));
    s.muxer
        .on_guest_packet(&from_guest(hdr(Op::Rst, 1024, req.src_port), &[]));
    assert_eq!(s.muxer.open_connections(), 0);
    quiet(&mut s.muxer);
}

#[test]
fn refusals_close_the_client_without_a_word() {
    let mut s = setup();
    // Nobody listening in the guest.
    let mut c1 = UnixStream::connect(&s.path).unwrap();
    c1.write_all(b"CONNECT 9\n").unwrap();
    let (req, _) = next(&mut s.muxer).unwrap();
    s.muxer
        .on_guest_packet(&from_guest(hdr(Op::Rst, 9, req.src_port), &[]));
    assert_eq!(read_to_eof(&mut c1), b"");
    // Malformed and over-long lines.
    let mut c2 = UnixStream::connect(&s.path).unwrap();
    c2.write_all(b"HELLO 9\n").unwrap();
    let mut c3 = UnixStream::connect(&s.path).unwrap();
    c3.write_all(&[b'C'; 40]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    s.muxer.handle_events(64);
    assert_eq!(read_to_eof(&mut c2), b"");
    assert_eq!(read_to_eof(&mut c3), b"");
    // Silence: the client never finishes its line; the guest never answers.
    let mut c4 = UnixStream::connect(&s.path).unwrap();
    c4.write_all(b"CONNECT").unwrap();
    let mut c5 = UnixStream::connect(&s.path).unwrap();
    c5.write_all(b"CONNECT 10\n").unwrap();
    let (req5, _) = next(&mut s.muxer).unwrap();
    assert_eq!(req5.dst_port, 10);
    assert!(s.muxer.sweep(Instant::now()).is_some());
    s.muxer.sweep(Instant::now() + Duration::from_secs(3));
    assert_eq!(read_to_eof(&mut c4), b"");
    assert_eq!(read_to_eof(&mut c5), b"");
    let (rst, _) = next(&mut s.muxer).unwrap();
    assert_eq!((rst.op(), rst.dst_port), (Some(Op::Rst), 10));
    assert_eq!(s.muxer.open_connections(), 0);
    quiet(&mut s.muxer);
}

#[test]
fn guest_initiated_connects_to_the_port_socket() {
    let mut s = setup();
    let port_path = format!("{}_2000", s.path.display());
    let host = UnixListener::bind(&port_path).unwrap();
    s.muxer
        .on_guest_packet(&from_guest(hdr(Op::Request, 77, 2000), &[]));
    let (mut peer, _) = host.accept().unwrap();
    let (resp, _) = next(&mut s.muxer).unwrap();
    assert_eq!(resp.op(), Some(Op::Response));
    assert_eq!((resp.src_port, resp.dst_port), (2000, 77));
    s.muxer
        .on_guest_packet(&from_guest(hdr(Op::Rw, 77, 2000), b"probe-hello"));
    assert_eq!(read_exactly(&mut peer, 11), b"probe-hello");
    peer.write_all(b"back").unwrap();
    let (_, data) = next(&mut s.muxer).unwrap();
    assert_eq!(data, b"back");
    // The guest closes both ways: the host side sees EOF, the guest gets its RST.
    let mut sd = hdr(Op::Shutdown, 77, 2000);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    s.muxer.on_guest_packet(&from_guest(sd, &[]));
    assert_eq!(read_to_eof(&mut peer), b"");
    let (rst, _) = next(&mut s.muxer).unwrap();
    assert_eq!(rst.op(), Some(Op::Rst));
    // No socket for port 2001: RST.
    s.muxer
        .on_guest_packet(&from_guest(hdr(Op::Request, 78, 2001), &[]));
    let (rst, _) = next(&mut s.muxer).unwrap();
    assert_eq!(
        (rst.op(), rst.dst_port, rst.src_port),
        (Some(Op::Rst), 78, 2001)
    );
    quiet(&mut s.muxer);
}

#[test]
fn a_host_listener_that_stopped_accepting_gets_rst_without_stalling() {
    let mut s = setup();
    let port_path = format!("{}_2000", s.path.display());
    // Backlog 0: the kernel queues one connection and refuses the next ones.
    let host = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    host.bind(&socket2::SockAddr::unix(&port_path).unwrap())
        .unwrap();
    host.listen(0).unwrap();
    let started = Instant::now();
    let mut rsts = 0;
    for port in 100..110 {
        s.muxer
            .on_guest_packet(&from_guest(hdr(Op::Request, port, 2000), &[]));
        let (reply, _) = next(&mut s.muxer).unwrap();
        if reply.op() == Some(Op::Rst) {
            rsts += 1;
        }
    }
    assert!(rsts >= 8, "only {rsts} of 10 connections were refused");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the muxer waited on a full backlog"
    );
    // Once the host accepts again, a new connection goes through.
    drop(host);
    let host = UnixListener::bind(&port_path)
        .or_else(|_| {
            std::fs::remove_file(&port_path).unwrap();
            UnixListener::bind(&port_path)
        })
        .unwrap();
    s.muxer
        .on_guest_packet(&from_guest(hdr(Op::Request, 200, 2000), &[]));
    let (_peer, _) = host.accept().unwrap();
    // The connections the old listener had queued are reset first.
    let resp = loop {
        let (h, _) = next(&mut s.muxer).unwrap();
        if h.dst_port == 200 {
            break h;
        }
        assert_eq!(h.op(), Some(Op::Rst), "{h:?}");
    };
    assert_eq!(resp.op(), Some(Op::Response));
}

#[test]
fn hostile_packets_get_rst_or_nothing() {
    let mut s = setup();
    // Unknown connection: RST. Orphan RST: absorbed.
    s.muxer
        .on_guest_packet(&from_guest(hdr(Op::Rw, 1, 2), b"x"));
    let (rst, _) = next(&mut s.muxer).unwrap();
    assert_eq!(
        (rst.op(), rst.src_port, rst.dst_port),
        (Some(Op::Rst), 2, 1)
    );
    assert_eq!((rst.src_cid, rst.dst_cid), (HOST_CID, GUEST_CID));
    s.muxer
        .on_guest_packet(&from_guest(hdr(Op::Rst, 1, 2), &[]));
    // Wrong CIDs: dropped.
    let mut spoof = hdr(Op::Request, 1, 2);
    spoof.src_cid = 9;
    s.muxer.on_guest_packet(&from_guest(spoof, &[]));
    let mut elsewhere = hdr(Op::Request, 1, 2);
    elsewhere.dst_cid = 5;
    s.muxer.on_guest_packet(&from_guest(elsewhere, &[]));
    // Unknown op, unknown type.
    let mut weird = hdr(Op::Rw, 1, 2);
    weird.op = 0xffff;
    s.muxer.on_guest_packet(&from_guest(weird, &[]));
    let (rst, _) = next(&mut s.muxer).unwrap();
    assert_eq!(rst.op(), Some(Op::Rst));
    let mut dgram = hdr(Op::Request, 1, 2);
    dgram.type_ = 3;
    s.muxer.on_guest_packet(&from_guest(dgram, &[]));
    let (rst, _) = next(&mut s.muxer).unwrap();
    assert_eq!(rst.op(), Some(Op::Rst));
    assert_eq!(s.muxer.stats().dropped_packets, 2);
    quiet(&mut s.muxer);
    // A flood of bad packets with nobody reading rx stays bounded.
    for i in 0..10_000 {
        s.muxer
            .on_guest_packet(&from_guest(hdr(Op::Rw, i, 2), b"x"));
    }
    let mut n = 0;
    let mut payload = Vec::new();
    while s.muxer.next_rx(4096, &mut payload).is_some() {
        n += 1;
    }
    assert_eq!(n, super::super::muxer::MAX_CONTROL);
}

#[test]
fn redial_storm_leaks_nothing() {
    let mut s = setup();
    for i in 0..300u32 {
        let mut c = UnixStream::connect(&s.path).unwrap();
        c.write_all(b"CONNECT 1024\n").unwrap();
        let (req, _) = next(&mut s.muxer).unwrap();
        assert_eq!(req.op(), Some(Op::Request));
        assert_eq!(req.src_port, FIRST_HOST_PORT + i);
        s.muxer
            .on_guest_packet(&from_guest(hdr(Op::Rst, 1024, req.src_port), &[]));
        assert_eq!(read_to_eof(&mut c), b"");
    }
    assert_eq!(s.muxer.open_connections(), 0);
    assert_eq!(s.muxer.stats().accepted, 300);
    quiet(&mut s.muxer);
}

#[test]
fn worker_moves_packets_between_queues_and_sockets() {
    struct Irq(AtomicU32);
    impl VirtioInterrupt for Irq {
        fn notify_queue(&self, _queue: u16) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn notify_config(&self) {}
        fn needs_reset(&self) {}
    }
    let s = setup();
    let mem = mem();
    let mut rx = Driver::new(0x10000);
    let mut tx = Driver::new(0x20000);
    let irq = Arc::new(Irq(AtomicU32::new(0)));
    let activation = Activation {
        mem: mem.clone(),
        queues: vec![
            ActiveQueue {
                index: 0,
                queue: rx.queue(&mem),
                kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            },
            ActiveQueue {
                index: 1,
                queue: tx.queue(&mem),
                kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            },
        ],
        interrupt: irq.clone(),
        features: F_VERSION_1,
        dma: Default::default(),
    };
    let mut w = VsockWorker::new(activation, s.muxer);
    let port_path = format!("{}_2000", s.path.display());
    let host = UnixListener::bind(&port_path).unwrap();
    // The guest connects out and sends data in the same kick.
    mem.write_slice(
        &hdr(Op::Request, 50, 2000).to_bytes(),
        GuestAddress(0x40000),
    )
    .unwrap();
    tx.add(&mem, &[(0x40000, 44, false)]);
    let mut rw = hdr(Op::Rw, 50, 2000);
    rw.len = 3;
    mem.write_slice(&rw.to_bytes(), GuestAddress(0x41000))
        .unwrap();
    mem.write_slice(b"abc", GuestAddress(0x41000 + 44)).unwrap();
    tx.add(&mem, &[(0x41000, 47, false)]);
    rx.add(&mem, &[(0x50000, 512, true)]);
    w.round(&[1], false);
    assert_eq!(tx.used_idx(&mem), 2);
    assert_eq!(rx.used_idx(&mem), 1);
    assert_eq!(rx.used(&mem, 0).1 as usize, HDR_LEN);
    let mut raw = [0u8; HDR_LEN];
    mem.read_slice(&mut raw, GuestAddress(0x50000)).unwrap();
    assert_eq!(Header::from_bytes(&raw).op(), Some(Op::Response));
    let (mut peer, _) = host.accept().unwrap();
    assert_eq!(read_exactly(&mut peer, 3), b"abc");
    // Host data waits for an rx buffer, then arrives.
    peer.write_all(b"xyz").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    w.round(&[], true);
    assert_eq!(rx.used_idx(&mem), 1);
    rx.add(&mem, &[(0x51000, 512, true)]);
    w.round(&[0], false);
    assert_eq!(rx.used_idx(&mem), 2);
    assert_eq!(rx.used(&mem, 1).1 as usize, HDR_LEN + 3);
    let mut data = [0u8; 3];
    mem.read_slice(&mut data, GuestAddress(0x51000 + 44))
        .unwrap();
    assert_eq!(&data, b"xyz");
    assert!(irq.0.load(Ordering::SeqCst) >= 2);
    assert_eq!(w.muxer().open_connections(), 1);
}

#[test]
fn more_than_1023_connections_are_closed_without_text() {
    use super::super::muxer::MAX_CONNECTIONS;
    let mut s = setup();
    // 1023 clients that never finish their line hold every slot.
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        held.push(UnixStream::connect(&s.path).unwrap());
        if held.len() % 64 == 0 {
            s.muxer.handle_events(64);
        }
    }
    let end = Instant::now() + Duration::from_secs(10);
    while s.muxer.open_connections() < MAX_CONNECTIONS {
        assert!(
            Instant::now() < end,
            "only {} accepted",
            s.muxer.open_connections()
        );
        s.muxer.handle_events(64);
    }
    let mut extra = UnixStream::connect(&s.path).unwrap();
    extra.write_all(b"CONNECT 1024\n").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    s.muxer.handle_events(64);
    assert_eq!(read_to_eof(&mut extra), b"");
    assert_eq!(s.muxer.open_connections(), MAX_CONNECTIONS);
    quiet(&mut s.muxer);
    // Their deadline passes: every slot is free again.
    s.muxer.sweep(Instant::now() + Duration::from_secs(3));
    assert_eq!(s.muxer.open_connections(), 0);
    assert_eq!(read_to_eof(&mut held[0]), b"");
}

#[test]
fn a_packet_in_private_memory_stops_the_device_and_reaches_no_socket() {
    use crate::dma::{DmaGuard, SharedPages};
    struct Irq(AtomicU32);
    impl VirtioInterrupt for Irq {
        fn notify_queue(&self, _queue: u16) {}
        fn notify_config(&self) {}
        fn needs_reset(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let s = setup();
    let mem = mem();
    let mut tx = Driver::new(0x20000);
    let rx = Driver::new(0x10000);
    let irq = Arc::new(Irq(AtomicU32::new(0)));
    let pages = Arc::new(SharedPages::new(&[(0, 1 << 20)], true));
    pages.set(0x40000, 0x1000, false).unwrap();
    let activation = Activation {
        mem: mem.clone(),
        queues: vec![
            ActiveQueue {
                index: 0,
                queue: rx.queue(&mem),
                kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            },
            ActiveQueue {
                index: 1,
                queue: tx.queue(&mem),
                kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            },
        ],
        interrupt: irq.clone(),
        features: F_VERSION_1,
        dma: DmaGuard::shared_only(pages),
    };
    let mut w = VsockWorker::new(activation, s.muxer);
    let port_path = format!("{}_2001", s.path.display());
    let host = UnixListener::bind(&port_path).unwrap();
    host.set_nonblocking(true).unwrap();
    mem.write_slice(
        &hdr(Op::Request, 50, 2001).to_bytes(),
        GuestAddress(0x40000),
    )
    .unwrap();
    tx.add(&mem, &[(0x40000, 44, false)]);
    w.round(&[1], false);
    assert_eq!(irq.0.load(Ordering::SeqCst), 1, "needs reset");
    assert_eq!(tx.used_idx(&mem), 0);
    assert!(host.accept().is_err(), "no connection was made");
    assert_eq!(w.muxer().open_connections(), 0);
    let _ = std::fs::remove_file(&port_path);
}
