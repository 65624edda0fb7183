#!/usr/bin/env python3
"""Checks the workspace crate graph in `cargo metadata --no-deps` JSON (read from stdin).

Rules (any dependency kind counts unless noted):
  devices, snp   never depend on vmm, api-server, podvisor, or each other;
  vmm            never depends on api-server or podvisor;
  api-server     never depends on podvisor; should depend on vmm (warning while it does not);
  podvisor-tests is only ever a dev-dependency, and never depends on podvisor.
Prints the internal edges; exits 1 listing every violation.

`crate_graph.py --self-test` checks the checker on synthetic graphs.
"""

import json
import sys

FORBIDDEN = {
    "devices": {"vmm", "snp", "api-server", "podvisor"},
    "snp": {"vmm", "devices", "api-server", "podvisor"},
    "vmm": {"api-server", "podvisor"},
    "api-server": {"podvisor"},
    "podvisor-tests": {"podvisor"},
}
EXPECTED = {"api-server": {"vmm"}}


def check(meta: dict) -> tuple:
    """Returns (edges, errors, warnings) for a metadata document."""
    members = {p["name"]: p for p in meta["packages"]}
    edges, errors, warnings = [], [], []
    for name in FORBIDDEN:
        if name not in members:
            errors.append(f"workspace member {name} not found")
    for name, pkg in sorted(members.items()):
        deps = [(d["name"], d.get("kind") or "normal")
                for d in pkg["dependencies"] if d["name"] in members]
        for dep, kind in deps:
            edges.append(f"{name} -> {dep}" + ("" if kind == "normal" else f" ({kind})"))
            if dep in FORBIDDEN.get(name, set()):
                errors.append(f"{name} must not depend on {dep} (found a {kind} dependency)")
            if dep == "podvisor-tests" and kind != "dev":
                errors.append(f"{name} uses the test fixture as a {kind} dependency (only dev allowed)")
        for dep in EXPECTED.get(name, set()):
            if all(d != dep for d, _ in deps):
                warnings.append(f"{name} does not depend on {dep} yet")
    return edges, errors, warnings


def graph(edges: dict) -> dict:
    """A minimal metadata document: {crate: [(dep, kind), ...]}."""
    names = set(FORBIDDEN) | {"podvisor"}
    return {"packages": [
        {"name": n, "dependencies": [{"name": d, "kind": k} for d, k in edges.get(n, [])]}
        for n in sorted(names)]}


def self_test() -> int:
    good = {"podvisor": [("api-server", None), ("vmm", None), ("podvisor-tests", "dev")],
            "api-server": [("vmm", None)], "vmm": [("devices", None), ("snp", None)]}
    cases = [
        ("the intended graph", good, 0),
        ("devices -> vmm", {**good, "devices": [("vmm", None)]}, 1),
        ("snp -> devices (dev)", {**good, "snp": [("devices", "dev")]}, 1),
        ("vmm -> api-server", {**good, "vmm": [("api-server", None)]}, 1),
        ("vmm -> fixture (normal)", {**good, "vmm": [("podvisor-tests", None)]}, 1),
    ]
    failed = 0
    for what, edges, want in cases:
        _, errors, _ = check(graph(edges))
        if (1 if errors else 0) != want:
            print(f"crate_graph self-test: {what}: expected {'a violation' if want else 'no violation'},"
                  f" got {errors}", file=sys.stderr)
            failed += 1
    _, errors, _ = check({"packages": []})
    if not errors:
        print("crate_graph self-test: an empty workspace passed", file=sys.stderr)
        failed += 1
    return 1 if failed else 0


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    edges, errors, warnings = check(json.load(sys.stdin))
    for e in edges:
        print(f"check-deps: {e}")
    for w in warnings:
        print(f"check-deps: warning: {w}", file=sys.stderr)
    for e in errors:
        print(f"check-deps: error: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"check-deps: ok ({len(edges)} internal edges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
