"""Host side of id mapping: /etc/subuid and /etc/subgid, a user namespace's maps, shifting a
tree's owners by chown, idmapped mounts.

A map is a list of IdRange; the file formats are shadow's (`name:start:count`). The paths are
parameters so tests never touch the real files.
"""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
import sys
from pathlib import Path

from pincus.errors import HostError
from pincus.idmaps import IdMap, IdRange, proc_map_lines

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
# What Incus suggests when root has no range: far above any distribution's own users.
DEFAULT_ROOT_RANGE = (1_000_000, 1_000_000_000)


def write_proc_maps(pid: int, idmap: IdMap) -> None:
    """Map pid's user namespace (written by host root: setgroups stays allowed inside)."""
    for name, uid in (("uid_map", True), ("gid_map", False)):
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(proc_map_lines(idmap, uid))
        except OSError as e:
            raise HostError(f"write /proc/{pid}/{name}: {e.strerror}") from e


def read_ranges(path: Path, user: str) -> list[tuple[int, int]]:
    """USER's (start, count) ranges in a subuid/subgid file, in file order; none if it is absent."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HostError(f"read {path}: {e.strerror}") from e
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] != user:
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            out.append((start, count))
    return out


def root_ranges(subuid: Path = SUBUID, subgid: Path = SUBGID) -> tuple[tuple[int, int], tuple[int, int]]:
    """root's first uid and gid ranges; when root has none in a file, DEFAULT_ROOT_RANGE is appended
    to it (as Incus asks admins to do)."""
    found = []
    for path in (subuid, subgid):
        ranges = read_ranges(path, "root")
        if not ranges:
            start, count = DEFAULT_ROOT_RANGE
            try:
                with open(path, "a") as f:
                    f.write(f"root:{start}:{count}\n")
            except OSError as e:
                raise HostError(f"add a range for root to {path}: {e.strerror}") from e
            ranges = [DEFAULT_ROOT_RANGE]
        found.append(ranges[0])
    return found[0], found[1]


def _shift_id(value: int, old: IdMap, new: IdMap, uid: bool) -> int:
    """The host id VALUE of a file shifted from map OLD to map NEW ("()" = not shifted).

    An id already where NEW puts ids, and not one OLD explains, is left as it is: a shift that
    was cut short (a crash) is finished by running it again."""
    ranges_old = [r for r in old if (r.uid if uid else r.gid)]
    ranges_new = [r for r in new if (r.uid if uid else r.gid)]
    in_old = next((n for r in ranges_old if (n := r.to_ns(value)) is not None), None)
    if in_old is None and (ranges_old or any(r.to_ns(value) is not None for r in ranges_new)):
        return value  # not from the old map (made on the host since, or shifted already)
    nsid = value if in_old is None else in_old
    if not ranges_new:
        return nsid
    host = next((h for r in ranges_new if (h := r.to_host(nsid)) is not None), None)
    if host is None:
        raise HostError(f"{'uid' if uid else 'gid'} {nsid} is outside the container's id map")
    return host


def shift_tree(root: Path, old: IdMap, new: IdMap) -> int:
    """Change every owner below ROOT (ROOT too) from map OLD to map NEW; the number of entries.

    Every new owner is worked out before any is changed, so an id NEW cannot map changes
    nothing. Symlinks are changed themselves (lchown), never followed; a hard-linked inode
    once; setuid and setgid bits, which chown clears, are put back. Mount points below ROOT
    are not crossed.
    """
    if old == new:
        return 0
    try:
        top = os.lstat(root)
    except OSError as e:
        raise HostError(f"shift ids of {root}: {e.strerror}") from e
    seen: set[int] = set()
    todo: list[tuple[str, os.stat_result, int, int]] = []
    stack = [str(root)]
    _plan(str(root), top, old, new, todo)
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as e:
            raise HostError(f"shift ids of {directory}: {e.strerror}") from e
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                raise HostError(f"shift ids of {entry.path}: {e.strerror}") from e
            if st.st_dev != top.st_dev:
                continue
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            _plan(entry.path, st, old, new, todo)
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    for path, st, uid, gid in todo:
        _shift_one(path, st, uid, gid)
    return len(todo)


def _plan(
    path: str, st: os.stat_result, old: IdMap, new: IdMap, todo: list[tuple[str, os.stat_result, int, int]]
) -> None:
    try:
        uid = _shift_id(st.st_uid, old, new, True)
        gid = _shift_id(st.st_gid, old, new, False)
    except HostError as e:
        raise HostError(f"shift ids of {path}: {e}") from None
    todo.append((path, st, uid, gid))


def _shift_one(path: str, st: os.stat_result, uid: int, gid: int) -> None:
    if (uid, gid) == (st.st_uid, st.st_gid):
        return
    try:
        os.lchown(path, uid, gid)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode))
    except OSError as e:
        raise HostError(f"chown {path}: {e.strerror}") from e


# --- idmapped mounts ------------------------------------------------------------------------------

# x86_64 syscall numbers and flags of the new mount API.
_SYS_OPEN_TREE = 428
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 0x1
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_MOUNT_ATTR_IDMAP = 0x100000
# Set to "off" in pincusd's environment to use the chown shift even where idmapped mounts work
# (tests of the fallback; a filesystem that misbehaves with them).
IDMAPPED_ENV = "PINCUS_IDMAPPED_MOUNTS"

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def idmapped_tree(path: Path, userns_pid: int) -> int:
    """A detached copy of the mount at PATH whose ids go through the user namespace of
    USERNS_PID (host id = that namespace's map of the id on disk); its fd, close-on-exec."""
    fd = _libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(path), _OPEN_TREE_CLONE | os.O_CLOEXEC)
    if fd < 0:
        raise HostError(f"clone the mount of {path}: {os.strerror(ctypes.get_errno())}")
    try:
        userns = os.open(f"/proc/{userns_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        os.close(fd)
        raise HostError(f"open the user namespace of pid {userns_pid}: {e.strerror}") from e
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns)
        rc = _libc.syscall(
            _SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)
        )
        if rc < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise HostError(f"idmapped mount of {path}: {os.strerror(err)}")
    finally:
        os.close(userns)
    return int(fd)


_support: dict[int, bool] = {}


def supports_idmapped_mounts(path: Path) -> bool:
    """Whether the kernel and PATH's filesystem take an idmapped mount (probed once per
    filesystem with a throw-away user namespace); False when the environment turns them off."""
    if os.environ.get(IDMAPPED_ENV, "").lower() in ("off", "0", "false", "no"):
        return False
    try:
        dev = os.stat(path).st_dev
    except OSError as e:
        raise HostError(f"stat {path}: {e.strerror}") from e
    if dev not in _support:
        _support[dev] = _probe(path)
    return _support[dev]


def _probe(path: Path) -> bool:
    # "u" once in a user namespace of its own; "n" when the kernel gives none (a chroot), which
    # the container's start then reports in words.
    code = (
        "import ctypes,os;ok=ctypes.CDLL(None).unshare(0x10000000)==0;"
        "os.write(1,b'u' if ok else b'n');os.read(0,1)"
    )
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        if child.stdout.read(1) != b"u":
            return False
        write_proc_maps(child.pid, (IdRange(True, True, DEFAULT_ROOT_RANGE[0], 0, 1),))
        try:
            os.close(idmapped_tree(path, child.pid))
        except HostError:
            return False
        return True
    finally:
        child.kill()
        child.wait()
