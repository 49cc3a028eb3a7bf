"""Id maps as values: which container ids are which host ids, and their Incus JSON form (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pincus.errors import InvalidError


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


def root_owner(idmap: IdMap) -> tuple[int, int] | None:
    """The host uid and gid of the container's root; None when either is unmapped (privileged)."""
    uid = next((h for r in idmap if r.uid and (h := r.to_host(0)) is not None), None)
    gid = next((h for r in idmap if r.gid and (h := r.to_host(0)) is not None), None)
    return None if uid is None or gid is None else (uid, gid)


def proc_map_lines(idmap: IdMap, uid: bool) -> str:
    """The text for /proc/<pid>/uid_map (uid=True) or gid_map."""
    return "".join(f"{r.nsid} {r.hostid} {r.size}\n" for r in idmap if (r.uid if uid else r.gid))
