"""Settings of one bridge port (daemon's namespace): isolation and VLAN membership, over rtnetlink.

Both are AF_BRIDGE link requests addressed by ifindex, as bridge(8) sends them: isolation is
IFLA_BRPORT_ISOLATED inside IFLA_PROTINFO; VLANs are IFLA_BRIDGE_VLAN_INFO entries inside
IFLA_AF_SPEC, added with RTM_SETLINK and removed with RTM_DELLINK. The kernel has no single-port
query for VLANs: they come from a dump of every bridge port (RTEXT_FILTER_BRVLAN).
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from pincus.errors import HostError, InvalidError
from pincus.host import checks, links, netlink

# linux/if_link.h, linux/if_bridge.h, linux/rtnetlink.h
_IFLA_PROTINFO = 12
_IFLA_AF_SPEC = 26
_IFLA_EXT_MASK = 29
_IFLA_BRPORT_ISOLATED = 33
_IFLA_BRIDGE_VLAN_INFO = 2
_BRIDGE_VLAN_INFO_PVID = 1 << 1
_BRIDGE_VLAN_INFO_UNTAGGED = 1 << 2
_RTEXT_FILTER_BRVLAN = 1 << 1
_AF_BRIDGE = socket.AF_BRIDGE
_VLAN_INFO = struct.Struct("=HH")  # struct bridge_vlan_info: flags, vid


@dataclass(frozen=True)
class PortVlan:
    vid: int
    pvid: bool  # untagged frames coming in join this VLAN
    untagged: bool  # frames of this VLAN leave the port without a tag


def set_port_isolated(port: str, isolated: bool) -> None:
    """Isolated ports forward only to non-isolated ports of their bridge."""
    checks.interface_name(port)
    what = f'Failed to set isolation of bridge port "{port}"'
    with netlink.rtnl(what, None) as nl:
        body = links.ifinfo(links.index_of(nl, port), family=_AF_BRIDGE)
        body += netlink.nest(_IFLA_PROTINFO, netlink.u8(_IFLA_BRPORT_ISOLATED, 1 if isolated else 0))
        try:
            nl.request(netlink.RTM_SETLINK, body)
        except netlink.NetlinkError as e:
            if e.errno == errno.EOPNOTSUPP:  # the kernel's answer for a link on no bridge
                raise HostError(f"{what}: it is not a bridge port") from e
            raise


def port_isolated(port: str) -> bool:
    """Whether the bridge port is isolated (read back by the drift check)."""
    checks.interface_name(port)
    what = f'Failed to read isolation of bridge port "{port}"'
    with netlink.rtnl(what, None) as nl:
        index = links.index_of(nl, port)
        for reply in nl.request(netlink.RTM_GETLINK, links.ifinfo(family=_AF_BRIDGE), netlink.NLM_F_DUMP):
            if links.ifinfo_index(reply) != index:
                continue
            info = netlink.attrs(reply, links.IFINFOMSG_SIZE).get(_IFLA_PROTINFO, b"")
            flag = netlink.attrs(info).get(_IFLA_BRPORT_ISOLATED, b"\0")
            return flag[:1] != b"\0"
    raise HostError(f"{what}: it is not a bridge port")


def _port_vlans(nl: netlink.Rtnl, index: int) -> list[PortVlan]:
    body = links.ifinfo(family=_AF_BRIDGE) + netlink.u32(_IFLA_EXT_MASK, _RTEXT_FILTER_BRVLAN)
    for reply in nl.request(netlink.RTM_GETLINK, body, netlink.NLM_F_DUMP):
        if links.ifinfo_index(reply) != index:
            continue
        spec = netlink.attrs(reply, links.IFINFOMSG_SIZE).get(_IFLA_AF_SPEC, b"")
        found = []
        for atype, payload in netlink.attr_list(spec):
            if atype == _IFLA_BRIDGE_VLAN_INFO and len(payload) >= _VLAN_INFO.size:
                flags, vid = _VLAN_INFO.unpack_from(payload)
                pvid, untagged = (
                    bool(flags & _BRIDGE_VLAN_INFO_PVID),
                    bool(flags & _BRIDGE_VLAN_INFO_UNTAGGED),
                )
                found.append(PortVlan(vid, pvid, untagged))
        return found
    return []


def set_port_vlans(port: str, untagged: int | None, tagged: list[int]) -> None:
    """Make the port a member of exactly these VLANs (untagged = PVID, egress untagged).

    The wanted VLANs are set first (re-adding a VLAN rewrites its flags), then the others
    removed, so the port is never without the VLANs it keeps.
    """
    checks.interface_name(port)
    wanted: dict[int, int] = {vid: 0 for vid in tagged}
    if untagged is not None:
        wanted[untagged] = _BRIDGE_VLAN_INFO_PVID | _BRIDGE_VLAN_INFO_UNTAGGED
    for vid in wanted:
        if not 1 <= vid <= 4094:
            raise InvalidError(f"VLAN id {vid} is outside 1-4094")
    with netlink.rtnl(f'Failed to set VLANs of bridge port "{port}"', None) as nl:
        index = links.index_of(nl, port)
        stale = [v.vid for v in _port_vlans(nl, index) if v.vid not in wanted]
        if wanted:
            nl.request(netlink.RTM_SETLINK, _vlan_request(index, wanted))
        if stale:
            nl.request(netlink.RTM_DELLINK, _vlan_request(index, dict.fromkeys(stale, 0)))


def _vlan_request(index: int, vlans: dict[int, int]) -> bytes:
    entries = (netlink.attr(_IFLA_BRIDGE_VLAN_INFO, _VLAN_INFO.pack(f, vid)) for vid, f in vlans.items())
    return links.ifinfo(index, family=_AF_BRIDGE) + netlink.nest(_IFLA_AF_SPEC, *entries)
