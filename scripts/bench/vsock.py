#!/usr/bin/env python3
"""virtio-vsock benchmark over the hybrid Unix socket, against the probe's vsock-echo agent.

One VM per run. The host dials through `--vsock cid=3,socket=PATH`:
- host->guest: CONNECT 1030 (the probe reads and discards), write N MiB and half-close; the
  VMM sees the end only after the last byte went to the guest, tells the probe, and closes
  the Unix connection once the probe has read everything and reset: timed to that EOF;
- guest->host: CONNECT 1031 (the probe sends N MiB of zeros, then shuts down), read to EOF;
- CONNECT->OK latency: K dials of the echo port, time from connect() to the `OK` line.
Prints a markdown table of medians over the runs.
"""
import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time


def dial(path, port, timeout=60.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    t0 = time.perf_counter()
    s.connect(path)
    s.sendall(b"CONNECT %d\n" % port)
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            s.close()
            return None, None
        line += b
    if not line.startswith(b"OK "):
        raise RuntimeError("unexpected reply %r" % line)
    return s, time.perf_counter() - t0


def wait_listening(path, deadline):
    while time.time() < deadline:
        if os.path.exists(path):
            s, _ = dial(path, 1024)
            if s is not None:
                s.close()
                return
        time.sleep(0.1)
    raise RuntimeError("the probe never listened on port 1024")


def echo_round_trip(path):
    s, _ = dial(path, 1024)
    s.sendall(b"x")
    if s.recv(1) != b"x":
        raise RuntimeError("echo failed")
    s.close()


def one_run(args):
    d = tempfile.mkdtemp(prefix="podvisor-bench-vsock-")
    path = os.path.join(d, "vsock.sock")
    cmdline = "probe.run=vsock-echo probe.vsock-source-mib=%d" % args.mib
    vm = subprocess.Popen(
        [args.podvisor, "run", "--kernel", args.probe, "--cmdline", cmdline,
         "--memory", "256M", "--serial", "off", "--vsock", "cid=3,socket=" + path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(path, time.time() + 120)
        size = args.mib << 20
        # host -> guest
        s, _ = dial(path, 1030)
        chunk = b"\0" * (64 << 10)
        t0 = time.perf_counter()
        sent = 0
        while sent < size:
            s.sendall(chunk)
            sent += len(chunk)
        s.shutdown(socket.SHUT_WR)
        # The probe closes once it has everything; EOF marks the end of the transfer.
        s.recv(1)
        h2g = time.perf_counter() - t0
        s.close()
        # guest -> host
        s, _ = dial(path, 1031)
        t0 = time.perf_counter()
        got = 0
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got += len(b)
        g2h = time.perf_counter() - t0
        s.close()
        if got != size:
            raise RuntimeError("guest->host got %d of %d bytes" % (got, size))
        # CONNECT -> OK latency
        lat = []
        for _ in range(args.dials):
            s, dt = dial(path, 1024)
            lat.append(dt)
            s.close()
        echo_round_trip(path)
        stop, _ = dial(path, 1025)
        if stop is not None:
            stop.close()
        vm.wait(timeout=60)
        return {
            "h2g": args.mib / h2g,
            "g2h": args.mib / g2h,
            "lat_med": statistics.median(lat) * 1e3,
            "lat_p99": sorted(lat)[max(0, int(len(lat) * 0.99) - 1)] * 1e3,
        }
    finally:
        if vm.poll() is None:
            vm.kill()
            vm.wait()
        try:
            os.unlink(path)
        except OSError:
            pass
        os.rmdir(d)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--podvisor", required=True)
    p.add_argument("--probe", required=True)
    p.add_argument("--mib", type=int, default=16)
    p.add_argument("--dials", type=int, default=200)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--markdown")
    args = p.parse_args()
    runs = [one_run(args) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    table = "\n".join([
        "| measurement (median of %d runs) | value |" % args.runs,
        "| --- | --- |",
        "| host->guest stream, %d MiB (MiB/s) | %.1f |" % (args.mib, med["h2g"]),
        "| guest->host stream, %d MiB (MiB/s) | %.1f |" % (args.mib, med["g2h"]),
        "| CONNECT->OK latency, median of %d dials (ms) | %.2f |" % (args.dials, med["lat_med"]),
        "| CONNECT->OK latency, p99 (ms) | %.2f |" % med["lat_p99"],
    ]) + "\n"
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
