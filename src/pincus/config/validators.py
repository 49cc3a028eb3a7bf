"""Validators for config values: pure functions, no OS access.

Over 500 lines and whole: one table of short validators bound by the shared rules below.

Every validator takes the raw string value of one key and returns None when it is valid, or
raises ``ValueError`` whose message says what is wrong with the *value* (quoting it, with
control characters escaped) so a user can act on it. The caller adds the key:
``Invalid value for key "<key>": <message>``.

Rules shared by all validators:

- The empty string is refused everywhere except by ``is_any``; wrap a validator in
  ``optional`` where empty means "unset".
- Parsing is strict and ASCII-only: no surrounding whitespace, no ``+`` signs, no Unicode
  digits, no IPv6 scope ids (``%eth0``), no netmask-style prefixes (``/255.255.255.0``).
- Only list validators tolerate spaces, and only around commas. Code that writes a list into a
  file must split it with ``split_list`` rather than copy the raw value.
- Nothing but ``is_any`` accepts a newline, a control character or a character that could break
  a dnsmasq config line or an nftables rule (quotes, backslash, ``#``, ``;``, ``*``, ...).
  ``is_any`` is only for free-form ``user.*`` keys, which never reach such files.

Choices made where Incus is loose or the brief left it open:

- ``is_mtu``: 1280-16384, the IPv6 minimum up to the largest jumbo frame (as Incus).
- ``is_priority``: 0-4294967295; ``limits.priority`` becomes ``skb->priority``, a u32
  (as Incus, which validates it with ``IsUint32``).
- ``is_bit_rate``: Incus's bit suffixes (bit, kbit ... Ebit, Kibit ... Eibit, matched
  case-insensitively as tc does) plus Incus's byte suffixes (B, kB ... EB, KiB ... EiB,
  case-sensitive, meaning bytes per second). A bare number is bit/s. The number may have a
  decimal part (``1.5Mbit``) if the result is a whole number of bit/s. tc's ``bps``/``mbps``
  (which mean *bytes*) are refused as ambiguous.
- ``is_duration``: dnsmasq lease times; anything under 2 minutes is refused because dnsmasq
  silently raises it to 2 minutes.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeAlias, TypeVar

# One rule for interface names: the host layer enforces it last, users get the messages here.
from pincus.host.checks import IFNAME_FORBIDDEN, IFNAME_MAX_BYTES

Validator: TypeAlias = Callable[[str], None]
_Addr = TypeVar("_Addr", ipaddress.IPv4Address, ipaddress.IPv6Address)

# ---------------------------------------------------------------------------------------------
# Message helpers
# ---------------------------------------------------------------------------------------------

_QUOTE_MAX = 64
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _quote(value: str) -> str:
    """The value in double quotes, made safe to show: escapes visible, long values cut."""
    shown = value[:_QUOTE_MAX]
    body = "".join(_escape_char(ch) for ch in shown)
    cut = f"... ({len(value)} characters)" if len(value) > _QUOTE_MAX else ""
    return f'"{body}"{cut}'


def _describe_char(ch: str) -> str:
    names = {" ": "a space", "\n": "a newline", "\r": "a carriage return", "\t": "a tab"}
    if ch in names:
        return names[ch]
    if ch == '"':
        return "'\"'"
    if ch.isprintable() and not ch.isspace():
        return f'"{ch}"'
    return f"character U+{ord(ch):04X}"


def _empty(what: str) -> ValueError:
    return ValueError(f"empty value is not {what}")


# ---------------------------------------------------------------------------------------------
# Generic
# ---------------------------------------------------------------------------------------------


def optional(inner: Validator) -> Validator:
    """Accept the empty string (key unset) or whatever `inner` accepts."""

    def check(value: str) -> None:
        if value != "":
            inner(value)

    return check


def is_any(value: str) -> None:
    """Free-form text (user.* keys): anything but NUL and unpaired surrogates (not encodable)."""
    if "\x00" in value:
        raise ValueError(f"{_quote(value)} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{_quote(value)} is not valid Unicode text") from None


def is_argv(value: str) -> None:
    """Words as a POSIX shell splits them (raw.qemu): no NUL, quotes closed; never run by a shell."""
    is_any(value)
    try:
        shlex.split(value)
    except ValueError as e:
        raise ValueError(f"{_quote(value)} does not split into arguments: {e}") from None


def is_one_of(*choices: str) -> Validator:
    """Exactly one of the given words (case-sensitive)."""
    if not choices:
        raise TypeError("is_one_of needs at least one choice")
    allowed = frozenset(choices)
    listed = ", ".join(choices)

    def check(value: str) -> None:
        if value not in allowed:
            raise ValueError(f"{_quote(value)} is not one of: {listed}")

    return check


def is_address_or_keyword(keywords: tuple[str, ...], inner: Validator) -> Validator:
    """One of `keywords` (e.g. "auto", "none") or a value `inner` accepts."""
    allowed = frozenset(keywords)
    listed = ", ".join(keywords)

    def check(value: str) -> None:
        if value in allowed:
            return
        try:
            inner(value)
        except ValueError as e:
            raise ValueError(f"{e}; other accepted values: {listed}") from None

    return check


# ---------------------------------------------------------------------------------------------
# Booleans and integers
# ---------------------------------------------------------------------------------------------

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_bool(value: str) -> bool:
    """Incus booleans: true/false, 1/0, yes/no, on/off, in any letter case."""
    # isascii first: str.lower maps some non-ASCII letters onto ASCII ones.
    word = value.lower() if value.isascii() else ""
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{_quote(value)} is not a boolean (expected true/false, yes/no, on/off, 1/0)")


def is_bool(value: str) -> None:
    parse_bool(value)


_INT = re.compile(r"-?[0-9]+")


def _parse_int(value: str, lo: int, hi: int) -> int:
    if not _INT.fullmatch(value):
        raise ValueError(f"{_quote(value)} is not a decimal integer")
    digits = value.lstrip("-").lstrip("0") or "0"
    # A huge digit string is out of range anyway; don't hand it to int() (4300-digit limit).
    if len(digits) > len(str(max(abs(lo), abs(hi)))):
        shown = ("-" if value.startswith("-") else "") + digits
        if len(shown) > _QUOTE_MAX:
            shown = f"{shown[:_QUOTE_MAX]}... ({len(shown)} digits)"
        raise ValueError(f"{shown} is outside {lo}-{hi}")
    number = -int(digits) if value.startswith("-") else int(digits)
    if not lo <= number <= hi:
        raise ValueError(f"{number} is outside {lo}-{hi}")
    return number


def is_int_range(lo: int, hi: int) -> Validator:
    """A decimal integer in lo..hi inclusive (optional leading '-', nothing else)."""
    if lo > hi:
        raise TypeError(f"is_int_range: empty range {lo}-{hi}")

    def check(value: str) -> None:
        _parse_int(value, lo, hi)

    return check


MTU_MIN = 1280  # IPv6 needs at least this
MTU_MAX = 16384  # the largest jumbo frame NICs commonly take


def is_mtu(value: str) -> None:
    """MTU 1280-16384: from the IPv6 minimum up to the largest jumbo frame (as Incus)."""
    _parse_int(value, MTU_MIN, MTU_MAX)


def is_priority(value: str) -> None:
    """limits.priority: skb->priority is a u32, so 0-4294967295 (Incus: IsUint32)."""
    _parse_int(value, 0, 2**32 - 1)


# ---------------------------------------------------------------------------------------------
# Lists
# ---------------------------------------------------------------------------------------------


def split_list(value: str) -> list[str]:
    """Items of a comma-separated list; spaces around commas are dropped, empty items refused."""
    if value == "":
        raise _empty("a list")
    items = [part.strip(" ") for part in value.split(",")]
    for position, item in enumerate(items, start=1):
        if item == "":
            raise ValueError(f"{_quote(value)} has an empty item (item {position})")
    return items


def is_list_of(item: Validator) -> Validator:
    """A comma-separated list whose every item `item` accepts."""

    def check(value: str) -> None:
        for part in split_list(value):
            item(part)

    return check


# ---------------------------------------------------------------------------------------------
# Link layer: MACs, interface names, VLANs
# ---------------------------------------------------------------------------------------------

_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")


def is_mac(value: str) -> None:
    """A unicast, non-zero Ethernet address written as six colon-separated hex pairs."""
    if not _MAC.fullmatch(value):
        raise ValueError(
            f"{_quote(value)} is not a MAC address (expected six hex pairs like 0a:92:a7:0d:b7:d9)"
        )
    first = int(value[:2], 16)
    if first & 1:
        raise ValueError(
            f"{_quote(value)} is a multicast MAC address (the lowest bit of the first byte must be 0)"
        )
    if int(value.replace(":", ""), 16) == 0:
        raise ValueError(f"{_quote(value)} is the all-zero MAC address")


def is_interface_name(value: str) -> None:
    """A Linux interface name that is also safe in nftables rules and dnsmasq config.

    1-15 bytes of UTF-8; no whitespace, control characters, '/', ':', quotes, backslash or
    shell/config metacharacters; not "." or ".."; must not start with "-" (tools would read it
    as an option).
    """
    if value == "":
        raise _empty("an interface name")
    for ch in value:
        if ch.isspace() or not ch.isprintable() or ch in IFNAME_FORBIDDEN:
            raise ValueError(
                f"{_quote(value)} contains {_describe_char(ch)}, which is not allowed in an interface name"
            )
    if value in (".", ".."):
        raise ValueError(f'"{value}" is not allowed as an interface name')
    if value.startswith("-"):
        raise ValueError(f'{_quote(value)} starts with "-", which is not allowed in an interface name')
    size = len(value.encode("utf-8"))
    if size > IFNAME_MAX_BYTES:
        raise ValueError(
            f"{_quote(value)} is {size} bytes long, interface names are at most {IFNAME_MAX_BYTES} bytes"
        )


DEVICE_NAME_MAX = 64
_DEVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def is_device_name(value: str) -> None:
    """A device name ("eth0", "uplink.1"): it names files in dnsmasq's hosts directory, QEMU ids and
    `volatile.<device>.*` keys, so letters, digits, "_", "-" and "." only, not starting with "."
    or "-", at most 64 characters."""
    if value == "":
        raise _empty("a device name")
    if not _DEVICE_NAME.fullmatch(value):
        bad = next((ch for ch in value if not _DEVICE_NAME.fullmatch("a" + ch)), None)
        where = f"contains {_describe_char(bad)}" if bad else f"starts with {_describe_char(value[0])}"
        raise ValueError(
            f'{_quote(value)} {where}; device names may only contain letters, digits, "_", "-" and ".", '
            'and start with a letter, digit or "_"'
        )
    if len(value) > DEVICE_NAME_MAX:
        raise ValueError(f"{_quote(value)} is {len(value)} characters long (at most {DEVICE_NAME_MAX})")


VLAN_MAX = 4094


def is_vlan_id(value: str) -> None:
    """A VLAN id, 0-4094 (0 means priority tagging only; 4095 is reserved)."""
    _parse_int(value, 0, VLAN_MAX)


_VLAN_RANGE = re.compile(r"([0-9]+)-([0-9]+)")


def parse_vlan_list(value: str) -> list[int]:
    """Comma list of VLAN ids and ranges ("10,20-30,4000") expanded, sorted, without repeats."""
    ids: set[int] = set()
    for item in split_list(value):
        matched = _VLAN_RANGE.fullmatch(item)
        if matched is None:
            ids.add(_parse_int(item, 0, VLAN_MAX))
            continue
        start = _parse_int(matched.group(1), 0, VLAN_MAX)
        end = _parse_int(matched.group(2), 0, VLAN_MAX)
        if start > end:
            raise ValueError(f'"{item}" is a reversed range (start {start} is above end {end})')
        ids.update(range(start, end + 1))
    return sorted(ids)


def is_vlan_list(value: str) -> None:
    parse_vlan_list(value)


# ---------------------------------------------------------------------------------------------
# IP addresses and networks
# ---------------------------------------------------------------------------------------------

_V4_TEXT = re.compile(r"[0-9.]+")
_V6_TEXT = re.compile(r"[0-9A-Fa-f:.]+")  # no '%': scope ids are not config values
_PREFIX = re.compile(r"0|[1-9][0-9]{0,2}")

_EXAMPLE4 = {"address": "10.250.1.20", "network": "10.250.1.0/24", "cidr": "10.250.1.1/24"}
_EXAMPLE6 = {"address": "fd42:250::20", "network": "fd42:250:1::/64", "cidr": "fd42:250:1::1/64"}


def parse_ipv4(value: str) -> ipaddress.IPv4Address:
    if _V4_TEXT.fullmatch(value):
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            pass
    raise ValueError(f"{_quote(value)} is not an IPv4 address (expected e.g. {_EXAMPLE4['address']})")


def parse_ipv6(value: str) -> ipaddress.IPv6Address:
    if _V6_TEXT.fullmatch(value):
        try:
            return ipaddress.IPv6Address(value)
        except ValueError:
            pass
    raise ValueError(f"{_quote(value)} is not an IPv6 address (expected e.g. {_EXAMPLE6['address']})")


def is_ipv4(value: str) -> None:
    """A bare IPv4 address in dotted-quad form (any address; no prefix)."""
    parse_ipv4(value)


def is_ipv6(value: str) -> None:
    """A bare IPv6 address (any address; no prefix, no scope id)."""
    parse_ipv6(value)


def is_ip_any(value: str) -> None:
    """A bare IPv4 or IPv6 address."""
    if ":" in value:
        parse_ipv6(value)
    else:
        parse_ipv4(value)


_KIND_NAMES = {"network": "network", "cidr": "address with prefix length"}


def _split_prefix(value: str, version: int, kind: str) -> tuple[str, int]:
    """Address text and prefix length of "<address>/<prefix>"; the address is checked too."""
    example = (_EXAMPLE4 if version == 4 else _EXAMPLE6)[kind]
    bits = 32 if version == 4 else 128
    address, slash, prefix = value.partition("/")
    try:
        parse_ipv4(address) if version == 4 else parse_ipv6(address)
    except ValueError:
        raise ValueError(
            f"{_quote(value)} is not an IPv{version} {_KIND_NAMES[kind]} (expected e.g. {example})"
        ) from None
    if not slash:
        raise ValueError(f"{_quote(value)} has no prefix length (expected e.g. {example})")
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"{_quote(value)} does not end in a prefix length 0-{bits}")
    length = int(prefix)
    if length > bits:
        raise ValueError(f"{_quote(value)} has prefix length {length}, IPv{version} allows 0-{bits}")
    return address, length


def parse_cidr4(value: str) -> ipaddress.IPv4Network:
    """A network with prefix ("10.250.1.0/24"); host bits must be zero."""
    address_text, length = _split_prefix(value, 4, "network")
    address = parse_ipv4(address_text)
    network = ipaddress.IPv4Network((address, length), strict=False)
    if network.network_address != address:
        raise ValueError(f"{_quote(value)} has host bits set (the network is {network})")
    return network


def parse_cidr6(value: str) -> ipaddress.IPv6Network:
    """A network with prefix ("fd42:250:1::/64"); host bits must be zero."""
    address_text, length = _split_prefix(value, 6, "network")
    address = parse_ipv6(address_text)
    network = ipaddress.IPv6Network((address, length), strict=False)
    if network.network_address != address:
        raise ValueError(f"{_quote(value)} has host bits set (the network is {network})")
    return network


def is_cidr4(value: str) -> None:
    parse_cidr4(value)


def is_cidr6(value: str) -> None:
    parse_cidr6(value)


def parse_address_cidr4(value: str) -> ipaddress.IPv4Interface:
    """A host address with prefix ("10.250.1.1/24"), usable as a gateway address.

    Refused: 0.0.0.0, multicast, 255.255.255.255, and (for prefixes up to /30) the network and
    broadcast addresses of the subnet. /31 and /32 have neither (RFC 3021).
    """
    address_text, length = _split_prefix(value, 4, "cidr")
    address = parse_ipv4(address_text)
    interface = ipaddress.IPv4Interface((address, length))
    network = interface.network
    if address.is_unspecified:
        raise ValueError(f"{_quote(value)} is the unspecified address, not a host address")
    if address.is_multicast:
        raise ValueError(f"{_quote(value)} is a multicast address, not a host address")
    if address == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{_quote(value)} is the broadcast address, not a host address")
    if length <= 30 and address == network.network_address:
        raise ValueError(f"{_quote(value)} is the network address of {network}, not a host address")
    if length <= 30 and address == network.broadcast_address:
        raise ValueError(f"{_quote(value)} is the broadcast address of {network}, not a host address")
    return interface


def parse_address_cidr6(value: str) -> ipaddress.IPv6Interface:
    """A host address with prefix ("fd42:250:1::1/64").

    Refused: ::, multicast, and (for prefixes up to /126) the all-zero host part, which is the
    subnet-router anycast address. /127 (RFC 6164) and /128 have no such address.
    """
    address_text, length = _split_prefix(value, 6, "cidr")
    address = parse_ipv6(address_text)
    interface = ipaddress.IPv6Interface((address, length))
    network = interface.network
    if address.is_unspecified:
        raise ValueError(f"{_quote(value)} is the unspecified address, not a host address")
    if address.is_multicast:
        raise ValueError(f"{_quote(value)} is a multicast address, not a host address")
    if length <= 126 and address == network.network_address:
        raise ValueError(
            f"{_quote(value)} is the subnet-router anycast address of {network}, not a host address"
        )
    return interface


def is_address_cidr4(value: str) -> None:
    parse_address_cidr4(value)


def is_address_cidr6(value: str) -> None:
    parse_address_cidr6(value)


def _parse_range(value: str, parse: Callable[[str], _Addr], family: str, example: str) -> tuple[_Addr, _Addr]:
    start_text, dash, end_text = value.partition("-")
    if not dash:
        raise ValueError(f"{_quote(value)} is not an {family} range (expected e.g. {example})")
    start, end = parse(start_text), parse(end_text)
    if start > end:
        raise ValueError(f"{_quote(value)} is a reversed range (start {start} is above end {end})")
    return start, end


def parse_ip_range4(value: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """One range "start-end" of IPv4 addresses, start <= end."""
    return _parse_range(value, parse_ipv4, "IPv4", "10.250.1.10-10.250.1.50")


def parse_ip_range6(value: str) -> tuple[ipaddress.IPv6Address, ipaddress.IPv6Address]:
    """One range "start-end" of IPv6 addresses, start <= end."""
    return _parse_range(value, parse_ipv6, "IPv6", "fd42:250::10-fd42:250::50")


def is_ip_range4(value: str) -> None:
    parse_ip_range4(value)


def is_ip_range6(value: str) -> None:
    parse_ip_range6(value)


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_LABEL_CHARS = re.compile(r"[A-Za-z0-9-]+")
DNS_NAME_MAX = 253


def _check_label(value: str, label: str, what: str) -> None:
    if label == "":
        raise ValueError(f"{_quote(value)} has an empty label")
    if not _LABEL_CHARS.fullmatch(label):
        bad = next(ch for ch in label if not _LABEL_CHARS.fullmatch(ch))
        raise ValueError(
            f'{_quote(value)} contains {_describe_char(bad)}, {what} may only contain letters, digits and "-"'
        )
    if len(label) > 63:
        raise ValueError(f"{_quote(value)} has a label of {len(label)} characters (at most 63)")
    if not _LABEL.fullmatch(label):
        raise ValueError(f'{_quote(value)} has a label starting or ending with "-"')


def is_dns_domain(value: str) -> None:
    """A DNS domain of RFC 1123 labels ("incus", "lan.example.org"): at most 253 characters,
    no trailing dot, last label not all digits."""
    if value == "":
        raise _empty("a DNS domain")
    for label in value.split("."):
        _check_label(value, label, "DNS domain labels")
    if len(value) > DNS_NAME_MAX:
        raise ValueError(f"{_quote(value)} is {len(value)} characters long (at most {DNS_NAME_MAX})")
    if value.rsplit(".", 1)[-1].isdigit():
        raise ValueError(f"{_quote(value)} ends in an all-digit label, which is not a domain")


def is_hostname(value: str) -> None:
    """One RFC 1123 host label: 1-63 letters, digits and "-", not starting or ending with "-",
    not all digits."""
    if value == "":
        raise _empty("a host name")
    _check_label(value, value, "host names")
    if value.isdigit():
        raise ValueError(f"{_quote(value)} is all digits, which is not a host name")


def is_instance_name(value: str) -> None:
    """An instance name: a host label (see is_hostname) that also does not start with a digit."""
    if value == "":
        raise _empty("an instance name")
    _check_label(value, value, "instance names")
    if value[0].isdigit():
        raise ValueError(f"{_quote(value)} starts with a digit, which instance names must not")


# ---------------------------------------------------------------------------------------------
# Quantities: bit rates, sizes, durations
# ---------------------------------------------------------------------------------------------

_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)")
_NUMBER_MAX_CHARS = 40  # longer numbers are out of range or absurdly precise
INT64_MAX = 2**63 - 1


def _powers(base: int, names: tuple[str, ...]) -> dict[str, int]:
    return {name: base ** (i + 1) for i, name in enumerate(names)}


# Bit suffixes, looked up lower-cased: "bit" is spelled out, so case carries no meaning.
_BIT_SUFFIXES: dict[str, int] = {
    "": 1,
    "bit": 1,
    **_powers(1000, ("kbit", "mbit", "gbit", "tbit", "pbit", "ebit")),
    **_powers(1024, ("kibit", "mibit", "gibit", "tibit", "pibit", "eibit")),
}
# Byte suffixes, case-sensitive as in Incus ("kb" could mean kilobit to some readers).
_BYTE_SUFFIXES: dict[str, int] = {
    "B": 1,
    **_powers(1000, ("kB", "MB", "GB", "TB", "PB", "EB")),
    **_powers(1024, ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")),
}
_SIZE_SUFFIXES: dict[str, int] = {"": 1, **_BYTE_SUFFIXES}


def _split_quantity(value: str, what: str) -> tuple[Fraction, str]:
    matched = _QUANTITY.fullmatch(value)
    if matched is None:
        raise ValueError(f"{_quote(value)} is not {what}")
    number, suffix = matched.groups()
    if len(number) > _NUMBER_MAX_CHARS:
        raise ValueError(f"{_quote(value)} has too many digits")
    return Fraction(number), suffix


def parse_bit_rate(value: str) -> int:
    """Bits per second of a rate such as "10Mbit", "1.5Gbit", "500kbit", "1MB" (bytes/s)."""
    what = "a bit rate (expected e.g. 10Mbit, 1Gbit, 500kbit)"
    number, suffix = _split_quantity(value, what)
    if suffix.lower() in _BIT_SUFFIXES:
        rate = number * _BIT_SUFFIXES[suffix.lower()]
    elif suffix in _BYTE_SUFFIXES:
        rate = number * _BYTE_SUFFIXES[suffix] * 8
    else:
        raise ValueError(f"{_quote(value)} is not {what}")
    if rate.denominator != 1:
        raise ValueError(f"{_quote(value)} is not a whole number of bits per second")
    if rate <= 0:
        raise ValueError(f"{_quote(value)} is not above zero")
    if rate > INT64_MAX:
        raise ValueError(f"{_quote(value)} is above the largest rate, {INT64_MAX} bit/s")
    return int(rate)


def is_bit_rate(value: str) -> None:
    parse_bit_rate(value)


def parse_size(value: str) -> int:
    """Bytes of a size such as "512MiB", "1GB", "100kB", "1.5GiB"; plain digits are bytes."""
    what = "a size (expected e.g. 512MiB, 1GB, 100kB)"
    number, suffix = _split_quantity(value, what)
    if suffix not in _SIZE_SUFFIXES:
        raise ValueError(f"{_quote(value)} is not {what}")
    size = number * _SIZE_SUFFIXES[suffix]
    if size.denominator != 1:
        raise ValueError(f"{_quote(value)} is not a whole number of bytes")
    if size > INT64_MAX:
        raise ValueError(f"{_quote(value)} is above the largest size, {INT64_MAX} bytes")
    return int(size)


def is_size(value: str) -> None:
    parse_size(value)


_DURATION = re.compile(r"([0-9]+)([smhdwSMHDW]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
LEASE_MIN_SECONDS = 120  # dnsmasq raises anything shorter to this
LEASE_MAX_SECONDS = 2**31 - 1  # dnsmasq computes lease times in a C int


def parse_duration(value: str) -> int | None:
    """Seconds of a dnsmasq lease time ("3600", "45m", "1h", "2d", "1w"), None for "infinite"."""
    if value == "infinite":
        return None
    matched = _DURATION.fullmatch(value)
    if matched is None:
        raise ValueError(f'{_quote(value)} is not a lease time (expected e.g. 1h, 30m, 3600 or "infinite")')
    number, unit = matched.groups()
    if len(number) > 12:
        raise ValueError(f"{_quote(value)} is longer than {LEASE_MAX_SECONDS} seconds")
    seconds = int(number) * _DURATION_UNITS[unit.lower()]
    if seconds < LEASE_MIN_SECONDS:
        raise ValueError(f"{_quote(value)} is shorter than 2m, the shortest lease dnsmasq grants")
    if seconds > LEASE_MAX_SECONDS:
        raise ValueError(f'{_quote(value)} is longer than {LEASE_MAX_SECONDS} seconds (use "infinite")')
    return seconds


def is_duration(value: str) -> None:
    parse_duration(value)


# --- instance limits (cgroups, QEMU) -----------------------------------------------------------

CPU_MAX = 8192  # CPU numbers and counts above this are typos, not hosts
PROCESSES_MAX = 4 * 1024 * 1024  # the kernel's PID_MAX_LIMIT: pids.max takes nothing above
MEMORY_MIN = 1024 * 1024  # below a MiB not even an init starts
_CPU_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def parse_cpu_set(value: str) -> frozenset[int]:
    """CPUs of a set such as "0-1", "0,2", "0-3,6" (the kernel's cpu list syntax)."""
    cpus: set[int] = set()
    for part in value.split(","):
        matched = _CPU_RANGE.fullmatch(part)
        if matched is None:
            raise ValueError(f'{_quote(value)} is not a CPU set (expected e.g. "0-1" or "0,2")')
        lo = int(matched.group(1))
        hi = lo if matched.group(2) is None else int(matched.group(2))
        if lo > hi:
            raise ValueError(f"{_quote(value)}: range {lo}-{hi} runs backwards")
        if hi >= CPU_MAX:
            raise ValueError(f"{_quote(value)}: CPU {hi} is above {CPU_MAX - 1}")
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)


def parse_cpu_limit(value: str) -> int | frozenset[int]:
    """Incus's limits.cpu: a count of CPUs ("2"), or a set of CPU numbers ("0-1", "0,1", "3-3")."""
    if value.isascii() and value.isdigit():
        count = _parse_int(value, 1, CPU_MAX)
        return count
    return parse_cpu_set(value)


def is_cpu_limit(value: str) -> None:
    parse_cpu_limit(value)


@dataclass(frozen=True)
class CpuAllowance:
    """limits.cpu.allowance: a percentage is a relative share (Incus: a soft limit, the cgroup's
    CPU weight), "25ms/100ms" a hard cap of quota per period."""

    weight: int | None = None  # percent; 100 is the default share
    quota_us: int | None = None
    period_us: int | None = None


_ALLOWANCE_TIME = re.compile(r"([0-9]{1,7})ms/([0-9]{1,7})ms")


def parse_cpu_allowance(value: str) -> CpuAllowance:
    if value.endswith("%"):
        number = value[:-1]
        if not (number.isascii() and number.isdigit()):
            raise ValueError(f'{_quote(value)} is not a CPU allowance (expected e.g. "50%" or "25ms/100ms")')
        percent = _parse_int(number, 1, 10_000)
        return CpuAllowance(weight=percent)
    matched = _ALLOWANCE_TIME.fullmatch(value)
    if matched is None:
        raise ValueError(f'{_quote(value)} is not a CPU allowance (expected e.g. "50%" or "25ms/100ms")')
    quota, period = int(matched.group(1)), int(matched.group(2))
    if not 1 <= period <= 1000:
        raise ValueError(f"{_quote(value)}: the period must be 1ms-1000ms (the kernel's range)")
    if quota < 1:
        raise ValueError(f"{_quote(value)}: the quota must be at least 1ms")
    return CpuAllowance(quota_us=quota * 1000, period_us=period * 1000)


def is_cpu_allowance(value: str) -> None:
    parse_cpu_allowance(value)


def parse_memory_limit(value: str) -> int | Fraction:
    """Incus's limits.memory: bytes ("256MiB", "1GB") or a share of the host's memory ("50%",
    returned as the Fraction 1/2)."""
    if value.endswith("%"):
        try:
            number = Fraction(value[:-1]) if _QUANTITY.fullmatch(value[:-1]) else None
        except ValueError:
            number = None
        if number is None or not 0 < number <= 100:
            raise ValueError(f"{_quote(value)} is not a percentage of the host's memory (expected 1%-100%)")
        return number / 100
    size = parse_size(value)
    if size < MEMORY_MIN:
        raise ValueError(f"{_quote(value)} is below 1MiB")
    return size


def is_memory_limit(value: str) -> None:
    parse_memory_limit(value)


def is_processes_limit(value: str) -> None:
    _parse_int(value, 1, PROCESSES_MAX)
