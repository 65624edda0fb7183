#!/usr/bin/env python3
"""Extract the uncompressed ELF kernel (vmlinux) from an x86 bzImage.

The bzImage setup header (Linux boot protocol >= 2.08) records where the compressed kernel
lies: `payload_offset` (0x248) and `payload_length` (0x24c), relative to the start of the
protected-mode code, which follows the (setup_sects + 1) * 512 bytes of real-mode setup.
The payload's last four bytes hold the uncompressed size (little endian). The payload
format is recognised by its magic; gzip, xz, lzma, bzip2 use the standard library and the
LZ4 legacy format (Debian's choice for its cloud kernel) is decoded here.

After extraction the ELF is checked for a PVH entry point: a PT_NOTE segment holding a
note named "Xen" of type 18 (XEN_ELFNOTE_PHYS32_ENTRY).

Usage: extract-vmlinux.py BZIMAGE OUT_VMLINUX
"""

import bz2
import gzip
import lzma
import os
import struct
import sys

LZ4_LEGACY_MAGIC = 0x184C2102
XEN_ELFNOTE_PHYS32_ENTRY = 18


class ExtractError(Exception):
    pass


def payload_of(image: bytes) -> bytes:
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        raise ExtractError("not a bzImage: no 'HdrS' setup header signature at 0x202")
    version = struct.unpack_from("<H", image, 0x206)[0]
    if version < 0x208:
        raise ExtractError(f"boot protocol {version:#x} predates payload_offset (needs >= 0x208)")
    setup_sects = image[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    end = start + payload_length
    if payload_length < 8 or end > len(image):
        raise ExtractError(f"payload [{start:#x}, {end:#x}) lies outside the {len(image)}-byte file")
    return image[start:end]


def lz4_block(src: bytes, out: bytearray) -> None:
    """Decode one raw LZ4 block, appending to `out` (matches may reach into earlier blocks)."""
    pos = 0
    n = len(src)
    while pos < n:
        token = src[pos]
        pos += 1
        lit = token >> 4
        if lit == 15:
            while True:
                if pos >= n:
                    raise ExtractError("lz4: truncated literal length")
                b = src[pos]
                pos += 1
                lit += b
                if b != 255:
                    break
        if pos + lit > n:
            raise ExtractError("lz4: literals run past the block")
        out += src[pos:pos + lit]
        pos += lit
        if pos >= n:
            return  # the last sequence has literals only
        if pos + 2 > n:
            raise ExtractError("lz4: truncated match offset")
        offset = src[pos] | (src[pos + 1] << 8)
        pos += 2
        if offset == 0 or offset > len(out):
            raise ExtractError(f"lz4: match offset {offset} outside the {len(out)} bytes decoded")
        mlen = token & 15
        if mlen == 15:
            while True:
                if pos >= n:
                    raise ExtractError("lz4: truncated match length")
                b = src[pos]
                pos += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        begin = len(out) - offset
        if offset >= mlen:
            out += out[begin:begin + mlen]
        else:
            pattern = bytes(out[begin:])
            reps, rest = divmod(mlen, offset)
            out += pattern * reps + pattern[:rest]


def lz4_legacy(data: bytes) -> bytes:
    pos = 4  # skip the magic
    out = bytearray()
    while pos + 4 <= len(data):
        size = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        if size == LZ4_LEGACY_MAGIC:
            continue  # concatenated streams repeat the magic
        if pos + size > len(data):
            raise ExtractError(f"lz4: chunk of {size} bytes runs past the payload")
        lz4_block(data[pos:pos + size], out)
        pos += size
    if pos != len(data):
        raise ExtractError("lz4: trailing bytes after the last chunk")
    return bytes(out)


def decompress(payload: bytes) -> bytes:
    body, size = payload[:-4], struct.unpack_from("<I", payload, len(payload) - 4)[0]
    if body[:4] == struct.pack("<I", LZ4_LEGACY_MAGIC):
        out = lz4_legacy(body)
    elif body[:2] == b"\x1f\x8b":
        out = gzip.decompress(body)
    elif body[:6] == b"\xfd7zXZ\x00":
        out = lzma.decompress(body, format=lzma.FORMAT_XZ)
    elif body[:3] == b"BZh":
        out = bz2.decompress(body)
    elif body[:3] == b"\x5d\x00\x00":
        out = lzma.decompress(body, format=lzma.FORMAT_ALONE)
    else:
        raise ExtractError(f"unsupported payload compression (magic {body[:6].hex()})")
    if len(out) != size:
        raise ExtractError(f"decompressed {len(out)} bytes, the payload trailer says {size}")
    return out


def pvh_entry(elf: bytes) -> int:
    """Return the PVH 32-bit entry address from the ELF's Xen notes, or raise."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ExtractError("payload is not a little-endian ELF64 file")
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\x00")
            desc_at = pos + 12 + ((namesz + 3) & ~3)
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                if descsz == 4:
                    return struct.unpack_from("<I", elf, desc_at)[0]
                return struct.unpack_from("<Q", elf, desc_at)[0]
            pos = desc_at + ((descsz + 3) & ~3)
    raise ExtractError("no PVH entry: no Xen ELF note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY)")


def main(argv: list) -> int:
    if len(argv) != 3:
        print("usage: extract-vmlinux.py BZIMAGE OUT_VMLINUX", file=sys.stderr)
        return 2
    src, dst = argv[1], argv[2]
    try:
        with open(src, "rb") as f:
            image = f.read()
        elf = decompress(payload_of(image))
        entry = pvh_entry(elf)
    except (ExtractError, OSError, lzma.LZMAError, EOFError) as e:
        print(f"extract-vmlinux: {src}: {e}", file=sys.stderr)
        return 1
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(elf)
    os.replace(tmp, dst)
    print(f"extract-vmlinux: {dst}: {len(elf)} bytes, PVH entry {entry:#x}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
