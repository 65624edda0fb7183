//! `fs-rw`: a FUSE client on virtio-fs. On the share whose tag is `probe.fs-tag` (default: the
//! lowest slot) it reads `in.bin` (`fs-read-sha256`, `fs-read-bytes`), creates `out.txt`
//! holding `probe-wrote-this` (`fs-write-bytes`), and creates, renames and removes a directory with a
//! file created and unlinked inside (`fs-dir=ok`). Every share's tag is reported as `fsN-tag`
//! (N in slot order), and `fs-shares`. With `probe.fs-reopen=1` it then resets every device
//! and drives it again from scratch (a second activation, FUSE_INIT) and looks `out.txt` up
//! on the chosen share (`fs-reopen=ok`).
//!
//! With `probe.fs-fault=1` it instead prints `fs-ready=1` after FUSE_INIT on every share and
//! polls the chosen share (GETATTR of its root) until a request fails or `probe.secs` (60) pass,
//! reporting `fs-fault=errno|timeout|failed|none`, then whether the other share still answers
//! (`fs-other-share=ok|error`). Each request waits at most `probe.fs-timeout-ms` (10000).

use super::blk_common::print_digest;
use super::Context;
use crate::clock::Clock;
use crate::fuse_client::{ClientError, Session};
use crate::power::Ending;
use crate::serial::{error, result};
use crate::virtio_fs::{self, FsDevice, FsError};
use probe_parse::fuse::{self, ROOT_ID};
use sha2::{Digest, Sha256};

const MAX_SHARES: usize = 4;
const OUT_TEXT: &[u8] = b"probe-wrote-this";

/// The virtio-fs shares on the root bus, each with a FUSE session after INIT.
pub struct Shares {
    pub sessions: [Option<Session>; MAX_SHARES],
}

fn fail(what: &str) -> Ending {
    error().s(what).nl();
    Ending::PowerOff
}

fn fail_client(step: &str, e: ClientError) -> Ending {
    result("fs-error").s(step).nl();
    e.report(error().s(step).s(": ")).nl();
    Ending::PowerOff
}

/// Per-request wait bound from `probe.fs-timeout-ms`.
fn timeout_ns(ctx: &Context) -> u64 {
    ctx.cmdline
        .number("probe.fs-timeout-ms")
        .ok()
        .flatten()
        .unwrap_or(10_000)
        .saturating_mul(1_000_000)
}

impl Shares {
    /// Finds every virtio-fs function, binds it, reports its tag and runs FUSE_INIT on it.
    pub fn open(ctx: &Context, clock: &Clock) -> Option<Self> {
        let (mut root, ecam) = super::blk_common::pci_root(ctx)?;
        let functions = virtio_fs::find(&root, ecam.start_bus);
        let mut sessions: [Option<Session>; MAX_SHARES] = [None, None, None, None];
        let mut count = 0u64;
        for (i, (slot, function)) in sessions.iter_mut().zip(functions).enumerate() {
            let Some(function) = function else { continue };
            count += 1;
            let key: &str = ["fs0-tag", "fs1-tag", "fs2-tag", "fs3-tag"]
                .get(i)
                .copied()
                .unwrap_or("fs-tag");
            match FsDevice::open(&mut root, ecam.base, function, timeout_ns(ctx)) {
                Ok(dev) => {
                    result(key).bytes(dev.tag()).nl();
                    let mut session = Session::new(dev);
                    match session.init(clock) {
                        Ok(init) => {
                            if i == 0 {
                                result("fs-minor").dec(init.minor.into()).nl();
                                let queues = session.dev.num_request_queues;
                                result("fs-request-queues").dec(queues.into()).nl();
                            }
                            *slot = Some(session);
                        }
                        Err(e) => {
                            e.report(error().s("fs: FUSE_INIT: ")).nl();
                        }
                    }
                }
                Err(e) => e.report(error()).nl(),
            }
        }
        result("fs-shares").dec(count).nl();
        Some(Self { sessions })
    }

    /// The index of the share tagged `tag`, or the first bound share.
    pub fn index_of(&self, tag: Option<&[u8]>) -> Option<usize> {
        self.sessions.iter().position(|s| match (s, tag) {
            (Some(s), Some(t)) => s.dev.tag() == t,
            (Some(_), None) => true,
            (None, _) => false,
        })
    }
}

pub fn run(ctx: &Context) -> Ending {
    let clock = match Clock::start() {
        Ok(c) => c,
        Err(e) => {
            e.report(error()).nl();
            return Ending::PowerOff;
        }
    };
    let Some(mut shares) = Shares::open(ctx, &clock) else {
        return Ending::PowerOff;
    };
    let Some(index) = shares.index_of(ctx.cmdline.get("probe.fs-tag")) else {
        return fail("fs: no usable virtio-fs share with the requested tag");
    };
    if ctx.cmdline.get("probe.fs-fault") == Some(b"1") {
        return fault(ctx, &clock, &mut shares, index);
    }
    let Some(Some(session)) = shares.sessions.get_mut(index) else {
        return fail("fs: share vanished");
    };

    let mut hash = Sha256::new();
    match session.read_file(b"in.bin", &clock, |data| hash.update(data)) {
        Ok(n) => {
            print_digest("fs-read-sha256", &hash.finalize());
            result("fs-read-bytes").dec(n).nl();
        }
        Err(e) => return fail_client("read in.bin", e),
    }

    let flags = fuse::O_CREAT | fuse::O_TRUNC | fuse::O_WRONLY;
    let (entry, fh) = match session.create(ROOT_ID, b"out.txt", flags, &clock) {
        Ok(v) => v,
        Err(e) => return fail_client("create out.txt", e),
    };
    let written = session.write(entry.nodeid, fh, 0, OUT_TEXT, &clock);
    let flushed = session.flush(entry.nodeid, fh, &clock);
    let released = session.release(entry.nodeid, fh, flags, &clock);
    match (written, flushed, released) {
        (Ok(n), Ok(()), Ok(())) => result("fs-write-bytes").dec(n.into()).nl(),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail_client("write out.txt", e),
    }

    let dir = session
        .mkdir(ROOT_ID, b"probe-dir", &clock)
        .and_then(|d| {
            if d.attr.is_dir() {
                Ok(())
            } else {
                Err(ClientError::Device(FsError::Failed))
            }
        })
        .and_then(|()| session.rename(ROOT_ID, b"probe-dir", b"probe-dir-renamed", &clock))
        .and_then(|()| session.lookup(ROOT_ID, b"probe-dir-renamed", &clock))
        .and_then(|d| {
            // A file inside, so UNLINK is exercised and RMDIR meets an emptied directory.
            let flags = fuse::O_CREAT | fuse::O_WRONLY;
            let (file, fh) = session.create(d.nodeid, b"inner", flags, &clock)?;
            session.release(file.nodeid, fh, flags, &clock)?;
            session.unlink(d.nodeid, b"inner", &clock)
        })
        .and_then(|()| session.rmdir(ROOT_ID, b"probe-dir-renamed", &clock));
    if let Err(e) = dir {
        return fail_client("directory ops", e);
    }
    match session.lookup(ROOT_ID, b"probe-dir-renamed", &clock) {
        Err(e) if e.errno() == Some(2) => result("fs-dir").s("ok").nl(),
        Err(e) => return fail_client("lookup after rmdir", e),
        Ok(_) => return fail("fs: directory still there after rmdir"),
    }
    if ctx.cmdline.get("probe.fs-reopen") == Some(b"1") {
        return reopen(ctx, &clock, index);
    }
    Ending::PowerOff
}

/// Resets and re-initialises every share (Shares::open starts each device with a status
/// write of 0), then checks the chosen one still serves what was written.
fn reopen(ctx: &Context, clock: &Clock, index: usize) -> Ending {
    let Some(mut shares) = Shares::open(ctx, clock) else {
        return fail("fs: the shares did not come back after a reset");
    };
    let Some(Some(session)) = shares.sessions.get_mut(index) else {
        return fail("fs: the share did not come back after a reset");
    };
    match session.lookup(ROOT_ID, b"out.txt", clock) {
        Ok(entry) if entry.attr.size == OUT_TEXT.len() as u64 => {
            result("fs-reopen").s("ok").nl();
            Ending::PowerOff
        }
        Ok(_) => fail("fs: out.txt has the wrong size after a reset"),
        Err(e) => fail_client("lookup after reset", e),
    }
}

fn fault(ctx: &Context, clock: &Clock, shares: &mut Shares, index: usize) -> Ending {
    result("fs-ready").s("1").nl();
    let secs = ctx
        .cmdline
        .number("probe.secs")
        .ok()
        .flatten()
        .unwrap_or(60);
    let start = clock.now_ns();
    let outcome = loop {
        let Some(Some(session)) = shares.sessions.get_mut(index) else {
            return fail("fs: share vanished");
        };
        match session.getattr(ROOT_ID, clock) {
            Ok(_) => {}
            Err(ClientError::Fuse(_)) => break "errno",
            Err(ClientError::Device(FsError::Timeout)) => break "timeout",
            Err(ClientError::Device(_)) => break "failed",
        }
        if clock.now_ns().wrapping_sub(start) > secs.saturating_mul(1_000_000_000) {
            break "none";
        }
    };
    result("fs-fault").s(outcome).nl();
    let other = shares
        .sessions
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .find_map(|(_, s)| s.as_mut());
    if let Some(other) = other {
        match other.getattr(ROOT_ID, clock) {
            Ok(a) if a.is_dir() => result("fs-other-share").s("ok").nl(),
            _ => result("fs-other-share").s("error").nl(),
        }
    }
    Ending::PowerOff
}
