//! `fs-bench`: times FUSE over virtio-fs on the share tagged `probe.fs-tag` (default: the
//! lowest slot), with the probe clock around the requests only:
//!
//! - sequential write of `probe.fs-bench-kib` KiB (default 1024) to `bench.bin` in
//!   [`CHUNK`]-byte WRITEs, then FLUSH and RELEASE: `bench-seq-write-ns`;
//! - sequential read of it (LOOKUP, OPEN, READs, RELEASE): `bench-seq-read-ns`;
//! - `probe.fs-bench-files` (default 100) times: CREATE `fN`, RELEASE, GETATTR, UNLINK:
//!   `bench-files-ns`.
//!
//! `bench.bin` is removed at the end. Results also echo the sizes (`bench-fs-kib`,
//! `bench-fs-files`); a failure gives `fs-error=<step>` and a `PROBE-ERROR`.

use super::fs_rw::Shares;
use super::Context;
use crate::clock::Clock;
use crate::fuse_client::{ClientError, Session, CHUNK};
use crate::power::Ending;
use crate::serial::{error, result};
use probe_parse::fuse::{self, ROOT_ID};

pub fn run(ctx: &Context) -> Ending {
    let clock = match Clock::start() {
        Ok(c) => c,
        Err(e) => {
            e.report(error()).nl();
            return Ending::PowerOff;
        }
    };
    let kib = ctx
        .cmdline
        .number("probe.fs-bench-kib")
        .ok()
        .flatten()
        .unwrap_or(1024);
    let files = ctx
        .cmdline
        .number("probe.fs-bench-files")
        .ok()
        .flatten()
        .unwrap_or(100);
    let bytes = kib.saturating_mul(1024);
    let Some(mut shares) = Shares::open(ctx, &clock) else {
        return Ending::PowerOff;
    };
    let index = shares.index_of(ctx.cmdline.get("probe.fs-tag"));
    let Some(session) = index
        .and_then(|i| shares.sessions.get_mut(i))
        .and_then(Option::as_mut)
    else {
        error().s("fs-bench: no usable virtio-fs share").nl();
        return Ending::PowerOff;
    };
    result("bench-fs-kib").dec(kib).nl();
    result("bench-fs-files").dec(files).nl();
    if let Err((step, e)) = bench(session, &clock, bytes, files) {
        result("fs-error").s(step).nl();
        e.report(error().s(step).s(": ")).nl();
    }
    Ending::PowerOff
}

fn step<T>(
    name: &'static str,
    r: Result<T, ClientError>,
) -> Result<T, (&'static str, ClientError)> {
    r.map_err(|e| (name, e))
}

fn bench(
    s: &mut Session,
    clock: &Clock,
    bytes: u64,
    files: u64,
) -> Result<(), (&'static str, ClientError)> {
    let data = [0x5au8; CHUNK];
    let flags = fuse::O_CREAT | fuse::O_TRUNC | fuse::O_WRONLY;
    let t = clock.now_ns();
    let (entry, fh) = step("create", s.create(ROOT_ID, b"bench.bin", flags, clock))?;
    let mut offset = 0u64;
    while offset < bytes {
        let n = (bytes - offset).min(CHUNK as u64) as usize;
        let chunk = data.get(..n).unwrap_or(&[]);
        let written = step("write", s.write(entry.nodeid, fh, offset, chunk, clock))?;
        if written == 0 {
            return Err(("write", ClientError::Fuse(fuse::FuseError::Errno(-28))));
        }
        offset += u64::from(written);
    }
    step("flush", s.flush(entry.nodeid, fh, clock))?;
    step("release", s.release(entry.nodeid, fh, flags, clock))?;
    result("bench-seq-write-ns")
        .dec(clock.now_ns().wrapping_sub(t))
        .nl();

    let t = clock.now_ns();
    let read = step("read", s.read_file(b"bench.bin", clock, |_| {}))?;
    result("bench-seq-read-ns")
        .dec(clock.now_ns().wrapping_sub(t))
        .nl();
    result("bench-seq-read-bytes").dec(read).nl();

    let mut name = *b"f0000000";
    let t = clock.now_ns();
    for i in 0..files {
        let mut v = i;
        for digit in name.iter_mut().skip(1).rev() {
            *digit = b'0' + (v % 10) as u8;
            v /= 10;
        }
        let flags = fuse::O_CREAT | fuse::O_WRONLY;
        let (entry, fh) = step("create small", s.create(ROOT_ID, &name, flags, clock))?;
        step("release small", s.release(entry.nodeid, fh, flags, clock))?;
        step("getattr", s.getattr(entry.nodeid, clock))?;
        step("unlink", s.unlink(ROOT_ID, &name, clock))?;
    }
    result("bench-files-ns")
        .dec(clock.now_ns().wrapping_sub(t))
        .nl();
    step("unlink bench.bin", s.unlink(ROOT_ID, b"bench.bin", clock))?;
    Ok(())
}
