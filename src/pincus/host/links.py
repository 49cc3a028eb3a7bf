"""Network links through rtnetlink: query, create (bridge, veth, VLAN), delete, change, move.

A network namespace is named by a file path (`/run/netns/<name>`, a bind mount of
`/proc/<pid>/ns/net`, ...); `netns=None` means the daemon's own namespace.

The messages are built here on host/netlink.py's client (its docstring says how sockets,
namespaces and the pool work, and why not pyroute2). A veth peer is born in its namespace
(`IFLA_NET_NS_FD` inside the peer): one request, nothing to move. Addresses, routes and TAPs
are in addresses.py, routes.py and taps.py, which find links by name through `index_of`.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from pincus.errors import HostError, InvalidError
from pincus.host import checks, netlink

# --------------------------------------------------------------------------- kernel ABI
# linux/rtnetlink.h, linux/if_link.h, linux/veth.h, linux/if_vlan.h


_IFLA_ADDRESS = 1
_IFLA_IFNAME = 3
_IFLA_MTU = 4
_IFLA_LINK = 5
_IFLA_MASTER = 10
_IFLA_TXQLEN = 13
_IFLA_OPERSTATE = 16
_IFLA_LINKINFO = 18
_IFLA_STATS64 = 23
_IFLA_GROUP = 27
_IFLA_NET_NS_FD = 28
_IFLA_EXT_MASK = 29
_IFLA_CARRIER = 33
_IFLA_INFO_KIND = 1
_IFLA_INFO_DATA = 2
_VETH_INFO_PEER = 1
_IFLA_VLAN_ID = 1
_IFLA_VLAN_FLAGS = 2
_VLAN_FLAG_GVRP = 0x2
_IFLA_BR_FORWARD_DELAY = 1
_IFLA_BR_STP_STATE = 5
_RTEXT_FILTER_SKIP_STATS = 1 << 3
_IFF_UP = 0x1
_OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")


_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFINFOMSG_SIZE = _IFINFOMSG.size  # where a link message's attributes start
_STATS64 = struct.Struct("=8Q")  # the first 8 counters of rtnl_link_stats64


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND ("bridge", "veth", "tun", ...); None for hardware and lo
    mac: str
    mtu: int
    up: bool  # administratively up (IFF_UP)
    operstate: str  # "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN", ...
    carrier: bool
    master: str | None
    txqlen: int
    group: int = 0  # IFLA_GROUP; see port_group


@dataclass(frozen=True)
class LinkStats:
    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int


# --------------------------------------------------------------------------- wire format


def ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = socket.AF_UNSPEC) -> bytes:
    """The struct ifinfomsg every link request starts with."""
    return _IFINFOMSG.pack(family, 0, index, flags, change)


def ifinfo_index(body: bytes) -> int:
    """The ifindex of a link message from the kernel."""
    return int(_IFINFOMSG.unpack_from(body)[2])


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


@dataclass(frozen=True)
class _Link:
    """A parsed RTM_NEWLINK message."""

    index: int
    flags: int
    attrs: dict[int, bytes]

    @classmethod
    def parse(cls, body: bytes) -> _Link:
        _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
        return cls(index, flags, netlink.attrs(body, _IFINFOMSG.size, len(body)))

    @property
    def name(self) -> str:
        return netlink.cstr(self.attrs.get(_IFLA_IFNAME, b""))

    def u32(self, atype: int) -> int:
        payload = self.attrs.get(atype)
        return netlink.as_u32(payload)

    def info(self, master: str | None) -> LinkInfo:
        kind = None
        linkinfo = self.attrs.get(_IFLA_LINKINFO)
        if linkinfo is not None:
            raw_kind = netlink.attrs(linkinfo, 0, len(linkinfo)).get(_IFLA_INFO_KIND)
            kind = netlink.cstr(raw_kind) if raw_kind is not None else None
        oper = (self.attrs.get(_IFLA_OPERSTATE) or b"\0")[0]
        return LinkInfo(
            index=self.index,
            name=self.name,
            kind=kind,
            mac=":".join(f"{b:02x}" for b in self.attrs.get(_IFLA_ADDRESS, b"")),
            mtu=self.u32(_IFLA_MTU),
            up=bool(self.flags & _IFF_UP),
            operstate=_OPERSTATES[oper] if oper < len(_OPERSTATES) else "UNKNOWN",
            carrier=bool((self.attrs.get(_IFLA_CARRIER) or b"\0")[0]),
            master=master,
            txqlen=self.u32(_IFLA_TXQLEN),
            group=self.u32(_IFLA_GROUP),
        )


# --------------------------------------------------------------------------- helpers


def _check_positive(what: str, value: int) -> None:
    if value <= 0:
        raise InvalidError(f"Invalid {what} {value}")


def _getlink(nl: netlink.Rtnl, name: str | None = None, index: int = 0, stats: bool = False) -> _Link:
    """The kernel's view of one link; raises netlink.NetlinkError(ENODEV) if there is none."""
    body = ifinfo(index)
    if name is not None:
        body += netlink.text(_IFLA_IFNAME, name)
    if not stats:
        body += netlink.u32(_IFLA_EXT_MASK, _RTEXT_FILTER_SKIP_STATS)
    replies = nl.request(netlink.RTM_GETLINK, body)
    if not replies:
        raise netlink.NetlinkError(errno.ENODEV, "")
    return _Link.parse(replies[0])


def index_of(nl: netlink.Rtnl, name: str) -> int:
    """The ifindex of `name`; raises netlink.NetlinkError(ENODEV) if there is no such link."""
    return _getlink(nl, name).index


def _info_with_master(nl: netlink.Rtnl, link: _Link) -> LinkInfo:
    master_index = link.u32(_IFLA_MASTER)
    master = None
    if master_index:
        try:
            master = _getlink(nl, index=master_index).name
        except netlink.NetlinkError as e:
            if e.errno != errno.ENODEV:  # the master went away between the two requests
                raise
    return link.info(master)


def _setlink(what: str, name: str, netns: str | None, *attrs: bytes) -> None:
    """Change attributes of the link called `name` (one request)."""
    checks.interface_name(name)
    with netlink.rtnl(what, netns) as nl:
        nl.request(netlink.RTM_NEWLINK, ifinfo() + netlink.text(_IFLA_IFNAME, name) + b"".join(attrs))


# --------------------------------------------------------------------------- on an open socket
# For host modules that make several requests in one go on one socket (tc.py, bridgeport.py):
# these raise netlink.NetlinkError, whose errno the caller may act on, and name nothing.


def lookup_link(nl: netlink.Rtnl, name: str, resolve_master: bool = True) -> LinkInfo | None:
    """The link called `name`, or None if there is none (or no link could have that name).
    Without `resolve_master` its master is not looked up (one request, `master` is None)."""
    try:
        checks.interface_name(name)
    except InvalidError:
        return None
    try:
        link = _getlink(nl, name)
    except netlink.NetlinkError as e:
        if e.errno == errno.ENODEV:
            return None
        raise
    return _info_with_master(nl, link) if resolve_master else link.info(None)


def add_link(
    nl: netlink.Rtnl,
    name: str,
    kind: str,
    up: bool = False,
    data: bytes = b"",
    parent: int = 0,
    group: int = 0,
) -> int:
    """A new link of `kind` (IFLA_INFO_DATA `data`, on link index `parent` if not 0, in link
    group `group` if not 0); EEXIST if the name is taken, EOPNOTSUPP if the kernel has no such kind.
    Returns its ifindex as the kernel echoes it (Linux 6.1 on), or 0 if it did not: then the caller
    must look the link up by name."""
    body = ifinfo(flags=_IFF_UP if up else 0, change=_IFF_UP) + netlink.text(_IFLA_IFNAME, name)
    if parent:
        body += netlink.u32(_IFLA_LINK, parent)
    if group:
        body += netlink.u32(_IFLA_GROUP, group)
    info = netlink.text(_IFLA_INFO_KIND, kind)
    if data:
        info += netlink.nest(_IFLA_INFO_DATA, data)
    replies = nl.request(
        netlink.RTM_NEWLINK,
        body + netlink.nest(_IFLA_LINKINFO, info),
        netlink.NLM_F_CREATE | netlink.NLM_F_EXCL | netlink.NLM_F_ECHO,
    )
    # The echo saves a lookup per IFB; only a link of this name counts (never trust a stray message).
    for reply in replies:
        link = _Link.parse(reply)
        if link.name == name:
            return link.index
    return 0


def set_up_by_index(nl: netlink.Rtnl, index: int) -> None:
    nl.request(netlink.RTM_NEWLINK, ifinfo(index, _IFF_UP, _IFF_UP))


def delete_by_index(nl: netlink.Rtnl, index: int) -> None:
    nl.request(netlink.RTM_DELLINK, ifinfo(index))


# Link groups of ports. A port that carries companion links (its IFB) leads a link group, and the
# companions join it, so that deleting the port deletes them all in ONE RTM_DELLINK: the kernel
# unregisters a whole group in one batch (rtnl_group_dellink -> unregister_netdevice_many), one
# RCU grace period instead of one per link. The group number is the port's ifindex with the top
# bit set: unique in the namespace while the port lives (ifindexes are handed out cyclically, not
# reused), so two NICs or two daemons never share one, and out of reach of iproute2, which refuses
# group numbers from 2**31 on, so an admin's `ip link set ... group N` never lands in one.
_PORT_GROUP_BIT = 0x80000000


def port_group(index: int) -> int:
    """The link group led by the port of ifindex `index`."""
    return _PORT_GROUP_BIT | index


def leads_group(link: LinkInfo) -> bool:
    """Whether `link` leads a port group of pincus's (its companions are deleted with it)."""
    return link.group == port_group(link.index)


def set_group_by_index(nl: netlink.Rtnl, index: int, group: int) -> None:
    nl.request(netlink.RTM_NEWLINK, ifinfo(index) + netlink.u32(_IFLA_GROUP, group))


# --------------------------------------------------------------------------- queries


def get_link(name: str, netns: str | None = None) -> LinkInfo | None:
    """The link called `name`, or None if there is none."""
    checks.interface_name(name)
    with netlink.rtnl(f'Failed to get link "{name}"', netns) as nl:
        return lookup_link(nl, name)


def list_links(netns: str | None = None) -> list[LinkInfo]:
    """Every link of the namespace, in ifindex order."""
    with netlink.rtnl("Failed to list links", netns) as nl:
        body = ifinfo() + netlink.u32(_IFLA_EXT_MASK, _RTEXT_FILTER_SKIP_STATS)
        found = [_Link.parse(b) for b in nl.request(netlink.RTM_GETLINK, body, netlink.NLM_F_DUMP)]
    names = {link.index: link.name for link in found}
    infos = [link.info(names.get(link.u32(_IFLA_MASTER))) for link in found]
    return sorted(infos, key=lambda info: info.index)


def link_stats(name: str, netns: str | None = None) -> LinkStats:
    """The kernel's 64-bit traffic counters of `name`."""
    checks.interface_name(name)
    what = f'Failed to read statistics of "{name}"'
    with netlink.rtnl(what, netns) as nl:
        stats = _stats(_getlink(nl, name, stats=True))
    if stats is None:
        raise HostError(f"{what}{netlink.where(netns)}: the kernel sent no counters")
    return stats


def _stats(link: _Link) -> LinkStats | None:
    raw = link.attrs.get(_IFLA_STATS64, b"")
    if len(raw) < _STATS64.size:
        return None
    rx_p, tx_p, rx_b, tx_b, rx_e, tx_e, rx_d, tx_d = _STATS64.unpack_from(raw)
    return LinkStats(
        rx_bytes=rx_b,
        rx_packets=rx_p,
        tx_bytes=tx_b,
        tx_packets=tx_p,
        rx_errors=rx_e,
        tx_errors=tx_e,
        rx_dropped=rx_d,
        tx_dropped=tx_d,
    )


def links_with_stats(nl: netlink.Rtnl) -> list[tuple[LinkInfo, LinkStats | None]]:
    """Every link of nl's namespace with its counters, in one dump (for whole-namespace views)."""
    found = [_Link.parse(b) for b in nl.request(netlink.RTM_GETLINK, ifinfo(), netlink.NLM_F_DUMP)]
    names = {link.index: link.name for link in found}
    return [(link.info(names.get(link.u32(_IFLA_MASTER))), _stats(link)) for link in found]


# --------------------------------------------------------------------------- creation


def create_bridge(name: str, mtu: int | None = None, hwaddr: str | None = None) -> None:
    """A Linux bridge in the daemon's namespace, STP off and forward delay 0."""
    checks.interface_name(name)
    body = ifinfo() + netlink.text(_IFLA_IFNAME, name)
    if mtu is not None:
        _check_positive("MTU", mtu)
        body += netlink.u32(_IFLA_MTU, mtu)
    if hwaddr is not None:
        body += netlink.attr(_IFLA_ADDRESS, _mac_bytes(checks.mac(hwaddr)))
    data = netlink.nest(
        _IFLA_INFO_DATA, netlink.u32(_IFLA_BR_STP_STATE, 0), netlink.u32(_IFLA_BR_FORWARD_DELAY, 0)
    )
    body += netlink.nest(_IFLA_LINKINFO, netlink.text(_IFLA_INFO_KIND, "bridge"), data)
    with netlink.rtnl(f'Failed to create bridge "{name}"', None) as nl:
        nl.request(netlink.RTM_NEWLINK, body, netlink.NLM_F_CREATE | netlink.NLM_F_EXCL)


def _create_veth(
    host_name: str,
    peer_name: str,
    peer_extra: bytes,
    peer_mac: str | None,
    mtu: int | None,
    txqlen: int | None,
    master: str | None = None,
) -> None:
    checks.interface_name(host_name)
    checks.interface_name(peer_name)
    if master is not None:
        checks.interface_name(master)
    both = b""  # attributes set on both ends
    if mtu is not None:
        _check_positive("MTU", mtu)
        both += netlink.u32(_IFLA_MTU, mtu)
    if txqlen is not None:
        _check_positive("TX queue length", txqlen)
        both += netlink.u32(_IFLA_TXQLEN, txqlen)
    peer = ifinfo() + netlink.text(_IFLA_IFNAME, peer_name) + both + peer_extra
    if peer_mac is not None:
        peer += netlink.attr(_IFLA_ADDRESS, _mac_bytes(checks.mac(peer_mac)))
    # The peer is a whole ifinfomsg (header and attributes) inside VETH_INFO_PEER.
    info = netlink.nest(_IFLA_INFO_DATA, netlink.attr(_VETH_INFO_PEER, peer))
    body = ifinfo() + netlink.text(_IFLA_IFNAME, host_name) + both
    body += netlink.nest(_IFLA_LINKINFO, netlink.text(_IFLA_INFO_KIND, "veth"), info)
    what = f'Failed to create veth "{host_name}"'
    if master is not None:
        what += f' on bridge "{master}"'
    with netlink.rtnl(what, None) as nl:
        if master is not None:
            # Born enslaved (the kernel's rtnl_newlink sets IFLA_MASTER once the link is
            # registered): one request and one socket fewer than create + set_master. A bridge
            # that refuses the port fails the whole request, and the kernel unregisters the pair.
            try:
                # An ioctl on the daemon's namespace, where the veth is made: cheaper than RTM_GETLINK.
                body += netlink.u32(_IFLA_MASTER, socket.if_nametoindex(master))
            except OSError as e:
                raise HostError(f"{what}: {netlink.reason(e)}") from e
        nl.request(netlink.RTM_NEWLINK, body, netlink.NLM_F_CREATE | netlink.NLM_F_EXCL)


def create_veth_into_netns(
    host_name: str,
    peer_name: str,
    netns: str,
    peer_mac: str | None = None,
    mtu: int | None = None,
    txqlen: int | None = None,
    master: str | None = None,
) -> None:
    """A veth pair whose peer is born inside `netns` (one request, nothing to move).

    `mtu` and `txqlen` apply to both ends; the host end stays in the daemon's namespace, enslaved
    to the bridge `master` if given (as set_master would, in the same request).
    """
    checks.interface_name(host_name)
    try:
        nsfd = netlink.open_netns(netns)
    except OSError as e:
        what = f'Failed to create veth "{host_name}": cannot open network namespace "{netns}"'
        raise HostError(f"{what}: {netlink.reason(e)}") from e
    try:
        _create_veth(host_name, peer_name, netlink.u32(_IFLA_NET_NS_FD, nsfd), peer_mac, mtu, txqlen, master)
    finally:
        os.close(nsfd)


def create_veth(
    host_name: str,
    peer_name: str,
    peer_mac: str | None = None,
    mtu: int | None = None,
    txqlen: int | None = None,
) -> None:
    """A veth pair with both ends in the daemon's namespace."""
    _create_veth(host_name, peer_name, b"", peer_mac, mtu, txqlen)


def create_vlan(name: str, parent: str, vid: int, gvrp: bool = False) -> None:
    """An 802.1Q sub-interface of parent (GVRP registration when asked)."""
    checks.interface_name(name)
    checks.interface_name(parent)
    if not 0 <= vid <= 4094:
        raise InvalidError(f"VLAN id {vid} is outside 0-4094")
    data = netlink.attr(_IFLA_VLAN_ID, struct.pack("=H", vid))
    if gvrp:
        data += netlink.attr(_IFLA_VLAN_FLAGS, struct.pack("=II", _VLAN_FLAG_GVRP, _VLAN_FLAG_GVRP))
    with netlink.rtnl(f'Failed to create VLAN {vid} interface "{name}" on "{parent}"', None) as nl:
        add_link(nl, name, "vlan", data=data, parent=index_of(nl, parent))


def delete_link(name: str, netns: str | None = None) -> None:
    """Delete `name`, and with it, in the same kernel batch, the links of the port group it leads
    (a NIC's IFB: see port_group); a link (or namespace) that is already gone is not an error."""
    checks.interface_name(name)
    if netns is not None and not os.path.exists(netns):
        return  # the namespace went away and took its links with it
    with netlink.rtnl(f'Failed to delete link "{name}"', netns) as nl:
        try:
            link = _getlink(nl, name)
            if link.u32(_IFLA_GROUP) == port_group(link.index):
                # Only members of this group go: the leader and what pincus put in its group.
                nl.request(netlink.RTM_DELLINK, ifinfo() + netlink.u32(_IFLA_GROUP, port_group(link.index)))
            else:
                nl.request(netlink.RTM_DELLINK, ifinfo(link.index))
        except netlink.NetlinkError as e:
            if e.errno != errno.ENODEV:
                raise


# --------------------------------------------------------------------------- settings


def set_master(name: str, bridge: str) -> None:
    """Enslave `name` to `bridge` (daemon's namespace)."""
    checks.interface_name(name)
    checks.interface_name(bridge)
    with netlink.rtnl(f'Failed to attach "{name}" to bridge "{bridge}"', None) as nl:
        body = ifinfo() + netlink.text(_IFLA_IFNAME, name) + netlink.u32(_IFLA_MASTER, index_of(nl, bridge))
        nl.request(netlink.RTM_NEWLINK, body)


def set_nomaster(name: str) -> None:
    """Release `name` from its bridge (daemon's namespace); no-op if it has none."""
    _setlink(f'Failed to detach "{name}" from its master', name, None, netlink.u32(_IFLA_MASTER, 0))


def _set_flags(what: str, name: str, netns: str | None, up: bool) -> None:
    checks.interface_name(name)
    with netlink.rtnl(what, netns) as nl:
        body = ifinfo(flags=_IFF_UP if up else 0, change=_IFF_UP) + netlink.text(_IFLA_IFNAME, name)
        nl.request(netlink.RTM_NEWLINK, body)


def set_up(name: str, netns: str | None = None) -> None:
    _set_flags(f'Failed to bring up "{name}"', name, netns, True)


def set_down(name: str, netns: str | None = None) -> None:
    _set_flags(f'Failed to bring down "{name}"', name, netns, False)


def set_mtu(name: str, mtu: int, netns: str | None = None) -> None:
    _check_positive("MTU", mtu)
    _setlink(f'Failed to set MTU {mtu} on "{name}"', name, netns, netlink.u32(_IFLA_MTU, mtu))


def set_mac(name: str, mac: str, netns: str | None = None) -> None:
    raw = _mac_bytes(checks.mac(mac))
    _setlink(
        f'Failed to set MAC address {mac.lower()} on "{name}"', name, netns, netlink.attr(_IFLA_ADDRESS, raw)
    )


def set_txqlen(name: str, qlen: int, netns: str | None = None) -> None:
    _check_positive("TX queue length", qlen)
    _setlink(
        f'Failed to set TX queue length {qlen} on "{name}"', name, netns, netlink.u32(_IFLA_TXQLEN, qlen)
    )


def rename_link(name: str, new_name: str, netns: str | None = None) -> None:
    """Rename a link (kernel 6.18 allows it while up; older ones answer "Device or resource busy")."""
    checks.interface_name(name)
    checks.interface_name(new_name)
    with netlink.rtnl(f'Failed to rename "{name}" to "{new_name}"', netns) as nl:
        nl.request(netlink.RTM_NEWLINK, ifinfo(index_of(nl, name)) + netlink.text(_IFLA_IFNAME, new_name))


def move_link_to_netns(
    name: str, netns: str | None, new_name: str | None = None, from_netns: str | None = None
) -> None:
    """Move `name` from `from_netns` into `netns`, renaming it to `new_name` there.

    None on either side means the daemon's own namespace, so moving a NIC back out of a
    container is `move_link_to_netns(name, None, from_netns=<container netns>)` (on this
    machine `/proc/1/ns/net` cannot be opened). One request; a link changing namespace
    is set down by the kernel.
    """
    checks.interface_name(name)
    if new_name is not None:
        checks.interface_name(new_name)
    what = f'Failed to move "{name}" from {netlink.ns_text(from_netns)} to {netlink.ns_text(netns)}'
    try:
        nsfd = netlink.open_netns(netns if netns is not None else "/proc/self/ns/net")
    except OSError as e:
        raise HostError(f"{what}: cannot open the network namespace: {netlink.reason(e)}") from e
    try:
        with netlink.rtnl(what, from_netns, say_where=False) as nl:
            if new_name is None:
                body = ifinfo() + netlink.text(_IFLA_IFNAME, name)
            else:
                # Addressed by index, IFLA_IFNAME is the name the link takes in its new home.
                body = ifinfo(index_of(nl, name)) + netlink.text(_IFLA_IFNAME, new_name)
            nl.request(netlink.RTM_NEWLINK, body + netlink.u32(_IFLA_NET_NS_FD, nsfd))
    finally:
        os.close(nsfd)
