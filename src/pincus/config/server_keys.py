"""Server config keys (GET/PUT/PATCH /1.0 "config"), with Incus's names and meaning.

A LOCAL key belongs to one member (its own addresses); the others are cluster-wide."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pincus.config.validators import Validator
from pincus.errors import InvalidError


def parse_address(value: str) -> tuple[str, int]:
    """HOST:PORT with a literal IP address (IPv6 in brackets): pincus binds it and derives the
    dqlite address from it, so a name that may resolve elsewhere is refused."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f'"{value}" is not HOST:PORT')
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError(f'"{host}" is not an IP address (pincus needs a literal address)') from None
    if ip.version == 6 and bare == host:
        raise ValueError(f'IPv6 address "{host}" must be in brackets: [{host}]:{port}')
    if not port.isdigit() or not 0 < int(port) < 65536 or port != str(int(port)):
        raise ValueError(f'port "{port}" is not 1-65535')
    return bare, int(port)


def is_address(value: str) -> None:
    parse_address(value)


_EXPIRY_FIELD = re.compile(r"^(\d{1,6})(S|M|H|d|w|m|y)$")
_SECONDS = {"S": 1, "M": 60, "H": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}


def parse_expiry(value: str) -> int:
    """Seconds of Incus's expiry expression: fields "<integer>(S|M|H|d|w|m|y)" separated by
    spaces, each unit once ("1d 3H"). A month counts 30 days, a year 365."""
    total, seen = 0, set()
    for part in value.strip().split(" "):
        m = _EXPIRY_FIELD.match(part)
        if m is None or m[2] in seen:
            raise ValueError(f'"{value}" is not an expiry such as "3H" or "1d 12H"')
        seen.add(m[2])
        total += int(m[1]) * _SECONDS[m[2]]
    if total <= 0:
        raise ValueError(f'"{value}" is no time at all')
    return total


def is_expiry(value: str) -> None:
    parse_expiry(value)


def is_offline_threshold(value: str) -> None:
    # Incus refuses 10 s and less; pincus takes 2 s and more so that tests need not wait 20 s.
    if not value.isdigit() or not 2 <= int(value) <= 86400:
        raise ValueError(f'"{value}" is not a number of seconds 2-86400')


_OVSDB_REMOTE = re.compile(r"(tcp|ssl):([0-9.]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}")


def is_ovsdb_remotes(value: str) -> None:
    """tcp:IP:PORT or ssl:IP:PORT (IPv6 in brackets), comma separated: the members of a central."""
    for part in value.split(","):
        if not _OVSDB_REMOTE.fullmatch(part):
            raise ValueError(f'"{part}" is not tcp:IP:PORT or ssl:IP:PORT')


def is_ip(value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f'"{value}" is not an IP address') from None


@dataclass(frozen=True)
class ServerKey:
    validator: Validator
    default: str
    local: bool
    description: str


SERVER_KEYS: dict[str, ServerKey] = {
    "core.https_address": ServerKey(is_address, "", True, "Address the API also listens on over TLS"),
    "cluster.https_address": ServerKey(
        is_address, "", True, "Address other cluster members reach this one at"
    ),
    "cluster.offline_threshold": ServerKey(
        is_offline_threshold, "20", False, "Seconds without a heartbeat before a member is Offline"
    ),
    "cluster.join_token_expiry": ServerKey(is_expiry, "3H", False, "How long a join token stays valid"),
    "network.ovn.northbound_connection": ServerKey(
        is_ovsdb_remotes, "", False, "An existing OVN central's northbound database (else pincus runs one)"
    ),
    # pincus's own (Incus leaves the chassis to the admin): this member's OVN tunnel endpoint.
    "network.ovn.encap_address": ServerKey(
        is_ip, "", True, "This member's OVN tunnel endpoint (default: its cluster address, or 127.0.0.1)"
    ),
}


def check(config: dict[str, str]) -> None:
    """InvalidError naming the key if one is unknown or its value is wrong ("" unsets)."""
    for key in sorted(config):
        value = config[key]
        spec = SERVER_KEYS.get(key)
        if spec is None:
            raise InvalidError(f'Invalid server config key "{key}": unknown key')
        if not isinstance(value, str):
            raise InvalidError(f'Invalid value for server config key "{key}": must be a string')
        if value == "":
            continue
        try:
            spec.validator(value)
        except ValueError as e:
            raise InvalidError(f'Invalid value for server config key "{key}": {e}') from None


def value(config: dict[str, str], key: str) -> str:
    """KEY's value in CONFIG, or its default."""
    return config.get(key) or SERVER_KEYS[key].default
