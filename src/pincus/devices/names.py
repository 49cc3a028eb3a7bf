"""Generated names and MACs: recognisably pincus's own and tied to the daemon that made them."""

from __future__ import annotations

import secrets

# Incus's prefix for generated MACs; unicast and locally administered bits as Incus sets them.
MAC_PREFIX = "10:66:6a"


def random_mac() -> str:
    return MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


def host_link_name(kind: str, tag: str) -> str:
    """`veth`/`tap` + the daemon's tag + random hex: at most 13 bytes."""
    return f"{kind}{tag}{secrets.token_hex(3)[:5]}"


def owned_by(name: str, tag: str) -> bool:
    return any(
        name.startswith(f"{kind}{tag}") and len(name) == len(kind) + len(tag) + 5 for kind in ("veth", "tap")
    )
