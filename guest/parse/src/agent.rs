//! The line protocol of the probe's `agent` scenario (the pod demo's in-guest agent): one
//! request per line, one answer line per request. Parsed here so it is tested on the host; the
//! lines come from whoever connects to the agent's vsock port.

/// One request line, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentRequest<'a> {
    /// `echo TEXT`
    Echo(&'a [u8]),
    /// `disk-sha256 N` (MiB) or `disk-sha256 NK` (KiB): bytes to hash from the start of disk 0.
    DiskSha256 { bytes: u64 },
    /// `read PATH`: a file under the share's root, as path components.
    Read(&'a [u8]),
    /// `poweroff`
    Poweroff,
}

/// Parses `line` (without its `\n`; a trailing `\r` is ignored). Disk sizes must be a positive
/// multiple of `granule` bytes; read paths must be relative with no `.` or `..` component.
pub fn parse_request(line: &[u8], granule: u64) -> Result<AgentRequest<'_>, &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (
            line.get(..i).unwrap_or(&[]),
            line.get(i + 1..).unwrap_or(&[]),
        ),
        None => (line, &[][..]),
    };
    match verb {
        b"echo" => Ok(AgentRequest::Echo(arg)),
        b"poweroff" => Ok(AgentRequest::Poweroff),
        b"disk-sha256" => {
            let (digits, shift) = match arg.strip_suffix(b"K") {
                Some(d) => (d, 10),
                None => (arg, 20),
            };
            let bad = "size must be N (MiB) or NK (KiB), a positive multiple of the chunk";
            let n = crate::cmdline::parse_decimal(digits).ok_or(bad)?;
            let bytes = n.checked_mul(1 << shift).ok_or(bad)?;
            if bytes == 0 || granule == 0 || bytes % granule != 0 {
                return Err(bad);
            }
            Ok(AgentRequest::DiskSha256 { bytes })
        }
        b"read" => {
            let mut parts = components(arg).peekable();
            if parts.peek().is_none() {
                return Err("empty path");
            }
            if components(arg).any(|p| p == b"." || p == b".." || p.contains(&0)) {
                return Err("path components . and .. are not allowed");
            }
            Ok(AgentRequest::Read(arg))
        }
        _ => Err("unknown request (echo, disk-sha256, read, poweroff)"),
    }
}

/// The non-empty components of a `/`-separated path.
pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|p| !p.is_empty())
}

/// Feeds `data` to `push` with `\`, control bytes and non-ASCII escaped as `\xHH`, so an
/// answer stays one line.
pub fn escape(data: &[u8], mut push: impl FnMut(u8)) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in data {
        if b == b'\\' || !(0x20..0x7f).contains(&b) {
            push(b'\\');
            push(b'x');
            push(HEX[usize::from(b >> 4)]);
            push(HEX[usize::from(b & 15)]);
        } else {
            push(b);
        }
    }
}
