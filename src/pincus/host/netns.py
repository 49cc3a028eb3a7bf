"""Network namespace handles: a bind mount of a process's netns onto a file.

The handle keeps the namespace alive independently of the processes in it, so NICs can be
moved into it (``ip link set dev X netns <path>`` accepts a path) and recovered from it
after the container's init has died.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from pincus.errors import HostError

_MS_BIND = 0x1000
_MNT_DETACH = 0x2
# A handle can be bound more than once on the same file; unmount each layer, but never loop forever.
_MAX_LAYERS = 16

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _nsfs_device() -> int:
    # nsfs has a single superblock: every namespace file, bound or not, lives on this device.
    return os.stat("/proc/self/ns/net").st_dev


def netns_is_bound(path: Path) -> bool:
    """Whether a namespace file is bind-mounted at path."""
    try:
        return os.stat(path).st_dev == _nsfs_device()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise HostError(f"inspect netns handle {path}: {e.strerror}") from e


def bind_netns(pid: int, path: Path) -> None:
    """Bind-mount /proc/<pid>/ns/net at path; path's parent directory must exist."""
    if netns_is_bound(path):
        raise HostError(f"bind netns of pid {pid} at {path}: already bound")
    created = False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.close(fd)
        created = True
    except FileExistsError:
        pass  # a left-over empty file from an earlier handle is a fine mount point
    except OSError as e:
        raise HostError(f"bind netns of pid {pid} at {path}: {e.strerror}") from e
    source = f"/proc/{pid}/ns/net".encode()
    if _libc.mount(source, os.fsencode(path), None, _MS_BIND, None) != 0:
        err = ctypes.get_errno()
        if created:
            path.unlink(missing_ok=True)
        raise HostError(f"bind netns of pid {pid} at {path}: {os.strerror(err)}")


def release_netns(path: Path) -> None:
    """Unmount the handle at path and remove the file; a missing handle is fine."""
    target = os.fsencode(path)
    for _ in range(_MAX_LAYERS):
        if not netns_is_bound(path):
            break
        # Detach: an open fd on the handle (ip, pyroute2) must not make release fail.
        if _libc.umount2(target, _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                break
            raise HostError(f"release netns handle {path}: {os.strerror(err)}")
    else:
        raise HostError(f"release netns handle {path}: still bound after {_MAX_LAYERS} unmounts")
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise HostError(f"release netns handle {path}: {e.strerror}") from e
