"""The BPF program behind `limits.priority`: it sets skb->priority, loaded with bpf(2).

tc.py attaches it in a cls_bpf filter on a NIC's host-side ingress. Four instructions: store
the priority and answer "no match", so the filter after it (redirect or police) still sees every
packet. BPF rather than tc's `skbedit` action because the kernel this project runs on has no
skbedit, while cls_bpf and bpf(2) are in every distribution kernel.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

from pincus.errors import HostError, UnsupportedError

_BPF_PROG_LOAD = 5
_BPF_PROG_TYPE_SCHED_CLS = 3
_BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "riscv64": 280}
_SKB_PRIORITY_OFFSET = 32  # offsetof(struct __sk_buff, priority), part of the stable BPF ABI

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _priority_program(priority: int) -> bytes:
    """r2 = priority; skb->priority = r2; return 0 ("no match": the next filter runs)."""
    imm = priority - 2**32 if priority >= 2**31 else priority  # the u32 as the s32 immediate
    return b"".join(
        (
            _insn(0xB4, dst=2, imm=imm),  # BPF_ALU | BPF_MOV | BPF_K (32 bit)
            # BPF_STX | BPF_MEM | BPF_W: a register store, as older kernels refuse BPF_ST to the context
            _insn(0x63, dst=1, src=2, off=_SKB_PRIORITY_OFFSET),
            _insn(0xB7, dst=0, imm=0),  # BPF_ALU64 | BPF_MOV | BPF_K
            _insn(0x95),  # BPF_JMP | BPF_EXIT
        )
    )


def load_priority_program(priority: int) -> int:
    """Load the priority program with bpf(2); returns its fd."""
    nr = _BPF_SYSCALL.get(platform.machine())
    if nr is None:
        raise UnsupportedError(
            f"setting packet priority with BPF on {platform.machine()} is not supported by pincus"
        )
    code = _priority_program(priority)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"GPL")
    # union bpf_attr, BPF_PROG_LOAD part up to expected_attach_type; the kernel zero-fills the rest
    attr = struct.pack(
        "<IIQQIIQII16sII",
        _BPF_PROG_TYPE_SCHED_CLS,
        len(code) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license_),
        0,
        0,
        0,
        0,
        0,
        b"pincus_prio",
        0,
        0,
    )
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = int(_libc.syscall(nr, _BPF_PROG_LOAD, buf, len(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL):
            raise UnsupportedError(
                "BPF tc classifier programs (for packet priority) are not supported by this kernel"
            )
        raise HostError(f"load BPF priority program: {os.strerror(err)}")
    return fd
