//! Host tests of the probe's FUSE codec (`probe_parse::fuse`): request layouts byte by byte
//! against `linux/fuse.h`, and replies a hostile server could send.

use probe_parse::fuse::{
    parse_attr_out, parse_create_out, parse_open_out, parse_write_out, reply_payload, EntryOut,
    FuseError, InitOut, Opcode, Request, ENTRY_OUT_LEN, IN_HEADER_LEN, O_CREAT, O_RDWR, S_IFDIR,
    S_IFREG,
};

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn encode(req: Request, unique: u64, nodeid: u64) -> Vec<u8> {
    let mut buf = vec![0xaa; 512];
    let len = req.encode(&mut buf, unique, nodeid).unwrap();
    buf.truncate(len);
    buf
}

fn reply(error: i32, unique: u64, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&((16 + payload.len()) as u32).to_le_bytes());
    r.extend_from_slice(&error.to_le_bytes());
    r.extend_from_slice(&unique.to_le_bytes());
    r.extend_from_slice(payload);
    r
}

fn attr(ino: u64, size: u64, mode: u32) -> Vec<u8> {
    let mut a = vec![0u8; 88];
    a[0..8].copy_from_slice(&ino.to_le_bytes());
    a[8..16].copy_from_slice(&size.to_le_bytes());
    a[60..64].copy_from_slice(&mode.to_le_bytes());
    a
}

fn entry(nodeid: u64, size: u64, mode: u32) -> Vec<u8> {
    let mut e = vec![0u8; 40];
    e[0..8].copy_from_slice(&nodeid.to_le_bytes());
    e.extend(attr(nodeid + 100, size, mode));
    e
}

#[test]
fn in_header_carries_length_opcode_unique_and_node() {
    let b = encode(
        Request::Init {
            max_readahead: 0x2_0000,
            flags: 0,
        },
        1,
        0,
    );
    assert_eq!(b.len(), IN_HEADER_LEN + 16);
    assert_eq!(u32_at(&b, 0), b.len() as u32);
    assert_eq!(u32_at(&b, 4), Opcode::Init as u32);
    assert_eq!(u32_at(&b, 4), 26);
    assert_eq!(u64_at(&b, 8), 1);
    assert_eq!(u64_at(&b, 16), 0);
    // fuse_init_in: major, minor, max_readahead, flags
    assert_eq!(u32_at(&b, 40), 7);
    assert_eq!(u32_at(&b, 44), 31);
    assert_eq!(u32_at(&b, 48), 0x2_0000);
}

#[test]
fn names_are_nul_terminated_and_checked() {
    let b = encode(Request::Lookup { name: b"in.bin" }, 5, 1);
    assert_eq!(u32_at(&b, 4), 1);
    assert_eq!(&b[40..], b"in.bin\0");
    for bad in [&b""[..], b"a/b", b"a\0b", &[b'x'; 256]] {
        let mut buf = [0u8; 512];
        assert_eq!(
            Request::Unlink { name: bad }.encode(&mut buf, 1, 1),
            Err(FuseError::BadName)
        );
    }
    let b = encode(
        Request::Rename {
            newdir: 9,
            old: b"d1",
            new: b"d2",
        },
        7,
        1,
    );
    assert_eq!(u32_at(&b, 4), 12);
    assert_eq!(u64_at(&b, 40), 9);
    assert_eq!(&b[48..], b"d1\0d2\0");
}

#[test]
fn create_write_read_layouts() {
    let b = encode(
        Request::Create {
            name: b"out.txt",
            flags: O_CREAT | O_RDWR,
            mode: 0o644,
        },
        2,
        1,
    );
    assert_eq!(u32_at(&b, 4), 35);
    assert_eq!(u32_at(&b, 40), O_CREAT | O_RDWR);
    assert_eq!(u32_at(&b, 44), 0o644);
    assert_eq!(&b[56..], b"out.txt\0");

    let b = encode(
        Request::Write {
            fh: 3,
            offset: 10,
            data: b"probe-wrote-this",
        },
        3,
        8,
    );
    assert_eq!(u32_at(&b, 4), 16);
    assert_eq!(u64_at(&b, 40), 3);
    assert_eq!(u64_at(&b, 48), 10);
    assert_eq!(u32_at(&b, 56), 16);
    assert_eq!(&b[80..], b"probe-wrote-this");

    let b = encode(
        Request::Read {
            fh: 4,
            offset: 4096,
            size: 8192,
        },
        4,
        8,
    );
    assert_eq!(b.len(), 80);
    assert_eq!(u32_at(&b, 4), 15);
    assert_eq!(u64_at(&b, 48), 4096);
    assert_eq!(u32_at(&b, 56), 8192);

    let b = encode(
        Request::Mkdir {
            name: b"d",
            mode: 0o755,
        },
        5,
        1,
    );
    assert_eq!((u32_at(&b, 4), u32_at(&b, 40)), (9, 0o755));
    let b = encode(Request::Release { fh: 6, flags: 2 }, 6, 8);
    assert_eq!((u32_at(&b, 4), b.len()), (18, 64));
    let b = encode(Request::Flush { fh: 6 }, 6, 8);
    assert_eq!((u32_at(&b, 4), b.len()), (25, 64));
    let b = encode(Request::Getattr, 6, 8);
    assert_eq!((u32_at(&b, 4), b.len()), (3, 56));
    let b = encode(Request::Forget { nlookup: 1 }, 6, 8);
    assert!(!Request::Forget { nlookup: 1 }.expects_reply());
    assert_eq!((u32_at(&b, 4), u64_at(&b, 40)), (2, 1));
}

#[test]
fn a_buffer_too_small_is_an_error_not_a_panic() {
    for len in 0..80 {
        let mut buf = vec![0u8; len];
        let r = Request::Write {
            fh: 1,
            offset: 0,
            data: b"0123456789",
        }
        .encode(&mut buf, 1, 1);
        assert!(
            matches!(r, Err(FuseError::BufferTooSmall { .. })),
            "len {len}: {r:?}"
        );
    }
}

#[test]
fn replies_are_checked_against_header_and_request() {
    let r = reply(0, 9, &[1, 2, 3]);
    assert_eq!(reply_payload(&r, r.len(), 9), Ok(&[1u8, 2, 3][..]));
    assert_eq!(
        reply_payload(&r, r.len(), 8),
        Err(FuseError::WrongUnique {
            expected: 8,
            got: 9
        })
    );
    let r = reply(-2, 9, &[]);
    assert_eq!(reply_payload(&r, r.len(), 9), Err(FuseError::Errno(-2)));
    // The header claims more than the device wrote.
    let mut r = reply(0, 9, &[0; 8]);
    r[0..4].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        reply_payload(&r, r.len(), 9),
        Err(FuseError::ShortReply { .. })
    ));
    // A used length past the buffer, and every truncation of a good reply.
    assert!(reply_payload(&r, r.len() + 1, 9).is_err());
    let good = reply(0, 9, &entry(5, 10, S_IFREG | 0o644));
    for used in 0..good.len() {
        let p = reply_payload(&good, used, 9);
        assert!(
            p.is_err() || EntryOut::parse(p.unwrap()).is_err(),
            "used {used}"
        );
    }
}

#[test]
fn typed_replies_decode() {
    let e = EntryOut::parse(&entry(5, 1234, S_IFREG | 0o644)).unwrap();
    assert_eq!((e.nodeid, e.attr.size, e.attr.ino), (5, 1234, 105));
    assert!(e.attr.is_file() && !e.attr.is_dir());
    assert!(EntryOut::parse(&entry(6, 0, S_IFDIR | 0o755))
        .unwrap()
        .attr
        .is_dir());
    assert!(EntryOut::parse(&[0; ENTRY_OUT_LEN - 1]).is_err());

    let mut c = entry(7, 0, S_IFREG);
    c.extend_from_slice(&42u64.to_le_bytes());
    c.extend_from_slice(&[0; 8]);
    let (e, fh) = parse_create_out(&c).unwrap();
    assert_eq!((e.nodeid, fh), (7, 42));
    assert!(parse_create_out(&c[..c.len() - 1]).is_err());
    assert_eq!(parse_open_out(&c[ENTRY_OUT_LEN..]), Ok(42));
    assert_eq!(parse_write_out(&[16, 0, 0, 0, 0, 0, 0, 0]), Ok(16));
    assert!(parse_write_out(&[16, 0, 0]).is_err());
    let mut a = vec![0u8; 16];
    a.extend(attr(3, 77, S_IFREG));
    assert_eq!(parse_attr_out(&a).unwrap().size, 77);

    let mut init = vec![0u8; 64];
    init[0..4].copy_from_slice(&7u32.to_le_bytes());
    init[4..8].copy_from_slice(&31u32.to_le_bytes());
    init[16..20].copy_from_slice(&(1u32 << 20).to_le_bytes());
    let i = InitOut::parse(&init).unwrap();
    assert_eq!((i.major, i.minor, i.max_write), (7, 31, 1 << 20));
    init[0..4].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(
        InitOut::parse(&init),
        Err(FuseError::Version {
            major: 8,
            minor: 31
        })
    );
    assert!(InitOut::parse(&init[..7]).is_err());
}
