#!/usr/bin/env python3
"""virtio-fs benchmark driver: the probe guest's `fs-bench` scenario on a directory served by a
real virtiofsd, beside the same workload run by this script on the host directory directly.

Guest side: `virtiofsd --sandbox none --cache never` on a fresh directory and `podvisor run
--fs tag=bench,socket=...`; the probe times, with its own clock and around the requests only, a
sequential write of --kib KiB in 32 KiB FUSE_WRITEs (then FLUSH, RELEASE), a sequential read of
it in 32 KiB FUSE_READs, and --files rounds of CREATE + RELEASE + GETATTR + UNLINK.

Host side, same directory and sizes: write(2) of 32 KiB blocks then close; read(2) of 32 KiB
blocks; --files rounds of open(O_CREAT) + close + stat + unlink. Nothing is dropped from the
page cache on either side. Each figure is the median over --runs runs. Prints a Markdown table
(and writes it to --markdown FILE if given).

Usage: fs.py --podvisor PATH --probe PATH --virtiofsd PATH [--kib N] [--files N] [--runs N]
             [--dir DIR] [--markdown FILE]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

CHUNK = 32 * 1024


def guest_run(args, share, work):
    sock = os.path.join(work, "fs.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    daemon = subprocess.Popen(
        [args.virtiofsd, "--socket-path", sock, "--shared-dir", share,
         "--sandbox", "none", "--cache", "never"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 30
        while not os.path.exists(sock):
            if time.monotonic() > end or daemon.poll() is not None:
                sys.exit("virtiofsd did not create its socket")
            time.sleep(0.02)
        cmdline = (f"console=ttyS0 probe.run=fs-bench probe.fs-bench-kib={args.kib} "
                   f"probe.fs-bench-files={args.files} probe.fs-timeout-ms=60000")
        cmd = [args.podvisor, "run", "--kernel", args.probe, "--cmdline", cmdline,
               "--memory", "256M", "--fs", f"tag=bench,socket={sock}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    results = dict(re.findall(r"PROBE-RESULT (\S+?)=(\S+)", out.stdout))
    errors = re.findall(r"PROBE-ERROR (.*)", out.stdout)
    if out.returncode != 0 or errors or "bench-files-ns" not in results:
        sys.exit(f"guest run failed (status {out.returncode}): {errors}\n{out.stdout[-2000:]}\n"
                 f"{out.stderr[-2000:]}")
    sec = lambda key: int(results[key]) / 1e9
    mib = args.kib / 1024
    return {
        "seq_write": mib / sec("bench-seq-write-ns"),
        "seq_read": mib / sec("bench-seq-read-ns"),
        "files": args.files / sec("bench-files-ns"),
    }


def host_run(args, share):
    path = os.path.join(share, "host-bench.bin")
    size = args.kib * 1024
    buf = b"\x5a" * CHUNK
    t = time.perf_counter()
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    for off in range(0, size, CHUNK):
        os.write(fd, buf[: min(CHUNK, size - off)])
    os.close(fd)
    seq_write = args.kib / 1024 / (time.perf_counter() - t)
    t = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, CHUNK):
        pass
    os.close(fd)
    seq_read = args.kib / 1024 / (time.perf_counter() - t)
    os.unlink(path)
    t = time.perf_counter()
    for i in range(args.files):
        name = os.path.join(share, f"h{i:07d}")
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))
        os.stat(name)
        os.unlink(name)
    files = args.files / (time.perf_counter() - t)
    return {"seq_write": seq_write, "seq_read": seq_read, "files": files}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--podvisor", required=True)
    p.add_argument("--probe", required=True)
    p.add_argument("--virtiofsd", required=True)
    p.add_argument("--kib", type=int, default=256 * 1024)
    p.add_argument("--files", type=int, default=10000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--dir", default=None, help="where the shared directory lives ($TMPDIR)")
    p.add_argument("--markdown")
    args = p.parse_args()

    guest, host = [], []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="podvisor-bench-fs-") as d:
        share = os.path.join(d, "share")
        os.makedirs(share)
        for i in range(args.runs):
            guest.append(guest_run(args, share, d))
            host.append(host_run(args, share))
            print(f"run {i + 1}/{args.runs}: guest {guest[-1]}, host {host[-1]}", file=sys.stderr)

    size = f"{args.kib // 1024} MiB" if args.kib % 1024 == 0 else f"{args.kib} KiB"
    rows = [
        ("sequential write, 32 KiB requests (MiB/s)", "seq_write", "{:.1f}"),
        ("sequential read, 32 KiB requests (MiB/s)", "seq_read", "{:.1f}"),
        ("create + stat + unlink of a small file (files/s)", "files", "{:.0f}"),
    ]
    lines = [
        f"| workload ({size} file, {args.files} small files, median of {args.runs}) "
        "| guest (probe, virtio-fs + virtiofsd) | host directory directly | guest / host |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, key, fmt in rows:
        g = statistics.median(r[key] for r in guest)
        h = statistics.median(r[key] for r in host)
        lines.append(f"| {name} | {fmt.format(g)} | {fmt.format(h)} | {100 * g / h:.0f} % |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
