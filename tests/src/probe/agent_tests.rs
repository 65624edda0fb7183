//! Host tests of the probe agent's line protocol (`probe_parse::agent`): every verb, sizes at
//! their limits, paths that try to leave the share, and escaping.

use probe_parse::agent::{components, escape, parse_request, AgentRequest};

const CHUNK: u64 = 16 * 1024;

#[test]
fn verbs_parse() {
    assert_eq!(
        parse_request(b"echo hello, pod", CHUNK),
        Ok(AgentRequest::Echo(b"hello, pod"))
    );
    assert_eq!(parse_request(b"echo", CHUNK), Ok(AgentRequest::Echo(b"")));
    assert_eq!(
        parse_request(b"poweroff\r", CHUNK),
        Ok(AgentRequest::Poweroff)
    );
    assert_eq!(
        parse_request(b"disk-sha256 1", CHUNK),
        Ok(AgentRequest::DiskSha256 { bytes: 1 << 20 })
    );
    assert_eq!(
        parse_request(b"disk-sha256 64K", CHUNK),
        Ok(AgentRequest::DiskSha256 { bytes: 64 << 10 })
    );
    assert_eq!(
        parse_request(b"read dir/hello.txt", CHUNK),
        Ok(AgentRequest::Read(b"dir/hello.txt"))
    );
    assert!(parse_request(b"", CHUNK).is_err());
    assert!(parse_request(b"reboot", CHUNK).is_err());
    assert!(parse_request(b"ECHO x", CHUNK).is_err());
}

#[test]
fn disk_sizes_are_checked() {
    for bad in [
        &b"disk-sha256"[..],
        b"disk-sha256 0",
        b"disk-sha256 8K",
        b"disk-sha256 -1",
        b"disk-sha256 1M",
        b"disk-sha256 18446744073709551615",
        b"disk-sha256 99999999999999999999K",
    ] {
        assert!(
            parse_request(bad, CHUNK).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(parse_request(b"disk-sha256 16K", 0).is_err());
}

#[test]
fn read_paths_stay_inside_the_share() {
    for bad in [
        &b"read"[..],
        b"read ",
        b"read //",
        b"read ../etc/passwd",
        b"read a/./b",
        b"read a/..",
    ] {
        assert!(
            parse_request(bad, CHUNK).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let parts: Vec<&[u8]> = components(b"/a//b/c/").collect();
    assert_eq!(parts, [&b"a"[..], b"b", b"c"]);
}

#[test]
fn escaping_keeps_an_answer_on_one_line() {
    let mut out = Vec::new();
    escape(b"a\\b\nc\x7f\xffd", |b| out.push(b));
    assert_eq!(out, b"a\\x5cb\\x0ac\\x7f\\xffd");
}
