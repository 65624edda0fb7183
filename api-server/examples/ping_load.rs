//! Load generator for `scripts/bench/all`: CLIENTS threads each send PINGS `GET vmm.ping`
//! requests, one fresh connection per request as Kata's client does, and the latency of every
//! request (connect to last body byte) is collected; prints `p50_us p99_us max_us`. A Python
//! client would measure its own event loop, not the server.
//!
//! `ping_load --serve SOCKET` is the host baseline: a minimal single-threaded responder that
//! reads a request head and answers a fixed 200, i.e. the cost of the Unix socket and HTTP
//! framing alone.
//!
//! Usage: ping_load SOCKET CLIENTS PINGS | ping_load --serve SOCKET

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";
const BODY: &str = r#"{"build_version":"baseline","version":"0"}"#;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Reads one answer (head plus Content-Length bytes of body); returns its status.
fn read_answer(s: &mut UnixStream) -> Result<u16, Error> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err("connection closed before the answer ended".into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text.get(..end).unwrap_or_default().to_ascii_lowercase();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or("no status")?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Ok(status);
            }
        }
    }
}

fn client(socket: String, pings: usize) -> Result<Vec<Duration>, Error> {
    let mut lat = Vec::with_capacity(pings);
    for _ in 0..pings {
        let t = Instant::now();
        let mut s = UnixStream::connect(&socket)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(REQUEST)?;
        let status = read_answer(&mut s)?;
        if status != 200 {
            return Err(format!("vmm.ping answered {status}").into());
        }
        lat.push(t.elapsed());
    }
    Ok(lat)
}

fn serve(socket: &str) -> Result<(), Error> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    for conn in listener.incoming() {
        let mut s = conn?;
        let mut head = Vec::new();
        let mut chunk = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
        let _ = s.write_all(answer.as_bytes());
    }
    Ok(())
}

fn percentile(sorted: &[Duration], q: f64) -> u128 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0, Duration::as_micros)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, socket] = args.as_slice() {
        if flag == "--serve" {
            return serve(socket);
        }
    }
    let [socket, clients, pings] = args.as_slice() else {
        return Err("usage: ping_load SOCKET CLIENTS PINGS | ping_load --serve SOCKET".into());
    };
    let clients: usize = clients.parse()?;
    let pings: usize = pings.parse()?;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || client(socket, pings))
        })
        .collect();
    let mut all = Vec::with_capacity(clients * pings);
    for t in threads {
        all.extend(t.join().map_err(|_| "client thread panicked")??);
    }
    all.sort();
    println!(
        "{} {} {}",
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.last().map_or(0, Duration::as_micros)
    );
    Ok(())
}
