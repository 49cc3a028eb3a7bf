"""What two NICs of one instance may not share, checked in memory over the instance's devices.

A device's own validation compares it with the other instances through the database, which holds
the instance as it was before a change; two devices that arrive or change together are compared
here, with their new configs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator

from pincus.errors import ConflictError

# Key -> how its values compare (FD42::5 is fd42::5, AA:.. is aa:..); "none", "auto" never clash.
_UNIQUE: dict[str, Callable[[str], object]] = {
    "hwaddr": str.lower,
    "ipv4.address": ipaddress.ip_address,
    "ipv6.address": ipaddress.ip_address,
}


def _where(cfg: dict[str, str]) -> str:
    """The network or bridge a NIC sits on: uniqueness holds on one of them."""
    return cfg.get("network") or cfg.get("parent") or ""


def _values(cfg: dict[str, str]) -> Iterator[tuple[tuple[str, str, object], str]]:
    """(where, key, parsed value), raw value: what this NIC holds that no neighbour may."""
    if cfg.get("type") != "nic":
        return
    for key, parse in _UNIQUE.items():
        if key in cfg:
            try:
                yield (_where(cfg), key, parse(cfg[key])), cfg[key]
            except ValueError:
                continue  # "none", "auto", or a value the device's own check refuses


def refuse_clashes_within(devices: dict[str, dict[str, str]], changed: Iterable[str]) -> None:
    """Refuse when a device among CHANGED shares a unique key's value with another NIC of DEVICES
    (the instance's expanded devices, as they will be) on the same network."""
    holders: dict[tuple[str, str, object], list[str]] = {}
    for name in sorted(devices):
        for slot, _ in _values(devices[name]):
            holders.setdefault(slot, []).append(name)
    for name in sorted(changed):
        for slot, raw in _values(devices.get(name, {})):
            other = next((n for n in holders[slot] if n != name), None)
            if other is not None:
                raise ConflictError(
                    f'Device "{name}": {slot[1]} {raw} is already used by device "{other}" of this instance'
                )
