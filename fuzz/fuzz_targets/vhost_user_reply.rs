//! The virtio-fs front end's negotiation with a vhost-user backend that answers with arbitrary
//! bytes: the input is everything the backend sends on the socket (reply headers, bodies,
//! sizes, flags). Negotiation must end with a clear error or a session, never a panic or a
//! hang.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use devices::virtio::fs::session::Session;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((ours, theirs)) = UnixStream::pair() else {
        return;
    };
    let _ = ours.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = ours.set_write_timeout(Some(Duration::from_secs(1)));
    let reply = data.to_vec();
    let backend = std::thread::spawn(move || {
        let mut theirs = theirs;
        let _ = theirs.write_all(&reply);
        // Drain the requests until the front end gives up, then hang up.
        let _ = theirs.set_read_timeout(Some(Duration::from_millis(200)));
        let mut sink = [0u8; 4096];
        while matches!(theirs.read(&mut sink), Ok(n) if n > 0) {}
    });
    let session = Session::from_stream(ours, 2);
    drop(session);
    let _ = backend.join();
});
