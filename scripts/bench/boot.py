#!/usr/bin/env python3
"""Boot benchmark driver: runs `podvisor run` with the probe guest and reports, per VM shape,
median and min-max over the runs of

  (a) process start -> first guest instruction  (`first-instruction-us` of the boot-timing line)
  (b) process start -> probe's first marker     (`marker-01-us`: the probe entered Rust)
  (c) process start -> VM stopped after power-off (`exit-us`), and spawn -> process reaped as
      seen from outside (includes exec, dynamic loading and teardown)
  (d) VMM memory overhead: peak RSS of the process (VmHWM in /proc/PID/status, the kernel's
      high-water mark of the process's own address space) minus the resident part of the
      guest RAM mapping (/proc/PID/smaps: the kernel image, boot data and every page the guest
      touched; see guest_rss_kib), both sampled every 50 ms while the guest idles, last
      sample used. (wait4's ru_maxrss would not do: it keeps the high-water mark of the
      forking parent from before exec.)

Timing runs use `probe.run=poweroff`; memory runs use `probe.run=idle` so the process can be
sampled while the guest is up. The boot-timing times are measured by the VMM from the first
statement of main.

Usage: boot.py --podvisor PATH --probe PATH [--runs N] [--shape CPUS:MIB ...] [--markdown FILE]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time


class BenchError(Exception):
    pass


def boot_timing(stderr: str) -> dict:
    for line in reversed(stderr.splitlines()):
        if line.startswith("boot-timing"):
            values = {}
            for word in line.split()[1:]:
                key, _, value = word.partition("=")
                if value.isdigit():
                    values[key] = int(value)
            return values
    raise BenchError(f"no boot-timing line on stderr:\n{stderr[-2000:]}")


def run_args(podvisor: str, probe: str, scenario: str, cpus: int, mib: int) -> list:
    return [podvisor, "run", "--kernel", probe, "--cmdline", scenario,
            "--cpus", str(cpus), "--memory", f"{mib}M", "--serial", "off"]


def timing_run(podvisor: str, probe: str, cpus: int, mib: int) -> dict:
    args = run_args(podvisor, probe, "probe.run=poweroff", cpus, mib)
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"{' '.join(args)} did not finish within 120 s")
    wall_us = int((time.perf_counter() - start) * 1e6)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(args)} exited {proc.returncode} (expected 0):\n{stderr[-2000:]}")
    timing = boot_timing(stderr)
    for key in ("first-instruction-us", "marker-01-us", "exit-us"):
        if key not in timing:
            raise BenchError(f"boot-timing line lacks {key}: {timing}")
    timing["wall-us"] = wall_us
    return timing


def vm_hwm_kib(pid: int):
    """VmHWM of the process, or None if it is gone (or a zombie without an address space)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def guest_rss_kib(pid: int, guest_kib: int):
    """Resident KiB of the guest RAM mapping; None before the VMM has mapped guest RAM or after
    the process is gone.

    The kernel may merge an adjacent anonymous mapping with the same permissions into the
    guest RAM area (seen: 132 KiB more than guest RAM). Such a mapping is taken to be the
    one whose size is guest RAM plus less than 2 MiB, and its excess is counted as fully
    resident VMM memory, so the overhead is never understated.
    """
    try:
        with open(f"/proc/{pid}/smaps") as f:
            text = f.read()
    except OSError:
        return None
    size = None
    for line in text.splitlines():
        if line.startswith("Size:"):
            size = int(line.split()[1])
        elif line.startswith("Rss:") and size is not None and guest_kib <= size < guest_kib + 2048:
            return max(0, int(line.split()[1]) - (size - guest_kib))
    return None


def private_outside_guest_kib(pid: int, guest_kib: int):
    """Private (unshared) KiB of every mapping but guest RAM: what one more VMM process costs,
    as opposed to RSS, which also counts the binary's and libc's page-cache pages that every
    VMM process shares. None when the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            text = f.read()
    except OSError:
        return None
    total, size, in_guest = 0, 0, False
    for line in text.splitlines():
        if line.startswith("Size:"):
            size = int(line.split()[1])
            in_guest = guest_kib <= size < guest_kib + 2048
        elif line.startswith(("Private_Clean:", "Private_Dirty:")) and not in_guest:
            total += int(line.split()[1])
    return total


def memory_run(podvisor: str, probe: str, cpus: int, mib: int, idle_secs: int) -> dict:
    args = run_args(podvisor, probe, f"probe.run=idle probe.secs={idle_secs}", cpus, mib)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    guest_kib = mib * 1024
    last = None
    deadline = time.monotonic() + idle_secs + 120
    while True:
        hwm = vm_hwm_kib(proc.pid)
        rss = guest_rss_kib(proc.pid, guest_kib)
        private = private_outside_guest_kib(proc.pid, guest_kib)
        if hwm is not None and rss is not None and private is not None:
            last = (hwm, rss, private)
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise BenchError(f"{' '.join(args)} did not finish within {idle_secs + 120} s")
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        raise BenchError(f"{' '.join(args)} exited {code} (expected 0)")
    if last is None:
        raise BenchError(f"never saw a {mib} MiB guest RAM mapping in /proc/{proc.pid}/smaps")
    hwm, rss, private = last
    return {"peak-rss-kib": hwm, "guest-rss-kib": rss, "overhead-kib": hwm - rss,
            "private-kib": private}


def summary(values: list) -> tuple:
    return statistics.median(values), min(values), max(values)


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def fmt_mib(kib: float) -> str:
    return f"{kib / 1024:.2f} MiB"


ROWS = [
    ("(a) start → first guest instruction", "first-instruction-us", fmt_ms),
    ("(b) start → probe marker 0x01", "marker-01-us", fmt_ms),
    ("(c) start → VM stopped after power-off", "exit-us", fmt_ms),
    ("(c') spawn → process reaped (outside view)", "wall-us", fmt_ms),
    ("(d) peak RSS − guest RAM resident", "overhead-kib", fmt_mib),
    ("    of which private (not shared page cache)", "private-kib", fmt_mib),
    ("    peak RSS (VmHWM)", "peak-rss-kib", fmt_mib),
    ("    guest RAM resident", "guest-rss-kib", fmt_mib),
]


def main() -> int:
    p = argparse.ArgumentParser(description="podvisor boot benchmark (probe guest)")
    p.add_argument("--podvisor", required=True)
    p.add_argument("--probe", required=True)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--idle-secs", type=int, default=2)
    p.add_argument("--shape", action="append", default=[],
                   help="CPUS:MIB, repeatable (default 1:128 and 2:512)")
    p.add_argument("--markdown", help="also write the result table (markdown) to this file")
    args = p.parse_args()
    shapes = args.shape or ["1:128", "2:512"]
    if args.runs < 1:
        print("boot.py: --runs must be at least 1", file=sys.stderr)
        return 2

    lines = ["| metric | " + " | ".join(
        f"{s.split(':')[0]} vCPU(s) / {s.split(':')[1]} MiB: median (min – max)" for s in shapes) + " |",
        "| --- |" + " --- |" * len(shapes)]
    results = []
    try:
        for shape in shapes:
            cpus, mib = (int(x) for x in shape.split(":"))
            samples = {}
            for i in range(args.runs):
                for key, value in timing_run(args.podvisor, args.probe, cpus, mib).items():
                    samples.setdefault(key, []).append(value)
                for key, value in memory_run(args.podvisor, args.probe, cpus, mib,
                                             args.idle_secs).items():
                    samples.setdefault(key, []).append(value)
                print(f"boot.py: {shape} run {i + 1}/{args.runs} done", file=sys.stderr)
            results.append(samples)
    except (BenchError, OSError, ValueError) as e:
        print(f"boot.py: {e}", file=sys.stderr)
        return 1
    for label, key, fmt in ROWS:
        cells = []
        for samples in results:
            med, lo, hi = summary(samples[key])
            cells.append(f"{fmt(med)} ({fmt(lo)} – {fmt(hi)})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
