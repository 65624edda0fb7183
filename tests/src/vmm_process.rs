//! A running VMM process seen from the host through /proc: found by an argument of its command
//! line, its open descriptors and resident memory, for tests that watch for leaks.

use std::path::Path;

/// The pid of the process whose command line holds `socket=<socket>` (a VMM serving that
/// hybrid-vsock socket), if one runs.
pub fn pid_serving(socket: &Path) -> Option<u32> {
    let needle = format!("socket={}", socket.display());
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&needle)
                .then_some(pid)
        })
}

/// How many descriptors `pid` has open (0 once it is gone).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `VmRSS` of `pid` in KiB, if it runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
