"""Which host ids a container's user namespace maps to (pure: no host access).

Default: root's first subuid/subgid range, 65536 ids, shared by every non-isolated container
(as Incus). security.idmap.isolated=true: a block of its own per instance, kept in
volatile.idmap.base across restarts; security.idmap.base/size choose it by hand. A block that
overlaps another instance's own block is refused. security.privileged=true: no user namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pincus.errors import InvalidError
from pincus.idmaps import IdMap, IdRange

DEFAULT_SIZE = 65536


@dataclass(frozen=True)
class Block:
    """Host ids base..base+size-1 owned by one instance (for the overlap check)."""

    owner: str
    base: int
    size: int

    def overlaps(self, base: int, size: int) -> bool:
        return base < self.base + self.size and self.base < base + size


def is_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes", "on")


def own_block(name: str, config: Mapping[str, str], volatile: Mapping[str, str]) -> Block | None:
    """The block instance NAME holds alone (isolated or with an explicit base), if it has one."""
    if is_true(config.get("security.privileged")):
        return None
    size = int(config.get("security.idmap.size") or DEFAULT_SIZE)
    if config.get("security.idmap.base"):
        return Block(name, int(config["security.idmap.base"]), size)
    if is_true(config.get("security.idmap.isolated")) and volatile.get("volatile.idmap.base"):
        return Block(name, int(volatile["volatile.idmap.base"]), size)
    return None


def allocate(
    name: str,
    config: Mapping[str, str],
    volatile: Mapping[str, str],
    uid_range: tuple[int, int],
    gid_range: tuple[int, int],
    others: list[Block],
) -> IdMap:
    """The id map instance NAME starts with (() = privileged). UID_RANGE/GID_RANGE: root's
    (start, count) from /etc/subuid and /etc/subgid; OTHERS: every other instance's own block."""
    if is_true(config.get("security.privileged")):
        return ()
    size = int(config.get("security.idmap.size") or DEFAULT_SIZE)
    start = max(uid_range[0], gid_range[0])
    end = min(uid_range[0] + uid_range[1], gid_range[0] + gid_range[1])
    if size > end - start:
        raise InvalidError(
            f"security.idmap.size {size} is larger than root's id range in /etc/subuid and /etc/subgid "
            f"({end - start} ids from {start})"
        )
    isolated = is_true(config.get("security.idmap.isolated"))
    if config.get("security.idmap.base"):
        base = int(config["security.idmap.base"])
    elif isolated:
        base = _free_block(name, volatile, start, end, size, others)
    else:
        return _map(start, size)  # shared by all non-isolated containers
    if base < start or base + size > end:
        raise InvalidError(
            f"Id range {base}-{base + size - 1} of instance {name!r} is outside root's id range "
            f"{start}-{end - 1} in /etc/subuid and /etc/subgid"
        )
    for other in others:
        if other.owner != name and other.overlaps(base, size):
            raise InvalidError(
                f"Id range {base}-{base + size - 1} of instance {name!r} overlaps instance "
                f"{other.owner!r}'s range {other.base}-{other.base + other.size - 1}"
            )
    return _map(base, size)


def _free_block(
    name: str, volatile: Mapping[str, str], start: int, end: int, size: int, others: list[Block]
) -> int:
    """The instance's recorded block, or the lowest free one above the shared default block."""
    if volatile.get("volatile.idmap.base"):
        return int(volatile["volatile.idmap.base"])
    base = start + DEFAULT_SIZE
    while base + size <= end:
        clash = [o for o in others if o.owner != name and o.overlaps(base, size)]
        if not clash:
            return base
        base = max(o.base + o.size for o in clash)
    raise InvalidError(
        f"No free id range of {size} ids left for instance {name!r} in root's subuid/subgid range"
    )


def _map(base: int, size: int) -> IdMap:
    return (IdRange(True, False, base, 0, size), IdRange(False, True, base, 0, size))
