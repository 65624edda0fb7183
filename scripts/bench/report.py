#!/usr/bin/env python3
"""Reads the JSON lines of scripts/bench/all: `report.py table A.json` prints the Markdown table;
`report.py compare A.json B.json` prints B / A for every figure both hold (median and baseline
ratio), with a verdict from each figure's `better` direction."""

import json
import sys


def load(path):
    meta, figures, notes = {}, {}, []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
            if rec.get("bench") == "meta":
                meta = rec
            elif "median" in rec:
                figures[(rec["bench"], rec["metric"])] = rec
            else:
                notes.append(rec)
    return meta, figures, notes


def num(x):
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(path):
    meta, figures, notes = load(path)
    print(f"Machine: {meta.get('cpus')} CPUs ({meta.get('cpu')}), Linux {meta.get('kernel')}, "
          f"/dev/kvm {meta.get('kvm')}, load {' '.join(meta.get('load', []))}; commit "
          f"{meta.get('commit')}, {meta.get('date')}.")
    print()
    print("| benchmark | figure | median (min – max) | host baseline: median (min – max) "
          "| ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for (bench, metric), r in figures.items():
        base, ratio = "", ""
        if "baseline" in r:
            b = r["baseline"]
            base = f"{num(b['median'])} ({num(b['min'])} – {num(b['max'])}) — {b['what']}"
        if "ratio" in r:
            ratio = f"{r['ratio']:.2f}"
        print(f"| {bench} | {metric} | {num(r['median'])} ({num(r['min'])} – {num(r['max'])}) "
              f"{r['unit']} | {base} | {ratio} |")
    for n in notes:
        print(f"| {n.get('bench')} | {n.get('metric')}: {n.get('reason', '')[:200]} | | | |")


def fmt_ratio(rec):
    return f"{rec['ratio']:.2f}" if "ratio" in rec else ""


def compare(a_path, b_path):
    _, a, _ = load(a_path)
    _, b, _ = load(b_path)
    print(f"| benchmark | figure | A | B | B / A | vs baseline: A | B | verdict |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for key, ra in a.items():
        rb = b.get(key)
        if rb is None or not ra["median"]:
            continue
        ratio = rb["median"] / ra["median"]
        # Judge on the baseline-normalised figure when both runs have one (noise-resistant).
        judged = ratio
        if "ratio" in ra and "ratio" in rb and ra["ratio"]:
            judged = rb["ratio"] / ra["ratio"]
        better = judged > 1 if ra.get("better") == "higher" else judged < 1
        verdict = "same" if abs(judged - 1) < 0.05 else ("better" if better else "worse")
        print(f"| {key[0]} | {key[1]} | {num(ra['median'])} {ra['unit']} | "
              f"{num(rb['median'])} {rb['unit']} | {ratio:.2f} | "
              f"{fmt_ratio(ra)} | {fmt_ratio(rb)} | "
              f"{verdict} |")
    missing = sorted(set(a) ^ set(b))
    for bench, metric in missing:
        print(f"(only in {'A' if (bench, metric) in a else 'B'}: {bench} / {metric})")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: report.py table A.json | report.py compare A.json B.json")


if __name__ == "__main__":
    main()
