"""Mounts of the daemon's storage pools: mount(2), umount2(2) and the kernel's own list of mounts."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from pincus.errors import HostError

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_points() -> list[Path]:
    """Every mount point of this mount namespace, as /proc/self/mountinfo lists them."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError as e:
        raise HostError(f"read /proc/self/mountinfo: {e.strerror or e}") from e
    return [Path(_unescape(line.split()[4])) for line in text.splitlines() if line]


def is_mount_point(path: Path) -> bool:
    return path in mount_points()


def mount(source: str, target: Path, fstype: str, data: str = "") -> None:
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), 0, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise HostError(f"mount {source} ({fstype}) on {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Unmount TARGET; one that is not mounted is fine."""
    if not is_mount_point(target):
        return
    if _libc.umount2(str(target).encode(), 0) != 0:
        err = ctypes.get_errno()
        raise HostError(f"unmount {target}: {os.strerror(err)}")
