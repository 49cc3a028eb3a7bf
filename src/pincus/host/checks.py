"""The checks every host module applies to interface names and MACs it is handed.

The last line of defence before a value reaches netlink, an `ip` argument, a dnsmasq file or an
nftables rule; config/validators.py gives users their detailed messages earlier, with the same
rule (it imports the constants below).
"""

from __future__ import annotations

import re

from pincus.errors import InvalidError

IFNAME_MAX_BYTES = 15  # IFNAMSIZ - 1
# The kernel forbids '/' and ':'; the rest would need quoting in nftables rules, dnsmasq config
# lines or shells ('*' is a wildcard in both nft and dnsmasq interface names).
IFNAME_FORBIDDEN = frozenset("/:\"'\\`#;,=*?$&|<>(){}[]!")

_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")


def interface_name(name: object, what: str = "interface name") -> str:
    """name, if it is an interface name safe everywhere pincus passes one (else InvalidError).

    1-15 bytes of UTF-8; no whitespace, control characters or IFNAME_FORBIDDEN; not "." or
    ".."; not starting with "-" (tools would read it as an option).
    """
    if not isinstance(name, str) or name == "":
        raise InvalidError(f"Invalid {what} {name!r}: must be a non-empty string")
    for ch in name:
        # isprintable() is False for control characters and lone surrogates too.
        if ch.isspace() or not ch.isprintable() or ch in IFNAME_FORBIDDEN:
            raise InvalidError(f"Invalid {what} {name!r}: character {ch!r} is not allowed")
    if len(name.encode("utf-8")) > IFNAME_MAX_BYTES:
        raise InvalidError(f"Invalid {what} {name!r}: longer than {IFNAME_MAX_BYTES} bytes")
    if name in (".", "..") or name.startswith("-"):
        raise InvalidError(f"Invalid {what} {name!r}")
    return name


def mac(value: object, what: str = "MAC address") -> str:
    """value in lower case, if it is six colon-separated hex pairs (else InvalidError)."""
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        raise InvalidError(f"Invalid {what} {value!r}")
    return value.lower()
