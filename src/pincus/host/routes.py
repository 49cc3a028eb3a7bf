"""Routes through rtnetlink: add and delete main-table routes out of a link, list every route.

A network namespace is named by a file path; `netns=None` means the daemon's own namespace
(links.py says more).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

from pincus.errors import InvalidError
from pincus.host import checks, links, netlink

# linux/rtnetlink.h
_RTM_NEWROUTE = 24
_RTM_DELROUTE = 25
_RTM_GETROUTE = 26
_RTA_DST = 1
_RTA_OIF = 4
_RTA_GATEWAY = 5
_RTA_TABLE = 15
_RT_TABLE_MAIN = 254
_RTPROT_BOOT = 3
_RT_SCOPE_UNIVERSE = 0
_RT_SCOPE_LINK = 253
_RT_SCOPE_NOWHERE = 255
_RTN_UNICAST = 1
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags


def _route(
    nl: netlink.Rtnl, dst_cidr: str, dev: str, via: str | None, proto: int, scope: int, rtype: int
) -> bytes:
    try:
        dst = ipaddress.ip_network(dst_cidr)
        gateway = ipaddress.ip_address(via) if via is not None else None
    except ValueError as e:
        raise InvalidError(f'Invalid route "{dst_cidr}" via "{via}": {e}') from e
    if gateway is not None and gateway.version != dst.version:
        raise InvalidError(f'Invalid route "{dst_cidr}": gateway {via} is of another family')
    family = netlink.address_family(dst.version)
    body = _RTMSG.pack(family, dst.prefixlen, 0, 0, _RT_TABLE_MAIN, proto, scope, rtype, 0)
    if dst.prefixlen:
        body += netlink.attr(_RTA_DST, dst.network_address.packed)
    body += netlink.u32(_RTA_OIF, links.index_of(nl, dev))
    if gateway is not None:
        body += netlink.attr(_RTA_GATEWAY, gateway.packed)
    return body


def add_route(dst_cidr: str, dev: str, via: str | None = None, netns: str | None = None) -> None:
    """Route `dst_cidr` out of `dev` (through `via` if given) in the main table."""
    checks.interface_name(dev)
    with netlink.rtnl(f'Failed to add route {dst_cidr} dev "{dev}"', netns) as nl:
        scope = _RT_SCOPE_UNIVERSE if via is not None else _RT_SCOPE_LINK
        body = _route(nl, dst_cidr, dev, via, _RTPROT_BOOT, scope, _RTN_UNICAST)
        nl.request(_RTM_NEWROUTE, body, netlink.NLM_F_CREATE | netlink.NLM_F_EXCL)


def delete_route(dst_cidr: str, dev: str, netns: str | None = None) -> None:
    """Remove the main-table route to `dst_cidr` out of `dev`; a missing one is not an error."""
    checks.interface_name(dev)
    with netlink.rtnl(f'Failed to delete route {dst_cidr} dev "{dev}"', netns) as nl:
        try:
            # Scope "nowhere", protocol and type 0 match a route of any scope, origin and type.
            body = _route(nl, dst_cidr, dev, None, 0, _RT_SCOPE_NOWHERE, 0)
            nl.request(_RTM_DELROUTE, body)
        except netlink.NetlinkError as e:
            # No such route, or no such device (its routes went with it).
            if e.errno not in (errno.ESRCH, errno.ENODEV):
                raise


def list_routes(netns: str | None = None) -> list[str]:
    """The destination (CIDR) of every route in every table, both families; a default is /0."""
    out: list[str] = []
    with netlink.rtnl("Failed to list routes", netns) as nl:
        for family in (socket.AF_INET, socket.AF_INET6):
            # Table 0 and no RTM_F_CLONED: every table, without the IPv6 route cache.
            head = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
            for body in nl.request(_RTM_GETROUTE, head, netlink.NLM_F_DUMP):
                rfamily, dst_len = body[0], body[1]
                if rfamily != family:
                    continue
                raw = netlink.attrs(body, _RTMSG.size).get(_RTA_DST)
                zero = ipaddress.ip_address(0) if family == socket.AF_INET else ipaddress.IPv6Address(0)
                address = ipaddress.ip_address(raw) if raw else zero
                out.append(str(ipaddress.ip_network((address, dst_len), strict=False)))
    return out


def routes_of(dev: str, netns: str | None = None) -> list[str]:
    """The destination (CIDR) of every main-table route out of `dev`, both families."""
    checks.interface_name(dev)
    out: list[str] = []
    with netlink.rtnl(f'Failed to list routes of "{dev}"', netns) as nl:
        index = links.index_of(nl, dev)
        for family in (socket.AF_INET, socket.AF_INET6):
            head = _RTMSG.pack(family, 0, 0, 0, _RT_TABLE_MAIN, 0, 0, 0, 0)
            for body in nl.request(_RTM_GETROUTE, head, netlink.NLM_F_DUMP):
                found = netlink.attrs(body, _RTMSG.size)
                oif = found.get(_RTA_OIF)
                table = int.from_bytes(found[_RTA_TABLE], "little") if _RTA_TABLE in found else body[4]
                if body[0] != family or table != _RT_TABLE_MAIN or oif is None:
                    continue
                if int.from_bytes(oif[:4], "little") != index:
                    continue
                raw = found.get(_RTA_DST)
                zero = ipaddress.ip_address(0) if family == socket.AF_INET else ipaddress.IPv6Address(0)
                address = ipaddress.ip_address(raw) if raw else zero
                out.append(str(ipaddress.ip_network((address, body[1]), strict=False)))
    return out
