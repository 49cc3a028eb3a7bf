"""IP addresses of links through rtnetlink: list, add, remove.

A network namespace is named by a file path; `netns=None` means the daemon's own namespace
(links.py says more).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass

from pincus.errors import InvalidError
from pincus.host import checks, links, netlink

# linux/rtnetlink.h, linux/if_addr.h
_RTM_NEWADDR = 20
_RTM_DELADDR = 21
_RTM_GETADDR = 22
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index


@dataclass(frozen=True)
class _Addr:
    """A parsed RTM_NEWADDR message."""

    family: int
    prefixlen: int
    index: int
    attrs: dict[int, bytes]
    scope: int = 0

    @classmethod
    def parse(cls, body: bytes) -> _Addr:
        family, prefixlen, _flags, scope, index = _IFADDRMSG.unpack_from(body)
        return cls(family, prefixlen, index, netlink.attrs(body, _IFADDRMSG.size, len(body)), scope)

    def info(self) -> AddressInfo:
        address, _, prefix = self.text().partition("/")
        family = "inet6" if self.family == socket.AF_INET6 else "inet"
        return AddressInfo(family, address, int(prefix), _SCOPES.get(self.scope, str(self.scope)))

    def text(self) -> str:
        # For IPv4 IFA_LOCAL is the address (IFA_ADDRESS is the peer on point-to-point links).
        raw = self.attrs.get(_IFA_LOCAL) or self.attrs.get(_IFA_ADDRESS, b"")
        return f"{socket.inet_ntop(self.family, raw)}/{self.prefixlen}"


def _addresses(nl: netlink.Rtnl, index: int) -> list[_Addr]:
    # With strict checking the kernel sends the addresses of this link only.
    body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, index)
    found = [_Addr.parse(b) for b in nl.request(_RTM_GETADDR, body, netlink.NLM_F_DUMP)]
    return [a for a in found if a.index == index]


def all_addresses(netns: str | None = None) -> list[str]:
    """Every address of every link as "addr/prefixlen", both families (one dump)."""
    body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    with netlink.rtnl("Failed to list addresses", netns) as nl:
        return [_Addr.parse(b).text() for b in nl.request(_RTM_GETADDR, body, netlink.NLM_F_DUMP)]


@dataclass(frozen=True)
class AddressInfo:
    family: str  # "inet" | "inet6"
    address: str
    prefixlen: int
    scope: str  # "global" | "site" | "link" | "local", as Incus names the kernel's scopes


_SCOPES = {0: "global", 200: "site", 253: "link", 254: "local"}


def link_address_info(name: str, netns: str | None = None) -> list[AddressInfo]:
    """Every address on `name` with its family and the kernel's scope."""
    checks.interface_name(name)
    with netlink.rtnl(f'Failed to list addresses of "{name}"', netns) as nl:
        return [a.info() for a in _addresses(nl, links.index_of(nl, name))]


def address_info_by_link(nl: netlink.Rtnl) -> dict[int, list[AddressInfo]]:
    """Every address of nl's namespace by link index, in one dump (for whole-namespace views)."""
    body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    out: dict[int, list[AddressInfo]] = {}
    for b in nl.request(_RTM_GETADDR, body, netlink.NLM_F_DUMP):
        a = _Addr.parse(b)
        out.setdefault(a.index, []).append(a.info())
    return out


def link_addresses(name: str, netns: str | None = None) -> list[str]:
    """Every address on `name` as "addr/prefixlen", IPv6 link-local ones included."""
    checks.interface_name(name)
    with netlink.rtnl(f'Failed to list addresses of "{name}"', netns) as nl:
        return [a.text() for a in _addresses(nl, links.index_of(nl, name))]


def global_addresses(name: str, netns: str | None = None) -> list[str]:
    """The addresses of a link that are neither link-local nor loopback."""
    out = []
    for cidr in link_addresses(name, netns):
        ip = ipaddress.ip_interface(cidr).ip
        if not (ip.is_link_local or ip.is_loopback):
            out.append(cidr)
    return out


def _interface(cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        return ipaddress.ip_interface(cidr)
    except ValueError as e:
        raise InvalidError(f'Invalid address "{cidr}"') from e


def _message(index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bytes:
    """An RTM_NEWADDR/RTM_DELADDR body for IFACE on link INDEX."""
    head = _IFADDRMSG.pack(netlink.address_family(iface.version), iface.network.prefixlen, 0, 0, index)
    raw = iface.ip.packed
    return head + netlink.attr(_IFA_LOCAL, raw) + netlink.attr(_IFA_ADDRESS, raw)


def add_address(name: str, cidr: str, netns: str | None = None) -> None:
    """Add "addr/prefixlen" to `name`; an address already present is an error."""
    checks.interface_name(name)
    iface = _interface(cidr)
    with netlink.rtnl(f'Failed to add address {cidr} to "{name}"', netns) as nl:
        body = _message(links.index_of(nl, name), iface)
        nl.request(_RTM_NEWADDR, body, netlink.NLM_F_CREATE | netlink.NLM_F_EXCL)


def delete_address(name: str, cidr: str, netns: str | None = None) -> None:
    """Remove one "addr/prefixlen" from `name`; an address or link already gone is fine."""
    checks.interface_name(name)
    iface = _interface(cidr)
    with netlink.rtnl(f'Failed to remove address {cidr} from "{name}"', netns) as nl:
        try:
            nl.request(_RTM_DELADDR, _message(links.index_of(nl, name), iface))
        except netlink.NetlinkError as e:
            if e.errno not in (errno.ENODEV, errno.EADDRNOTAVAIL):
                raise
