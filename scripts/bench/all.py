#!/usr/bin/env python3
"""The whole benchmark suite with one fixed guest (the probe), as JSON lines and one table.

Every figure is the median of --runs runs (at least 5) with min and max, and where a host-side
baseline exists it is measured in the same run, interleaved with the guest runs, so the ratio
holds on a noisy machine:

  boot      start -> first guest instruction (VMM setup), first instruction -> probe marker 0x01
            (kernel: the probe entering Rust), marker 0x01 -> 0x02 (init: the scenario
            starting), VMM memory overhead (boot.py)
  api       spawn -> first answered vmm.ping (baseline: spawn -> exit of /bin/true);
            vmm.ping p50/p99 with 100 concurrent client threads, a fresh connection per request
            (api-server/examples/ping_load; baseline: the same clients against its minimal
            single-threaded responder on a host Unix socket)
  sandbox   create -> start(wait_for_agent, the probe's vsock-echo on port 1024) -> stop ->
            shutdown: sequential rate in one VMM process, and 8 VMM processes in parallel
  blk       sequential write/read MiB/s, 4 KiB random-read IOPS (blk.py; baseline: host file)
  vsock     throughput both ways and CONNECT latency (vsock.py; baseline: host Unix socket
            loopback)
  fs        sequential MiB/s and small-file ops/s over virtiofsd (fs.py; baseline: host dir)
  snp-launch  launch cost by phase from the VMM's snp-launch-timing line (with --igvm)
  snp       launch-digest throughput (baseline: raw SHA-384) and IGVM plan time
            (snp/examples/measure_bench)

Each record: {"bench", "metric", "unit", "better", "median", "min", "max", "runs",
"baseline": {"what", "median", "min", "max"} (when there is one), "ratio" (median / baseline
median)}. The first record (bench "meta") describes the machine and the commit.
"""

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blk  # noqa: E402
import boot  # noqa: E402
import fs  # noqa: E402
import vsock  # noqa: E402

PING = b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"


class Suite:
    """Collects records, prints each as a JSON line as soon as it is known."""

    def __init__(self, out):
        self.out = out
        self.records = []

    def emit(self, record):
        self.records.append(record)
        line = json.dumps(record, sort_keys=True)
        print(line, file=self.out, flush=True)
        if "median" in record:
            print(f"all.py: {record['bench']}: {record['metric']} = {record['median']:.4g}",
                  file=sys.stderr)

    def figure(self, bench, metric, unit, better, samples, baseline=None, what=None):
        rec = {"bench": bench, "metric": metric, "unit": unit, "better": better,
               "median": statistics.median(samples), "min": min(samples), "max": max(samples),
               "runs": len(samples)}
        if baseline:
            b = statistics.median(baseline)
            rec["baseline"] = {"what": what, "median": b, "min": min(baseline),
                               "max": max(baseline)}
            if b:
                rec["ratio"] = rec["median"] / b
        self.emit(rec)


# ---- API: spawn -> ready, ping latency, sandbox churn ---------------------------------------

def http(path_sock, method, path, body=b"", timeout=120.0):
    """One request on a fresh connection; returns (status, body bytes)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path_sock)
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                  f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        return read_answer(s)
    finally:
        s.close()


def read_answer(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed mid-answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest[:length]


class Vmm:
    """`podvisor --api-socket` in a temporary directory."""

    def __init__(self, podvisor):
        self.dir = tempfile.mkdtemp(prefix="podvisor-bench-all-")
        self.sock = os.path.join(self.dir, "api.sock")
        self.err = open(os.path.join(self.dir, "stderr"), "w")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([podvisor, "--api-socket", f"path={self.sock}"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.err)
        deadline = time.monotonic() + 60
        while True:
            try:
                if http(self.sock, "GET", "/api/v1/vmm.ping")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("podvisor --api-socket never answered vmm.ping")
            time.sleep(0.0002)
        self.ready_s = time.perf_counter() - t0

    def file(self, name):
        return os.path.join(self.dir, name)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        subprocess.run(["rm", "-rf", self.dir], check=False)


def spawn_true_s():
    t0 = time.perf_counter()
    subprocess.run(["/bin/true"], check=True)
    return time.perf_counter() - t0


def ping_load(args, sock_path):
    """p50 and p99 in ms of `args.clients` concurrent clients (api-server/examples/ping_load)."""
    out = subprocess.run([args.ping_load, sock_path, str(args.clients), str(args.pings)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"ping_load failed: {out.stderr[-1000:]}")
    p50, p99, _ = (int(x) / 1e3 for x in out.stdout.split())
    return p50, p99


def bench_api(suite, args):
    ready, true_s = [], []
    p50, p99, bp50, bp99 = [], [], [], []
    base_dir = tempfile.mkdtemp(prefix="podvisor-bench-ping-")
    base_sock = os.path.join(base_dir, "s")
    base = subprocess.Popen([args.ping_load, "--serve", base_sock], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(base_sock):
            if time.monotonic() > deadline:
                raise RuntimeError("baseline responder did not start")
            time.sleep(0.01)
        for i in range(args.runs):
            vmm = Vmm(args.podvisor)
            try:
                ready.append(vmm.ready_s * 1e3)
                true_s.append(spawn_true_s() * 1e3)
                a, b = ping_load(args, vmm.sock)
                p50.append(a)
                p99.append(b)
            finally:
                vmm.close()
            a, b = ping_load(args, base_sock)
            bp50.append(a)
            bp99.append(b)
            print(f"all.py: api run {i + 1}/{args.runs} done", file=sys.stderr)
    finally:
        base.terminate()
        base.wait()
        subprocess.run(["rm", "-rf", base_dir], check=False)
    suite.figure("api", "spawn to API ready", "ms", "lower", ready, true_s,
                 "spawn -> exit of /bin/true")
    what = "same clients, minimal HTTP responder on a host Unix socket (ping_load --serve)"
    n = f"{args.clients} clients x {args.pings}"
    suite.figure("api", f"vmm.ping p50 ({n})", "ms", "lower", p50, bp50, what)
    suite.figure("api", f"vmm.ping p99 ({n})", "ms", "lower", p99, bp99, what)


def sandbox_spec(vmm, probe, tag):
    return json.dumps({
        "sandbox_id": f"bench-{tag}",
        "vm": {
            "payload": {"kernel": probe,
                        "cmdline": "console=ttyS0 probe.run=vsock-echo probe.secs=300"},
            "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
            "memory": {"size": 128 << 20},
            "serial": {"mode": "Off"},
            "console": {"mode": "Off"},
            "vsock": {"cid": 3, "socket": vmm.file("vsock.sock")},
        },
        "agent_vsock_port": 1024,
        "lifecycle": {"exit_on_vm_end": False},
    }).encode()


def sandbox_cycles(vmm, probe, count, tag):
    start = json.dumps({"wait_for_agent": True, "timeout_ms": 60000}).encode()
    for i in range(count):
        steps = [("PUT", "/api/v1/sandbox.create", sandbox_spec(vmm, probe, f"{tag}-{i}"), 204),
                 ("PUT", "/api/v1/sandbox.start", start, 200),
                 ("PUT", "/api/v1/sandbox.stop", b"", 204),
                 ("GET", "/api/v1/sandbox.wait?timeout_ms=60000", b"", 200),
                 ("PUT", "/api/v1/sandbox.shutdown", b"", 204)]
        for method, path, body, want in steps:
            status, answer = http(vmm.sock, method, path, body)
            if status != want:
                raise RuntimeError(f"{method} {path} answered {status}: {answer[:300]!r}")


def bench_sandbox(suite, args):
    seq, par = [], []
    for i in range(args.runs):
        vmm = Vmm(args.podvisor)
        try:
            t0 = time.perf_counter()
            sandbox_cycles(vmm, args.probe, args.churn, "seq")
            seq.append(args.churn / (time.perf_counter() - t0))
        finally:
            vmm.close()
        vmms = [Vmm(args.podvisor) for _ in range(8)]
        errors = []

        def worker(v, n):
            try:
                sandbox_cycles(v, args.probe, args.churn, f"par{n}")
            except (OSError, RuntimeError) as e:
                errors.append(e)
        try:
            threads = [threading.Thread(target=worker, args=(v, n)) for n, v in enumerate(vmms)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            par.append(8 * args.churn / (time.perf_counter() - t0))
        finally:
            for v in vmms:
                v.close()
        if errors:
            raise RuntimeError(f"parallel churn: {errors[0]}")
        print(f"all.py: sandbox run {i + 1}/{args.runs} done", file=sys.stderr)
    suite.figure("sandbox", "churn, sequential (create->agent ready->stop)", "sandboxes/s",
                 "higher", seq)
    suite.figure("sandbox", "churn, 8 VMM processes in parallel", "sandboxes/s", "higher", par)


# ---- boot ---------------------------------------------------------------------------------

def bench_boot(suite, args):
    setup, kernel, init, overhead, private = [], [], [], [], []
    for i in range(args.runs):
        t = boot.timing_run(args.podvisor, args.probe, 1, 128)
        setup.append(t["first-instruction-us"] / 1e3)
        kernel.append((t["marker-01-us"] - t["first-instruction-us"]) / 1e3)
        if "marker-02-us" in t:
            init.append((t["marker-02-us"] - t["marker-01-us"]) / 1e3)
        m = boot.memory_run(args.podvisor, args.probe, 1, 128, 1)
        overhead.append(m["overhead-kib"] / 1024)
        private.append(m["private-kib"] / 1024)
        print(f"all.py: boot run {i + 1}/{args.runs} done", file=sys.stderr)
    suite.figure("boot", "VMM setup: start -> first guest instruction (1 vCPU/128 MiB)", "ms",
                 "lower", setup)
    suite.figure("boot", "kernel: first instruction -> probe marker 0x01", "ms", "lower", kernel)
    if init:
        suite.figure("boot", "init: marker 0x01 -> scenario start (0x02)", "ms", "lower", init)
    suite.figure("boot", "VMM memory overhead (peak RSS - guest RAM resident)", "MiB", "lower",
                 overhead)
    suite.figure("boot", "VMM private memory outside guest RAM (excludes shared binary/libc pages)",
                 "MiB", "lower", private)


# ---- devices ------------------------------------------------------------------------------

def bench_blk(suite, args):
    ns = types.SimpleNamespace(podvisor=args.podvisor, probe=args.probe, mib=args.blk_mib,
                               ops=args.blk_ops, qd=16, seq_kib=1024, timeout=900)
    guest, host = [], []
    with tempfile.TemporaryDirectory(prefix="podvisor-bench-blk-") as d:
        path = os.path.join(d, "disk.img")
        with open(path, "wb") as f:
            f.truncate(args.blk_mib << 20)
        for i in range(args.runs):
            guest.append(blk.guest_run(ns, path))
            host.append(blk.host_run(ns, path))
            print(f"all.py: blk run {i + 1}/{args.runs} done", file=sys.stderr)
    for key, metric, unit in [("seq_write", f"seq write {args.blk_mib} MiB, 1 MiB requests",
                               "MiB/s"),
                              ("seq_read", f"seq read {args.blk_mib} MiB, 1 MiB requests",
                               "MiB/s"),
                              ("rand_qd1", "4 KiB random read, depth 1", "IOPS"),
                              ("rand_qd", "4 KiB random read, depth 16", "IOPS")]:
        suite.figure("blk", metric, unit, "higher", [g[key] for g in guest],
                     [h[key] for h in host], "host file, same sizes")


def loopback(mib, dials):
    """Host Unix-socket loopback: stream `mib` MiB one way and time `dials` connects."""
    d = tempfile.mkdtemp(prefix="podvisor-bench-loop-")
    path = os.path.join(d, "s")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)

    def serve():
        while True:
            c, _ = srv.accept()
            first = c.recv(1 << 16)
            if first.startswith(b"STOP"):
                c.close()
                return
            if first.startswith(b"CONNECT"):
                c.sendall(b"OK 1\n")
            while c.recv(1 << 20):
                pass
            c.close()
    t = threading.Thread(target=serve)
    t.start()
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        c.sendall(b"DATA")
        chunk = b"\0" * (64 << 10)
        t0 = time.perf_counter()
        for _ in range((mib << 20) // len(chunk)):
            c.sendall(chunk)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
        thr = mib / (time.perf_counter() - t0)
        c.close()
        lat = []
        for _ in range(dials):
            s, dt = vsock.dial(path, 1024)
            lat.append(dt * 1e3)
            s.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(b"STOP")
        s.close()
    finally:
        t.join(timeout=30)
        srv.close()
        subprocess.run(["rm", "-rf", d], check=False)
    return thr, statistics.median(lat)


def bench_vsock(suite, args):
    ns = types.SimpleNamespace(podvisor=args.podvisor, probe=args.probe, mib=args.vsock_mib,
                               dials=args.dials)
    guest, host = [], []
    for i in range(args.runs):
        guest.append(vsock.one_run(ns))
        host.append(loopback(args.vsock_mib, args.dials))
        print(f"all.py: vsock run {i + 1}/{args.runs} done", file=sys.stderr)
    what = "host Unix-socket loopback"
    hthr = [h[0] for h in host]
    suite.figure("vsock", f"host->guest stream {args.vsock_mib} MiB", "MiB/s", "higher",
                 [g["h2g"] for g in guest], hthr, what)
    suite.figure("vsock", f"guest->host stream {args.vsock_mib} MiB", "MiB/s", "higher",
                 [g["g2h"] for g in guest], hthr, what)
    suite.figure("vsock", f"CONNECT->OK latency, median of {args.dials}", "ms", "lower",
                 [g["lat_med"] for g in guest], [h[1] for h in host], what)


def bench_fs(suite, args):
    usage = subprocess.run([args.podvisor, "run", "--help"], capture_output=True, text=True).stdout
    if "--fs" not in usage:
        print("all.py: fs skipped: this podvisor has no `run --fs`", file=sys.stderr)
        suite.emit({"bench": "fs", "metric": "skipped", "reason": "podvisor run has no --fs"})
        return
    if not os.access(args.virtiofsd, os.X_OK):
        print(f"all.py: fs skipped: {args.virtiofsd} not found (scripts/setup installs it)",
              file=sys.stderr)
        suite.emit({"bench": "fs", "metric": "skipped", "reason": "virtiofsd not installed"})
        return
    ns = types.SimpleNamespace(podvisor=args.podvisor, probe=args.probe,
                               virtiofsd=args.virtiofsd, kib=args.fs_kib, files=args.fs_files,
                               timeout=1800)
    guest, host = [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="podvisor-bench-fs-") as d:
            share = os.path.join(d, "share")
            os.mkdir(share)
            guest.append(fs.guest_run(ns, share, d))
            host.append(fs.host_run(ns, share))
        print(f"all.py: fs run {i + 1}/{args.runs} done", file=sys.stderr)
    what = "host directory, same sizes"
    for key, metric, unit in [("seq_write", f"seq write {args.fs_kib} KiB", "MiB/s"),
                              ("seq_read", f"seq read {args.fs_kib} KiB", "MiB/s"),
                              ("files", "create+stat+unlink", "ops/s")]:
        suite.figure("fs", metric, unit, "higher", [g[key] for g in guest],
                     [h[key] for h in host], what)


# ---- SNP measurement ----------------------------------------------------------------------

NUM = r"([\d.]+)"
RANGE = NUM + r"(?: ms)? \(" + NUM + r" – " + NUM


def bench_snp_measure(suite, args):
    out = subprocess.run([args.measure_bench, str(args.runs)], capture_output=True, text=True,
                         check=True).stdout
    digest = re.search(r"launch digest[^|]*\| " + RANGE, out)
    raw = re.search(r"raw SHA-384[^|]*\| " + RANGE, out)
    if not digest or not raw:
        raise RuntimeError(f"unexpected measure_bench output:\n{out}")
    d = [float(x) for x in digest.groups()]
    r = [float(x) for x in raw.groups()]
    rec = {"bench": "snp", "metric": "launch digest, NORMAL pages", "unit": "MiB/s",
           "better": "higher", "median": d[0], "min": d[1], "max": d[2], "runs": args.runs,
           "baseline": {"what": "raw SHA-384, same bytes", "median": r[0], "min": r[1],
                        "max": r[2]}, "ratio": d[0] / r[0]}
    suite.emit(rec)
    for ram, med, lo, hi in re.findall(r"\| guest RAM (\S+ \S+) \| \d+ \| " + RANGE, out):
        suite.emit({"bench": "snp", "metric": f"IGVM plan + measure, guest RAM {ram}",
                    "unit": "ms", "better": "lower", "median": float(med), "min": float(lo),
                    "max": float(hi), "runs": args.runs})


def snp_launch_run(podvisor, platform, igvm):
    """One `podvisor run --platform sev_snp=PLATFORM --igvm FILE`: its stderr. With sev_snp=on
    the launched guest runs; it is stopped (SIGTERM) two seconds after the launch, so that the
    VMM's `boot-timing` line reports when its first instruction ran."""
    proc = subprocess.Popen([podvisor, "run", "--platform", f"sev_snp={platform}", "--igvm",
                             igvm, "--cpus", "1", "--serial", "off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 600
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if line.startswith("snp-launch-timing ") and platform == "on":
            time.sleep(2)
            proc.terminate()
        if time.monotonic() > deadline:
            proc.kill()
    proc.wait(timeout=60)
    return lines


def bench_snp_launch(suite, args):
    """Launch cost by phase, from the VMM's own `snp-launch-timing` line (snp/src/launch/timing.rs)
    of `podvisor run --platform sev_snp=PLATFORM --igvm FILE`; with sev_snp=on also the time
    from process start to the guest's first instruction (`boot-timing`)."""
    phases = {}
    for i in range(args.runs):
        lines = snp_launch_run(args.podvisor, args.snp_platform, args.igvm)
        line = next((l for l in lines if l.startswith("snp-launch-timing ")), None)
        if line is None:
            raise RuntimeError("no snp-launch-timing line:\n" + "\n".join(lines[-30:]))
        for word in line.split()[1:]:
            key, _, value = word.partition("=")
            phases.setdefault(key, []).append(int(value))
        boot = next((l for l in lines if l.startswith("boot-timing ")), None)
        if boot is not None and args.snp_platform == "on":
            timing = dict(w.split("=", 1) for w in boot.split()[1:] if "=" in w)
            if "first-instruction-us" in timing:
                phases.setdefault("first-instruction-us", []).append(
                    int(timing["first-instruction-us"]))
        print(f"all.py: snp-launch run {i + 1}/{args.runs} done", file=sys.stderr)
    label = {"digest-us": "expected digest from the plan", "init2-us": "KVM_SEV_INIT2",
             "memory-us": "guest_memfd slots + private attributes", "vcpus-us": "vCPU creation",
             "launch-start-us": "SNP_LAUNCH_START", "launch-update-us": "SNP_LAUNCH_UPDATE (all)",
             "finish-us": "SNP_LAUNCH_FINISH", "total-us": "launch total",
             "first-instruction-us": "process start -> first guest instruction"}
    for key, name in label.items():
        if key in phases:
            suite.figure("snp-launch", f"{name} (sev_snp={args.snp_platform})", "ms", "lower",
                         [v / 1e3 for v in phases[key]])


BENCHES = {"boot": bench_boot, "api": bench_api, "sandbox": bench_sandbox, "blk": bench_blk,
           "vsock": bench_vsock, "fs": bench_fs, "snp-measure": bench_snp_measure,
           "snp-launch": bench_snp_launch}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--podvisor", required=True)
    p.add_argument("--probe", required=True)
    p.add_argument("--virtiofsd", required=True)
    p.add_argument("--measure-bench", required=True)
    p.add_argument("--ping-load", required=True)
    p.add_argument("--igvm", help="IGVM file for snp-launch")
    p.add_argument("--snp-platform", default="on", choices=["on", "model"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--only", action="append", choices=sorted(BENCHES))
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--pings", type=int, default=20, help="pings per client per run")
    p.add_argument("--churn", type=int, default=3, help="sandboxes per VMM process per run")
    p.add_argument("--blk-mib", type=int, default=16)
    p.add_argument("--blk-ops", type=int, default=512)
    p.add_argument("--vsock-mib", type=int, default=4)
    p.add_argument("--dials", type=int, default=50)
    p.add_argument("--fs-kib", type=int, default=4096)
    p.add_argument("--fs-files", type=int, default=200)
    p.add_argument("--commit", default="")
    p.add_argument("--json", required=True, help="write the JSON lines here")
    args = p.parse_args()
    if args.runs < 5:
        p.error("--runs must be at least 5")
    with open(args.json, "w") as out:
        suite = Suite(out)
        cpu = "?"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        suite.emit({"bench": "meta", "metric": "machine", "commit": args.commit,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
                    "kvm": "PVM" if os.path.isdir("/sys/module/kvm_pvm") else "KVM",
                    "load": open("/proc/loadavg").read().split()[:3], "runs": args.runs})
        failed = []
        names = args.only or [n for n in BENCHES if n != "snp-launch" or args.igvm]
        for name in names:
            # One failing benchmark (the helpers exit on a failed guest run) must not lose the
            # others' figures; it is recorded and the suite exits non-zero.
            try:
                BENCHES[name](suite, args)
            except (SystemExit, Exception) as e:  # noqa: BLE001
                print(f"all.py: {name} failed: {e}", file=sys.stderr)
                suite.emit({"bench": name, "metric": "failed", "reason": str(e)[-2000:]})
                failed.append(name)
    if failed:
        print(f"all.py: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
