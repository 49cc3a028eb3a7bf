"""btrfs: a file system made in a file (mkfs.btrfs, forked), and subvolumes made, snapshotted and
destroyed with the kernel's own ioctls (no fork per instance)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
from pathlib import Path

from pincus.errors import HostError

_MAGIC = 0x94


def _iow(nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (_MAGIC << 8) | nr


# struct btrfs_ioctl_vol_args: s64 fd, char name[4088].
_VOL_ARGS = struct.Struct("=q4088s")
# struct btrfs_ioctl_vol_args_v2: s64 fd, u64 transid, u64 flags, 32 bytes of union, char name[4040].
_VOL_ARGS_V2 = struct.Struct("=qQQ32x4040s")
_SUBVOL_CREATE = _iow(14, _VOL_ARGS.size)
_SNAP_DESTROY = _iow(15, _VOL_ARGS.size)
_SNAP_CREATE_V2 = _iow(23, _VOL_ARGS_V2.size)
_SUBVOL_RDONLY = 1 << 1
# Every subvolume's root directory has this inode number (BTRFS_FIRST_FREE_OBJECTID).
_SUBVOL_INODE = 256


def mkfs(path: Path, label: str) -> None:
    """Make a btrfs file system in file PATH (which holds its size)."""
    try:
        r = subprocess.run(
            ["mkfs.btrfs", "-q", "-f", "-L", label, str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except FileNotFoundError:
        raise HostError("mkfs.btrfs not found: install Debian's btrfs-progs") from None
    except subprocess.TimeoutExpired:
        raise HostError(f"mkfs.btrfs {path}: timed out") from None
    if r.returncode != 0:
        raise HostError(f"mkfs.btrfs {path}: {(r.stderr or r.stdout).strip()}")


def _name(path: Path) -> bytes:
    name = path.name.encode()
    if not name or b"/" in name or name in (b".", b".."):
        raise HostError(f"invalid subvolume name in {path}")
    return name


def _in_parent(path: Path, request: int, args: bytes, what: str) -> None:
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise HostError(f"{what} {path}: {e.strerror or e}") from e
    try:
        # A mutable buffer: fcntl refuses immutable arguments over 1024 bytes.
        fcntl.ioctl(parent, request, bytearray(args))
    except OSError as e:
        if e.errno == errno.ENOTTY:
            raise HostError(f"{what} {path}: {path.parent} is not on a btrfs file system") from e
        raise HostError(f"{what} {path}: {e.strerror or e}") from e
    finally:
        os.close(parent)


def create_subvolume(path: Path) -> None:
    _in_parent(path, _SUBVOL_CREATE, _VOL_ARGS.pack(0, _name(path)), "create subvolume")


def snapshot(source: Path, path: Path, readonly: bool = False) -> None:
    """PATH becomes a snapshot of subvolume SOURCE: the same data, shared until either changes."""
    try:
        src = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise HostError(f"snapshot {source}: {e.strerror or e}") from e
    try:
        args = _VOL_ARGS_V2.pack(src, 0, _SUBVOL_RDONLY if readonly else 0, _name(path))
        _in_parent(path, _SNAP_CREATE_V2, args, f"snapshot {source} as")
    finally:
        os.close(src)


def delete_subvolume(path: Path) -> None:
    """Destroy subvolume PATH and all it holds; a missing one is fine."""
    if not path.exists():
        return
    _in_parent(path, _SNAP_DESTROY, _VOL_ARGS.pack(0, _name(path)), "delete subvolume")


def is_subvolume(path: Path) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_ino == _SUBVOL_INODE
    except OSError:
        return False


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (_MAGIC << 8) | nr


def _ior(nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (_MAGIC << 8) | nr


# struct btrfs_ioctl_quota_ctl_args: u64 cmd, u64 status.
_QUOTA_CTL_ARGS = struct.Struct("=QQ")
_QUOTA_CTL = _iowr(40, _QUOTA_CTL_ARGS.size)
_QUOTA_CTL_ENABLE = 1
# struct btrfs_ioctl_qgroup_limit_args: u64 qgroupid, then btrfs_qgroup_limit: u64 flags,
# max_rfer, max_excl, rsv_rfer, rsv_excl.
_QGROUP_LIMIT_ARGS = struct.Struct("=QQQQQQ")
_QGROUP_LIMIT = _ior(43, _QGROUP_LIMIT_ARGS.size)
_LIMIT_MAX_RFER = 1 << 0


def _ioctl_on(path: Path, request: int, args: bytes, what: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise HostError(f"{what} {path}: {e.strerror or e}") from e
    try:
        fcntl.ioctl(fd, request, bytearray(args))
    except OSError as e:
        raise HostError(f"{what} {path}: {e.strerror or e}") from e
    finally:
        os.close(fd)


def enable_quota(mount_point: Path) -> None:
    """Turn on quota groups on the file system at MOUNT_POINT (needed before any limit)."""
    _ioctl_on(mount_point, _QUOTA_CTL, _QUOTA_CTL_ARGS.pack(_QUOTA_CTL_ENABLE, 0), "enable quota on")


def limit_subvolume(path: Path, max_bytes: int) -> None:
    """Limit the data subvolume PATH refers to (its own and what it shares) to MAX_BYTES."""
    args = _QGROUP_LIMIT_ARGS.pack(0, _LIMIT_MAX_RFER, max_bytes, 0, 0, 0)
    _ioctl_on(path, _QGROUP_LIMIT, args, "limit the size of subvolume")
