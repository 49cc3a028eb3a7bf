"""Generated names and MACs: recognisably pincus's own and tied to the daemon that made them."""

from __future__ import annotations

import secrets

from pincus.host.checks import IFNAME_MAX_BYTES

# Incus's prefix for generated MACs; unicast and locally administered bits as Incus sets them.
MAC_PREFIX = "10:66:6a"


def random_mac() -> str:
    return MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


RANDOM_HEX = 7  # 28 bits with the daemon's 4-hex tag: 500 NICs collide 1 time in 2000, and callers retry


def _random_len(kind: str, tag: str) -> int:
    return min(RANDOM_HEX, IFNAME_MAX_BYTES - len(kind) - len(tag))


def host_link_name(kind: str, tag: str) -> str:
    """`veth`/`tap` + the daemon's tag + random hex, within 15 bytes."""
    return f"{kind}{tag}{secrets.token_hex(4)[: _random_len(kind, tag)]}"


def owned_by(name: str, tag: str) -> bool:
    return any(
        name.startswith(f"{kind}{tag}") and len(name) == len(kind) + len(tag) + _random_len(kind, tag)
        for kind in ("veth", "tap")
    )
