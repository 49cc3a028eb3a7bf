"""IP settings of the daemon's network namespace that are not links: sysctls, and routes (for now).

- `get_sysctl`, `set_sysctl`: net.* sysctls under /proc/sys.
- `set_accept_dad`: net.ipv6.conf.<name>.accept_dad. With DAD off an IPv6 address is usable
  the moment it is added; dnsmasq (--bind-interfaces) silently skips an address still in DAD
  and never binds it later.
- `delete_address`: removes one address (links.flush_addresses removes them all, IPv6
  link-local included, which router advertisements need).
- `list_addresses`, `list_routes`: what the namespace already uses, to pick a free subnet.

The address and route calls run iproute2's `ip` (a few ms each): they are used when a network is created or
changed, never per packet or per NIC. They belong in links.py as netlink calls one day.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from typing import Any

from pincus.errors import HostError, InvalidError
from pincus.host import checks

_IP = "ip"
_TIMEOUT = 10.0


def _run_ip(what: str, *args: str) -> str:
    try:
        r = subprocess.run([_IP, *args], capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HostError(f"{what}: {e}") from e
    if r.returncode != 0:
        raise HostError(f"{what}: {r.stderr.strip() or f'ip exited with status {r.returncode}'}")
    return r.stdout


def _json(what: str, text: str) -> list[Any]:
    try:
        data = json.loads(text) if text.strip() else []
    except ValueError as e:
        raise HostError(f"{what}: unreadable JSON from ip: {e}") from None
    if not isinstance(data, list):
        raise HostError(f"{what}: unexpected JSON from ip")
    return data


_SYSCTL_KEY = re.compile(r"net/(ipv4|ipv6)/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def _sysctl_path(key: str) -> str:
    if not _SYSCTL_KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise InvalidError(f'Invalid sysctl "{key}"')
    return f"/proc/sys/{key}"


def get_sysctl(key: str) -> str:
    """The value of a net sysctl ("net/ipv6/conf/br0/accept_ra") in the daemon's namespace."""
    path = _sysctl_path(key)
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise HostError(f"Failed to read {path}: {e.strerror or e}") from e


def set_sysctl(key: str, value: str) -> None:
    """Write a net sysctl in the daemon's namespace."""
    path = _sysctl_path(key)
    if not value.isascii() or not value.isalnum():
        raise InvalidError(f'Invalid value "{value}" for sysctl "{key}"')
    try:
        with open(path, "w") as f:
            f.write(value + "\n")
    except OSError as e:
        raise HostError(f"Failed to write {value} to {path}: {e.strerror or e}") from e


def set_accept_dad(name: str, enabled: bool) -> None:
    """Turn IPv6 duplicate address detection on `name` on or off (daemon's namespace)."""
    set_sysctl(f"net/ipv6/conf/{checks.interface_name(name)}/accept_dad", "1" if enabled else "0")


def _route_dst(family: int, dst: object) -> str | None:
    if not isinstance(dst, str):
        return None
    if dst == "default":
        return "0.0.0.0/0" if family == 4 else "::/0"
    if "/" not in dst:
        dst += "/32" if family == 4 else "/128"
    try:
        return str(ipaddress.ip_network(dst, strict=False))
    except ValueError:
        return None


def list_routes() -> list[str]:
    """The destination (CIDR) of every route in every table, both families."""
    what = "Failed to list routes"
    out: list[str] = []
    for family in (4, 6):
        for route in _json(what, _run_ip(what, "-j", f"-{family}", "route", "show", "table", "all")):
            dst = _route_dst(family, route.get("dst") if isinstance(route, dict) else None)
            if dst is not None:
                out.append(dst)
    return out


def routes_of(dev: str) -> list[str]:
    """The destination (CIDR) of every main-table route out of dev, both families."""
    checks.interface_name(dev)
    what = f'Failed to list routes of "{dev}"'
    out: list[str] = []
    for family in (4, 6):
        for route in _json(what, _run_ip(what, "-j", f"-{family}", "route", "show", "dev", dev)):
            dst = _route_dst(family, route.get("dst") if isinstance(route, dict) else None)
            if dst is not None:
                out.append(dst)
    return out
