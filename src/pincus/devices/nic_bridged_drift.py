"""The drift check of a bridged NIC: what its port owns on the host against the kernel's view,
and the repair that re-applies BridgedNic's own steps for what is missing or wrong."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

from pincus.config.keys import CONTAINER
from pincus.devices.base import NicRun
from pincus.host import (
    bridgeport,
    dnsmasq_hosts,
    links,
    nft_ports,
    nft_runner,
    routes,
    sysfs,
    tc,
)
from pincus.ownership import Difference, Owned
from pincus.reverter import Reverter
from pincus.state import State

if TYPE_CHECKING:
    from pincus.devices.nic_bridged import BridgedNic, PortSettings


def _running_port(nic: BridgedNic) -> tuple[str, PortSettings] | None:
    host_name = nic.instance.volatile(nic.vkey("host_name"))
    if not host_name or not nic.attached():
        return None
    return host_name, nic.settings(nic.config, host_name, nic.hwaddr())


def _uses_ifb(nic: BridgedNic, s: PortSettings) -> bool:
    return (
        s.limits is not None
        and s.limits.egress_bps is not None
        and not nic.state.features.get("tc_police", False)
    )


def owned(nic: BridgedNic) -> list[Owned]:
    port = _running_port(nic)
    if port is None:
        return []
    host_name, s = port
    out = [Owned("veth" if nic.instance.type == CONTAINER else "tap", host_name)]
    if s.filter is not None:
        table = f"bridge {nic.host(nft_runner.table_name, nic.state.tag)}"
        elements = nic.host(nft_ports.nic_filter_elements, s.filter)
        out += [Owned("nft element", f"{table} {e}") for e in elements]
    if s.limits is not None:
        out += [Owned("tc qdisc", f"{where} {kind} on {host_name}") for where, kind in _qdiscs(s)]
        if _uses_ifb(nic, s):
            out.append(Owned("ifb", nic.ifb_name(host_name)))
    if s.isolated:
        out.append(Owned("port isolation", host_name))
    out += [Owned("route", f"{r} dev {nic.parent}") for r in s.routes]
    net = nic.network()
    if net is not None and s.static != (None, None):
        path = nic.host(dnsmasq_hosts.static_allocation_file, net.dnsmasq_dir, nic.nic_id)
        out.append(Owned("hosts file", str(path)))
    return out


def _qdiscs(s: PortSettings) -> list[tuple[str, str]]:
    """(root or ingress, kind) of the qdiscs s's limits put on the port."""
    if s.limits is None:
        return []
    out = [("root", "tbf")] if s.limits.ingress_bps is not None else []
    if s.limits.egress_bps is not None or s.limits.priority is not None:
        out.append(("ingress", "ingress"))
    return out


def check(nic: BridgedNic) -> list[Difference]:
    port = _running_port(nic)
    if port is None:
        return []
    host_name, s = port
    out: list[Difference] = []

    def differs(kind: str, name: str, expected: str, found: str, repairable: bool = True) -> None:
        out.append(Difference(nic.owner, kind, name, expected, found, repairable))

    parent_there = nic.host(sysfs.interface_exists, nic.parent)
    if not parent_there and nic.network() is None:
        # The admin's bridge: reported, never made (a managed one is its network's to report).
        differs("bridge", nic.parent, "present (not pincus's: never re-made)", "missing", False)
    link = nic.host(links.get_link, host_name)
    if link is None:
        container = nic.instance.type == CONTAINER
        # A running QEMU holds the TAP's file: a new TAP would reach no guest.
        differs(
            "veth" if container else "tap",
            host_name,
            f"a port of {nic.parent}",
            "missing" if container else "missing (restart the instance to re-make it)",
            container and (parent_there or nic.network() is not None),
        )
        return out  # what sat on it went with it; its repair re-applies all of it
    if parent_there and link.master != nic.parent:
        differs("bridge port", host_name, f"a port of {nic.parent}", f"master {link.master or 'none'}")
    if link.up != s.connected:
        differs("interface state", host_name, "up" if s.connected else "down", "up" if link.up else "down")
    if "mtu" in nic.config and link.mtu != int(nic.config["mtu"]):
        differs("mtu", host_name, nic.config["mtu"], str(link.mtu))
    _check_filter(nic, host_name, s, differs)
    _check_limits(nic, host_name, s, differs)
    if link.master == nic.parent and nic.host(bridgeport.port_isolated, host_name) != s.isolated:
        differs("port isolation", host_name, "on" if s.isolated else "off", "off" if s.isolated else "on")
    if s.routes and parent_there:
        present = set(nic.host(routes.routes_of, nic.parent))
        for route in s.routes:
            if str(ipaddress.ip_network(route, strict=False)) not in present:
                differs("route", route, f"out of {nic.parent}", "missing")
    _check_static(nic, s, differs)
    return out


def _check_filter(nic: BridgedNic, host_name: str, s: PortSettings, differs: Callable[..., None]) -> None:
    want = nic.host(nft_ports.nic_filter_elements, s.filter) if s.filter is not None else []
    have = nic.host(nft_ports.port_filter_elements, nic.state.tag, host_name) or []
    table = f"bridge {nic.host(nft_runner.table_name, nic.state.tag)}"
    for element in sorted(set(want) - set(have)):
        differs("nft element", f"{table} {element}", "present", "missing")
    for element in sorted(set(have) - set(want)):
        differs("nft element", f"{table} {element}", "absent", "present")


def _check_limits(nic: BridgedNic, host_name: str, s: PortSettings, differs: Callable[..., None]) -> None:
    if s.limits is None:
        return
    found = nic.host(tc.qdiscs, host_name)
    for where, kind in _qdiscs(s):
        if found.get(where) != kind:
            differs("tc qdisc", f"{where} on {host_name}", kind, found.get(where) or "none")
    if _uses_ifb(nic, s):
        ifb = nic.ifb_name(host_name)
        link = nic.host(links.get_link, ifb)
        if link is None:
            differs("ifb", ifb, "an IFB", "missing")
        elif link.kind != "ifb":
            # Someone else's device under our IFB's name: reported, never replaced.
            differs("ifb", ifb, "an IFB", f"a {link.kind or 'hardware'} interface", False)
        elif (root := nic.host(tc.qdiscs, ifb).get("root")) != "tbf":
            differs("tc qdisc", f"root on {ifb}", "tbf", root or "none")


def _check_static(nic: BridgedNic, s: PortSettings, differs: Callable[..., None]) -> None:
    net = nic.network()
    if net is None or s.static == (None, None):
        return
    path = nic.host(dnsmasq_hosts.static_allocation_file, net.dnsmasq_dir, nic.nic_id)
    mine = [a for a in nic.host(dnsmasq_hosts.static_allocations, net.dnsmasq_dir) if a.nic_id == nic.nic_id]
    want = (s.hwaddr.lower(), s.static[0], s.static[1])
    if not mine:
        differs("hosts file", str(path), " ".join(x for x in want if x), "missing")
    elif (mine[0].mac, mine[0].ipv4, mine[0].ipv6) != want:
        got = (mine[0].mac, mine[0].ipv4, mine[0].ipv6)
        differs("hosts file", str(path), " ".join(x for x in want if x), " ".join(x for x in got if x))


def repair(nic: BridgedNic, found: list[Difference]) -> list[NicRun]:
    port = _running_port(nic)
    kinds = {d.kind for d in found if d.repairable}
    if port is None or not kinds:
        return []
    host_name, s = port
    if kinds & {"veth", "tap"}:
        return _remake_port(nic, host_name, s)
    if "bridge port" in kinds:
        nic.host(links.set_master, host_name, nic.parent)
        nic._apply_vlans(host_name, s)  # a new port starts with the bridge's defaults
        nic._apply_isolation(host_name, s)
    elif "port isolation" in kinds:
        nic._apply_isolation(host_name, s)
    if "mtu" in kinds:
        nic.host(links.set_mtu, host_name, int(nic.config["mtu"]))
    if "interface state" in kinds:
        nic._apply_link(host_name, s)
    if "nft element" in kinds:
        nic._apply_filter(host_name, s)
    if kinds & {"tc qdisc", "ifb"}:
        nic._apply_limits(host_name, s)
    missing = {d.name for d in found if d.kind == "route"}
    for route in s.routes:
        if route in missing:
            nic.host(routes.add_route, route, nic.parent, via=nic._route_via(route, s))
    if "hosts file" in kinds:
        nic._apply_static(s)
    return []


def _remake_port(nic: BridgedNic, host_name: str, s: PortSettings) -> list[NicRun]:
    """The port as start makes it (the peer born inside the container again), with all it carries."""
    hwaddr, mtu = s.hwaddr, nic.mtu()
    with Reverter() as undo:
        nic.make_port(host_name, mtu, s, undo)
        undo.success()
    return [NicRun(device=nic.name, hwaddr=hwaddr, host_name=host_name, name=nic.inside_name, mtu=mtu)]


SHARED_OWNER = "daemon"


def check_shared(state: State) -> list[Difference]:
    """The daemon's bridge table, while it exists, holds its fixed chains and rules (a missing
    table is seen as the filtered NICs' missing elements, whose repair makes it again)."""
    have = state.host(nft_ports.listed_bridge_table_rule_counts, state.tag)
    if have is None:
        return []
    want = state.host(nft_ports.bridge_table_rule_counts)
    table = f"bridge {state.host(nft_runner.table_name, state.tag)}"
    return [
        Difference(
            SHARED_OWNER,
            "nft chain",
            f"{table} {chain}",
            f"{want[chain]} rules",
            f"{have[chain]} rules" if chain in have else "missing",
        )
        for chain in sorted(want)
        if have.get(chain) != want[chain]
    ]


def repair_shared(state: State, found: list[Difference]) -> None:
    if found:
        state.host(nft_ports.ensure_bridge_table, state.tag)  # flushes and re-adds the fixed chains' rules
