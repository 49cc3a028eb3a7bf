"""Host side of id mapping: /etc/subuid and /etc/subgid, and shifting a tree's owners by chown.

A map is a list of IdRange; the file formats are shadow's (`name:start:count`). The paths are
parameters so tests never touch the real files.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pincus.errors import HostError, InvalidError

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
# What Incus suggests when root has no range: far above any distribution's own users.
DEFAULT_ROOT_RANGE = (1_000_000, 1_000_000_000)


@dataclass(frozen=True)
class IdRange:
    """Ids nsid..nsid+size-1 of the container are host ids hostid..hostid+size-1."""

    uid: bool
    gid: bool
    hostid: int
    nsid: int
    size: int

    def to_host(self, nsid: int) -> int | None:
        return self.hostid + nsid - self.nsid if self.nsid <= nsid < self.nsid + self.size else None

    def to_ns(self, hostid: int) -> int | None:
        return self.nsid + hostid - self.hostid if self.hostid <= hostid < self.hostid + self.size else None


IdMap = tuple[IdRange, ...]


def to_json(idmap: IdMap) -> str:
    """Incus's volatile.idmap.* / volatile.last_state.idmap form."""
    return json.dumps(
        [
            {"Isuid": r.uid, "Isgid": r.gid, "Hostid": r.hostid, "Nsid": r.nsid, "Maprange": r.size}
            for r in idmap
        ],
        separators=(",", ":"),
    )


def from_json(text: str) -> IdMap:
    try:
        return tuple(
            IdRange(bool(e["Isuid"]), bool(e["Isgid"]), int(e["Hostid"]), int(e["Nsid"]), int(e["Maprange"]))
            for e in json.loads(text or "[]")
        )
    except (ValueError, TypeError, KeyError) as e:
        raise InvalidError(f"Invalid id map {text!r}: {e}") from None


def proc_map_lines(idmap: IdMap, uid: bool) -> str:
    """The text for /proc/<pid>/uid_map (uid=True) or gid_map."""
    return "".join(f"{r.nsid} {r.hostid} {r.size}\n" for r in idmap if (r.uid if uid else r.gid))


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
    """The host id VALUE of a file shifted from map OLD to map NEW ("()" = not shifted)."""
    ranges_old = [r for r in old if (r.uid if uid else r.gid)]
    ranges_new = [r for r in new if (r.uid if uid else r.gid)]
    nsid = value
    if ranges_old:
        found = next((n for r in ranges_old if (n := r.to_ns(value)) is not None), None)
        if found is None:
            return value  # not from the old map (a file made on the host since): left as it is
        nsid = found
    if not ranges_new:
        return nsid
    host = next((h for r in ranges_new if (h := r.to_host(nsid)) is not None), None)
    if host is None:
        raise HostError(f"{'uid' if uid else 'gid'} {nsid} is outside the container's id map")
    return host


def shift_tree(root: Path, old: IdMap, new: IdMap) -> int:
    """Change every owner below ROOT (ROOT too) from map OLD to map NEW; the number of entries.

    Symlinks are changed themselves (lchown), never followed; a hard-linked inode once; setuid
    and setgid bits, which chown clears, are put back. Mount points below ROOT are not crossed.
    """
    if old == new:
        return 0
    try:
        top = os.lstat(root)
    except OSError as e:
        raise HostError(f"shift ids of {root}: {e.strerror}") from e
    seen: set[int] = set()
    count = 0
    stack = [str(root)]
    _shift_one(str(root), top, old, new)
    count += 1
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
            try:
                _shift_one(entry.path, st, old, new)
            except HostError as e:
                raise HostError(f"shift ids of {entry.path}: {e}") from None
            count += 1
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    return count


def _shift_one(path: str, st: os.stat_result, old: IdMap, new: IdMap) -> None:
    uid = _shift_id(st.st_uid, old, new, True)
    gid = _shift_id(st.st_gid, old, new, False)
    if (uid, gid) == (st.st_uid, st.st_gid):
        return
    try:
        os.lchown(path, uid, gid)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode))
    except OSError as e:
        raise HostError(f"chown {path}: {e.strerror}") from e
