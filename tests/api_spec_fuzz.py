#!/usr/bin/env python3
"""Spec-driven requests against a running podvisor API socket.

Reads docs/api.yaml, and for every operation sends a bounded number of generated requests:
bodies built from the operation's schema (random subsets of properties, values of the right
type, enum members), the same with wrong types and nulls, raw garbage, and random query
parameters. Every request must be answered (no hang) with a status the spec documents for that
operation (or a generic HTTP error: 400, 404, 405, 408, 413), with a JSON body whenever there
is a body. A 5xx is accepted only where the spec documents it for that operation (Cloud
Hypervisor answers failed actions with 500, unbuilt features with 501); a 5xx in answer to a
body that does not match the schema is a failure, since bad input must be a 4xx.

`vmm.shutdown` is sent last, once, and must be answered with 204.
Exit status 0 if everything held; 1 with a list of failures otherwise.
"""

import argparse
import json
import random
import socket
import sys
import time

import yaml

GENERIC = {400, 404, 405, 408, 413}
TIMEOUT_S = 30


def request(sock_path, method, path, body=b""):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT_S)
    s.connect(sock_path)
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"
    s.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head[9:12])
    return status, rest


class Gen:
    def __init__(self, spec, rng):
        self.spec = spec
        self.rng = rng

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            target = self.spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node

    def value(self, schema, depth=0):
        schema = self.resolve(schema or {})
        if "allOf" in schema:
            return self.value(schema["allOf"][0], depth)
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        kind = schema.get("type", "object")
        r = self.rng
        if kind == "object":
            out = {}
            props = schema.get("properties", {})
            for name, sub in props.items():
                if name in schema.get("required", []) or r.random() < 0.5:
                    out[name] = self.value(sub, depth + 1) if depth < 4 else None
            if schema.get("additionalProperties") and r.random() < 0.3:
                out["extra"] = r.choice([1, "x", True])
            return out
        if kind == "array":
            return [self.value(schema.get("items"), depth + 1) for _ in range(r.randint(0, 2))]
        if kind == "integer":
            return r.choice([0, 1, 2, 7, 4096, 1 << 27, 1 << 40, 2**63 - 1, 2**64 + 5, -3])
        if kind == "boolean":
            return r.random() < 0.5
        if kind == "string":
            return r.choice(["", "x", "/", "/nonexistent", "a" * 300, "pod-1", "é\u0000"])
        return None

    def mutate(self, value):
        """Wrong types, nulls and junk somewhere in `value`."""
        r = self.rng
        junk = r.choice([None, "str", -1, 1.5, [], {}, True, "\ud7ff" * 3])
        if isinstance(value, dict) and value and r.random() < 0.8:
            key = r.choice(list(value))
            value = dict(value)
            value[key] = self.mutate(value[key]) if r.random() < 0.5 else junk
            return value
        return junk


def operations(spec):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def documented(op):
    return {int(code) for code in op.get("responses", {})}


def body_schema(op):
    content = op.get("requestBody", {}).get("content", {})
    return content.get("application/json", {}).get("schema")


def query(gen, op):
    parts = []
    for p in op.get("parameters", []):
        p = gen.resolve(p)
        value = gen.rng.choice(["0", "1", "50", "abc", "-1", "99999999999999999999999"])
        if p["name"] == "timeout_ms" and value not in ("abc", "-1"):
            value = str(gen.rng.randint(0, 200))
        if gen.rng.random() < 0.7:
            parts.append(f"{p['name']}={value}")
    return ("?" + "&".join(parts)) if parts else ""


def check(failures, label, op, status, body, bad_input):
    allowed = documented(op) | GENERIC
    if status not in allowed:
        failures.append(f"{label}: status {status} not documented ({sorted(allowed)})")
    if status >= 500 and bad_input:
        failures.append(f"{label}: {status} for a body that does not match the schema")
    if body:
        try:
            json.loads(body)
        except ValueError:
            failures.append(f"{label}: body is not JSON: {body[:80]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--examples", type=int, default=25)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    spec = yaml.safe_load(open(args.spec))
    gen = Gen(spec, random.Random(args.seed))
    failures, counts, sent = [], {}, 0
    shutdown = None
    for method, path, op in operations(spec):
        if path == "/vmm.shutdown":
            shutdown = (method, path, op)
            continue
        schema = body_schema(op)
        for i in range(args.examples):
            bad_input = False
            if schema is None:
                body = gen.rng.choice([b"", b"{}", b"garbage"])
                bad_input = None  # a body the endpoint ignores proves nothing either way
            elif i % 5 == 4:
                body, bad_input = gen.rng.choice([b"{", b"\xff\xfe", b"[]", b"null", b"7"]), True
            elif i % 2 == 1:
                body, bad_input = json.dumps(gen.mutate(gen.value(schema))).encode(), None
            else:
                body = json.dumps(gen.value(schema)).encode()
            target = "/api/v1" + path + query(gen, op)
            label = f"{method} {target} {body[:60]!r}"
            started = time.monotonic()
            try:
                status, answer = request(args.socket, method, target, body)
            except OSError as e:
                failures.append(f"{label}: no answer within {TIMEOUT_S}s ({e})")
                continue
            sent += 1
            counts[status] = counts.get(status, 0) + 1
            if time.monotonic() - started > TIMEOUT_S:
                failures.append(f"{label}: took {time.monotonic() - started:.1f}s")
            check(failures, label, op, status, answer, bool(bad_input))
    if shutdown:
        method, path, op = shutdown
        status, _ = request(args.socket, method, "/api/v1" + path)
        sent += 1
        if status != 204:
            failures.append(f"vmm.shutdown answered {status}")
    print(f"sent {sent} requests; statuses {dict(sorted(counts.items()))}")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
