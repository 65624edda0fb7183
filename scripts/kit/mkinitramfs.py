#!/usr/bin/env python3
"""Assemble the guest kit's initramfs: an uncompressed cpio "newc" archive.

Contents: /init (the kit's shell script), /bin/busybox (static), a /dev/console node so the
kernel can give init a console before devtmpfs is mounted, the requested kernel modules with
every module they depend on, and /lib/modules/VERSION/load-order listing them dependencies
first. Dependencies come from each module's own `.modinfo` ELF section (`depends=`), since the
kernel package ships no modules.dep (depmod runs at install time, which the kit never does).
`--binary PATH` adds a dynamically linked host program at its own path together with every
shared library `ldd` names for it (the kit uses Debian's socat, which speaks AF_VSOCK).
The archive is deterministic: entries sorted, timestamps zero.

Usage: mkinitramfs.py --modules-dir DIR --busybox FILE --init FILE [--binary PATH]... --out FILE
       MODULE...
"""

import argparse
import os
import re
import stat
import struct
import subprocess
import sys


class KitError(Exception):
    pass


def modinfo(path: str) -> dict:
    """Read the key=value strings of a module's .modinfo section."""
    with open(path, "rb") as f:
        elf = f.read()
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise KitError(f"{path}: not an ELF64 module")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    sections = []
    for i in range(shnum):
        name, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
        sections.append((name, offset, size))
    strtab_off = sections[shstrndx][1]
    for name, offset, size in sections:
        end = elf.index(b"\x00", strtab_off + name)
        if elf[strtab_off + name:end] == b".modinfo":
            info = {}
            for entry in elf[offset:offset + size].split(b"\x00"):
                key, sep, value = entry.partition(b"=")
                if sep:
                    info.setdefault(key.decode(), value.decode(errors="replace"))
            return info
    raise KitError(f"{path}: no .modinfo section")


def index_modules(modules_dir: str) -> dict:
    """Map module name (dashes as underscores) to its path relative to modules_dir."""
    found = {}
    for root, _, files in os.walk(os.path.join(modules_dir, "kernel")):
        for name in files:
            if name.endswith(".ko"):
                rel = os.path.relpath(os.path.join(root, name), modules_dir)
                found[name[:-3].replace("-", "_")] = rel
    if not found:
        raise KitError(f"no .ko files under {modules_dir}/kernel")
    return found


def load_order(modules_dir: str, wanted: list) -> list:
    """Module paths (relative) in an order where each follows all of its dependencies."""
    index = index_modules(modules_dir)
    order, state = [], {}

    def visit(name: str, chain: tuple) -> None:
        name = name.replace("-", "_")
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise KitError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        if name not in index:
            raise KitError(f"module {name} not found (needed by {' -> '.join(chain) or 'the kit'})")
        state[name] = "visiting"
        deps = modinfo(os.path.join(modules_dir, index[name])).get("depends", "")
        for dep in filter(None, deps.split(",")):
            visit(dep, chain + (name,))
        state[name] = "done"
        order.append(index[name])

    for name in wanted:
        visit(name, ())
    return order


def with_libraries(binary: str) -> list:
    """The binary and the absolute paths of the shared objects it loads (from `ldd`)."""
    if not os.path.isabs(binary):
        raise KitError(f"{binary}: give the program's absolute path")
    try:
        out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise KitError(f"ldd {binary}: {e}") from e
    paths = [binary]
    for line in out.splitlines():
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)", line)
        if m:
            paths.append(m.group(1))
        elif "not found" in line:
            raise KitError(f"{binary}: {line.strip()}")
    return paths


class Cpio:
    """Writer of the SVR4 "newc" format (magic 070701), as the kernel's initramfs unpacker reads it."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.ino = 1

    def entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple = (0, 0)) -> None:
        encoded = name.encode() + b"\x00"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % v for v in fields) + encoded
        self.out += b"\x00" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\x00" * (-len(self.out) % 4)

    def finish(self) -> bytes:
        self.entry("TRAILER!!!", 0)
        self.out += b"\x00" * (-len(self.out) % 512)
        return bytes(self.out)


def build(args: argparse.Namespace) -> tuple:
    version = os.path.basename(os.path.normpath(args.modules_dir))
    order = load_order(args.modules_dir, args.module)
    with open(args.busybox, "rb") as f:
        busybox = f.read()
    with open(args.init, "rb") as f:
        init = f.read()

    dirs = {"bin", "sbin", "dev", "proc", "sys", "tmp", "run", "mnt", "etc", "usr", "usr/bin",
            "usr/sbin", "lib", "lib/modules", f"lib/modules/{version}"}
    extra = sorted({p for b in args.binary for p in with_libraries(b)})
    files = [f"lib/modules/{version}/{rel}" for rel in order] + [p.lstrip("/") for p in extra]
    for rel in files:
        parts = os.path.dirname(rel).split("/")
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))

    cpio = Cpio()
    for d in sorted(dirs):
        cpio.entry(d, stat.S_IFDIR | 0o755)
    cpio.entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    cpio.entry("bin/busybox", stat.S_IFREG | 0o755, busybox)
    cpio.entry("bin/sh", stat.S_IFLNK | 0o777, b"busybox")
    cpio.entry("init", stat.S_IFREG | 0o755, init)
    listing = "".join(f"{rel}\n" for rel in order).encode()
    cpio.entry(f"lib/modules/{version}/load-order", stat.S_IFREG | 0o644, listing)
    for rel in sorted(order):
        with open(os.path.join(args.modules_dir, rel), "rb") as f:
            cpio.entry(f"lib/modules/{version}/{rel}", stat.S_IFREG | 0o644, f.read())
    for path in extra:
        with open(path, "rb") as f:
            cpio.entry(path.lstrip("/"), stat.S_IFREG | 0o755, f.read())
    return cpio.finish(), order


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modules-dir", required=True, help="lib/modules/VERSION of the kernel package")
    p.add_argument("--busybox", required=True)
    p.add_argument("--init", required=True)
    p.add_argument("--binary", action="append", default=[],
                   help="absolute path of a host program to carry with its shared libraries")
    p.add_argument("--out", required=True)
    p.add_argument("module", nargs="+", help="module names to include with their dependencies")
    args = p.parse_args()
    try:
        archive, order = build(args)
    except (KitError, OSError, ValueError, struct.error) as e:
        print(f"mkinitramfs: {e}", file=sys.stderr)
        return 1
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(archive)
    os.replace(tmp, args.out)
    names = " ".join(os.path.basename(r)[:-3] for r in order)
    print(f"mkinitramfs: {args.out}: {len(archive)} bytes, modules: {names}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
