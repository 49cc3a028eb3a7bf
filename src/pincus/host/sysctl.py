"""Network sysctls of the daemon's namespace (net.ipv4.*, net.ipv6.* under /proc/sys).

`set_accept_dad` turns IPv6 duplicate address detection off on a link: with DAD off an address is
usable the moment it is added; dnsmasq (--bind-interfaces) silently skips an address still in DAD
and never binds it later.
"""

from __future__ import annotations

import os
import re

from pincus.errors import HostError, InvalidError
from pincus.host import checks

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
        # Raw os calls, no text-file object: a NIC start writes one of these, a NIC in a thousand too.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, f"{value}\n".encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise HostError(f"Failed to write {value} to {path}: {e.strerror or e}") from e


def set_ipv6_disabled(name: str, disabled: bool = True) -> None:
    """Write net.ipv6.conf.<name>.disable_ipv6 in the daemon's namespace."""
    checks.interface_name(name)
    try:
        set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1" if disabled else "0")
    except HostError as e:
        raise HostError(f'Failed to {"disable" if disabled else "enable"} IPv6 on "{name}": {e}') from e


def set_accept_dad(name: str, enabled: bool) -> None:
    """Turn IPv6 duplicate address detection on `name` on or off (daemon's namespace)."""
    set_sysctl(f"net/ipv6/conf/{checks.interface_name(name)}/accept_dad", "1" if enabled else "0")
