#!/usr/bin/env python3
"""virtio-blk benchmark driver: the probe guest's `blk-bench` scenario on a file-backed disk,
beside the same workload run by this script on the host file directly.

Guest side: `podvisor run` with one `--disk` on a fresh file of --mib MiB; the probe times, with
its own clock and around the I/O only, a sequential write (--seq-kib requests, default 1 MiB as
in fio's sequential jobs, then FLUSH), a sequential read of the same range in the same requests, and --ops random 4 KiB reads at queue depth 1 and at depth
--qd (capped by the probe driver's 16-descriptor ring; the depth reached is reported).

Host side, same file, same sizes, same page cache conditions (nothing dropped in either case):
sequential pwrite of --seq-kib blocks then fdatasync; sequential pread of --seq-kib blocks; --ops
random 4 KiB preads one at a time (depth 1) and from --qd threads at once (depth --qd).

Each figure is the median over --runs runs. Prints a Markdown table (and writes it to
--markdown FILE if given).

Usage: blk.py --podvisor PATH --probe PATH [--mib N] [--ops N] [--qd N] [--seq-kib N]
              [--runs N] [--dir DIR] [--markdown FILE]
"""

import argparse
import concurrent.futures
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

BLOCK = 4096


def guest_run(args, path):
    cmdline = (
        f"console=ttyS0 probe.run=blk-bench probe.blk-kib={args.mib * 1024} "
        f"probe.blk-ops={args.ops} probe.blk-qd={args.qd} "
        f"probe.blk-seq-kib={args.seq_kib}"
    )
    cmd = [
        args.podvisor, "run", "--kernel", args.probe, "--cmdline", cmdline,
        "--memory", "256M", "--disk", f"path={path},queue_size=256",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    results = dict(re.findall(r"PROBE-RESULT (\S+?)=(\S+)", out.stdout))
    errors = re.findall(r"PROBE-ERROR (.*)", out.stdout)
    if out.returncode != 0 or errors or "bench-rand-qd-ns" not in results:
        sys.exit(f"guest run failed (status {out.returncode}): {errors}\n{out.stdout[-2000:]}\n"
                 f"{out.stderr[-2000:]}")
    ns = lambda key: int(results[key]) / 1e9
    mib = args.mib
    return {
        "seq_write": mib / ns("bench-seq-write-ns"),
        "seq_read": mib / ns("bench-seq-read-ns"),
        "rand_qd1": args.ops / ns("bench-rand-qd1-ns"),
        "rand_qd": args.ops / ns("bench-rand-qd-ns"),
        "qd": int(results["bench-qd"]),
    }


def host_run(args, path):
    size = args.mib << 20
    chunk = args.seq_kib << 10
    buf = os.urandom(chunk)
    fd = os.open(path, os.O_RDWR)
    try:
        t = time.perf_counter()
        for off in range(0, size, chunk):
            os.pwrite(fd, buf, off)
        os.fdatasync(fd)
        seq_write = args.mib / (time.perf_counter() - t)
        t = time.perf_counter()
        for off in range(0, size, chunk):
            os.pread(fd, chunk, off)
        seq_read = args.mib / (time.perf_counter() - t)
        rng = random.Random(7)
        offsets = [rng.randrange(size // BLOCK) * BLOCK for _ in range(args.ops)]
        t = time.perf_counter()
        for off in offsets:
            os.pread(fd, BLOCK, off)
        rand_qd1 = args.ops / (time.perf_counter() - t)
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.qd) as pool:
            t = time.perf_counter()
            list(pool.map(lambda off: os.pread(fd, BLOCK, off), offsets))
            rand_qd = args.ops / (time.perf_counter() - t)
    finally:
        os.close(fd)
    return {"seq_write": seq_write, "seq_read": seq_read, "rand_qd1": rand_qd1,
            "rand_qd": rand_qd, "qd": args.qd}


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--podvisor", required=True)
    p.add_argument("--probe", required=True)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--ops", type=int, default=2048)
    p.add_argument("--qd", type=int, default=32)
    p.add_argument("--seq-kib", type=int, default=1024,
                   help="sequential request size in KiB (multiple of 16, at most 1024)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--dir", default=None, help="where the disk file lives (default: $TMPDIR)")
    p.add_argument("--markdown")
    args = p.parse_args()

    guest, host = [], []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="podvisor-bench-blk-") as d:
        path = os.path.join(d, "disk.img")
        with open(path, "wb") as f:
            f.truncate(args.mib << 20)
        for i in range(args.runs):
            guest.append(guest_run(args, path))
            host.append(host_run(args, path))
            print(f"run {i + 1}/{args.runs}: guest {guest[-1]}, host {host[-1]}", file=sys.stderr)

    rows = [
        ("sequential write (MiB/s)", "seq_write", "{:.1f}"),
        ("sequential read (MiB/s)", "seq_read", "{:.1f}"),
        ("4 KiB random read, depth 1 (IOPS)", "rand_qd1", "{:.0f}"),
        (f"4 KiB random read, depth {args.qd} requested (IOPS)", "rand_qd", "{:.0f}"),
    ]
    lines = [
        f"| workload ({args.mib} MiB file, {args.seq_kib} KiB sequential requests, {args.ops} "
        f"random reads, median of {args.runs}) "
        "| guest (probe, virtio-blk) | host file directly | guest / host |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, key, fmt in rows:
        g, h = median(guest, key), median(host, key)
        lines.append(f"| {name} | {fmt.format(g)} | {fmt.format(h)} | {100 * g / h:.0f} % |")
    lines.append("")
    lines.append(f"Depth reached in the guest: {min(r['qd'] for r in guest)} "
                 "(the probe driver's ring has 16 descriptors).")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
