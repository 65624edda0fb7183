#!/usr/bin/env python3
"""Times KVM_SET_USER_MEMORY_REGION of one RAM slot registered before and after the in-kernel
irqchip and PIT, straight on /dev/kvm (no podvisor), to show what the VMM's setup order costs
on this host. Prints per-step milliseconds for each of --runs fresh VMs per order.

Usage: scripts/bench/kvm-slot-order.py [--mib N] [--runs N]
"""
import argparse
import ctypes
import fcntl
import os
import statistics
import struct
import time

KVM_CREATE_VM = 0xAE01
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_CREATE_IRQCHIP = 0xAE60
KVM_CREATE_PIT2 = 0x4040AE77
PROT_RW = 0x3
MAP_PRIVATE_ANON_NORESERVE = 0x02 | 0x20 | 0x4000

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def one_vm(kvm, order, size):
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    addr = libc.mmap(None, size, PROT_RW, MAP_PRIVATE_ANON_NORESERVE, -1, 0)
    steps = {}
    try:
        for step in order:
            t = time.perf_counter()
            if step == "irqchip":
                fcntl.ioctl(vm, KVM_CREATE_IRQCHIP, 0)
            elif step == "pit":
                fcntl.ioctl(vm, KVM_CREATE_PIT2, bytes(64))
            else:
                fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION,
                            struct.pack("IIQQQ", 0, 0, 0, size, addr))
            steps[step] = (time.perf_counter() - t) * 1e3
    finally:
        os.close(vm)
        libc.munmap(addr, size)
    return steps


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=128)
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    kvm = os.open("/dev/kvm", os.O_RDWR)
    for order in (["irqchip", "pit", "memory"], ["memory", "irqchip", "pit"]):
        runs = [one_vm(kvm, order, args.mib << 20) for _ in range(args.runs)]
        cells = []
        for step in order:
            v = [r[step] for r in runs]
            cells.append(f"{step} {statistics.median(v):.2f} ms ({min(v):.2f} – {max(v):.2f})")
        print(f"order {' → '.join(order)}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
