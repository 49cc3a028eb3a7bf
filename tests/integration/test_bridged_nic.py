"""The bridged NIC in full on the real kernel: filtering, isolation, limits, routes, live update."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import bridged_container, config, in_container, ping, tcp_rate
from tests.pincus_testlib import Daemon


def _filtered_ports(daemon: Daemon) -> list[str]:
    """Ports with any filtering: the elements of the `filtered` set of pincus's bridge table."""
    doc = json.loads(daemon.ns.run("nft", "-j", "list", "ruleset").stdout)
    sets = [x["set"] for x in doc["nftables"] if "set" in x and x["set"]["family"] == "bridge"]
    return [e for s in sets if s["name"] == "filtered" for e in s.get("elem", [])]


def test_spoofing_is_dropped_with_filtering_and_passes_without(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    keys = ("security.ipv4_filtering=true", "ipv4.address=10.250.20.2",
            "security.ipv6_filtering=true", "ipv6.address=fd42:250:20::2")  # fmt: skip
    host1 = bridged_container(daemon, "c1", br, "10.250.20.2", "fd42:250:20::2", *keys)
    bridged_container(daemon, "c2", br, "10.250.20.3", "fd42:250:20::3")
    assert host1 in _filtered_ports(daemon)
    # Legitimate traffic passes.
    assert ping(daemon, "c1", "10.250.20.3")
    assert ping(daemon, "c1", "fd42:250:20::3")
    # Another IPv4 source is dropped.
    in_container(daemon, "c1", "ip", "addr", "add", "10.250.20.9/24", "dev", "eth0")
    spoofed_ping = (
        "exec",
        "c1",
        "--",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "-I",
        "10.250.20.9",
        "10.250.20.3",
    )
    assert daemon.cli(*spoofed_ping, check=False).returncode != 0
    # Another IPv6 source is dropped.
    in_container(daemon, "c1", "ip", "addr", "add", "fd42:250:20::99/64", "dev", "eth0", "nodad")
    r = daemon.cli("exec", "c1", "--", "busybox", "ping", "-6", "-c", "1", "-W", "2", "-I", "fd42:250:20::99",
                   "fd42:250:20::3", check=False)  # fmt: skip
    assert r.returncode != 0
    # A changed MAC is dropped (IP filtering implies MAC filtering).
    in_container(daemon, "c1", "ip", "link", "set", "eth0", "address", "10:66:6a:00:00:99")
    daemon.ns.run("ip", "neigh", "flush", "all", check=False)
    in_container(daemon, "c2", "ip", "neigh", "flush", "all")
    assert not ping(daemon, "c1", "10.250.20.3")
    # Filtering off, live: everything passes, the chain is gone.
    daemon.cli("config", "device", "set", "c1", "eth0", "security.ipv4_filtering=false", "ipv4.address=",
               "security.ipv6_filtering=false", "ipv6.address=")  # fmt: skip
    assert host1 not in _filtered_ports(daemon)
    for name in ("c1", "c2"):  # forget the neighbour lookups that failed while spoofing
        in_container(daemon, name, "ip", "neigh", "flush", "all")
    assert ping(daemon, "c1", "10.250.20.3")
    assert daemon.cli(*spoofed_ping, check=False).returncode == 0


def test_port_isolation(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    h1 = bridged_container(daemon, "c1", br, "10.250.21.2", None, "security.port_isolation=true")
    bridged_container(daemon, "c2", br, "10.250.21.3", None, "security.port_isolation=true")
    bridged_container(daemon, "c3", br, "10.250.21.4")
    assert daemon.ns.run("cat", f"/sys/class/net/{h1}/brport/isolated").stdout.strip() == "1"
    assert not ping(daemon, "c1", "10.250.21.3")
    assert ping(daemon, "c1", "10.250.21.4")
    assert ping(daemon, "c2", "10.250.21.4")
    daemon.cli("config", "device", "set", "c1", "eth0", "security.port_isolation=false")
    assert daemon.ns.run("cat", f"/sys/class/net/{h1}/brport/isolated").stdout.strip() == "0"
    for name in ("c1", "c2"):  # forget the failed neighbour lookups of the isolated attempt
        in_container(daemon, name, "ip", "neigh", "flush", "all")
    assert ping(daemon, "c1", "10.250.21.3")


def _tc_rates(daemon: Daemon, dev: str) -> list[int]:
    doc = json.loads(daemon.ns.run("tc", "-j", "qdisc", "show", "dev", dev).stdout)
    return [q["options"]["rate"] for q in doc if q.get("kind") == "tbf"]


def test_limits_routes_queue_and_connected_update_live(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    daemon.ns.ip("addr", "add", "10.250.22.1/24", "dev", br)  # the host's side of the routes' next hop
    host = bridged_container(daemon, "c1", br, "10.250.22.2", None, "limits.ingress=10Mbit",
                             "limits.egress=20Mbit", "ipv4.address=10.250.22.2",
                             "security.ipv4_filtering=true", "ipv4.routes=10.250.99.0/24")  # fmt: skip
    assert _tc_rates(daemon, host) == [1_250_000]  # tc reports bytes per second
    ifbs = [link["ifname"] for link in daemon.ns.ipj("-d", "link", "show") if link.get("linkinfo", {}).get(
        "info_kind") == "ifb"]  # fmt: skip
    assert len(ifbs) == 1 and not ifbs[0].startswith("ifb")
    assert _tc_rates(daemon, ifbs[0]) == [2_500_000]
    routes = daemon.ns.ipj("route", "show", "10.250.99.0/24")
    assert routes and routes[0]["dev"] == br and routes[0]["gateway"] == "10.250.22.2"

    daemon.cli("config", "device", "set", "c1", "eth0", "limits.ingress=5Mbit", "limits.egress=",
               "ipv4.routes=10.250.98.0/24", "queue.tx.length=321", "connected=false")  # fmt: skip
    assert _tc_rates(daemon, host) == [625_000]
    assert not [x for x in daemon.ns.ipj("-d", "link", "show") if x["ifname"] in ifbs]
    assert daemon.ns.ipj("route", "show", "10.250.99.0/24") == []
    assert daemon.ns.ipj("route", "show", "10.250.98.0/24")
    link = daemon.ns.link(host)
    assert link is not None and link["txqlen"] == 321 and "UP" not in link["flags"]
    inside = json.loads(in_container(daemon, "c1", "ip", "-j", "link", "show", "eth0"))[0]
    assert inside["txqlen"] == 321 and "NO-CARRIER" in inside["flags"]

    # A failed update (tc refuses a rate under 1 kbit) leaves the old state and config.
    before = config(daemon, "c1")
    msg = daemon.fails("config", "device", "set", "c1", "eth0", "limits.ingress=100bit", "connected=true")
    assert "100" in msg or "rate" in msg
    assert _tc_rates(daemon, host) == [625_000]
    assert "UP" not in daemon.ns.link(host)["flags"]  # type: ignore[index]
    assert config(daemon, "c1") == before
    daemon.cli("stop", "c1", "-f")
    assert daemon.ns.link(host) is None
    assert daemon.ns.ipj("route", "show", "10.250.98.0/24") == []


def test_a_limited_nic_and_its_ifb_share_a_link_group_and_leave_together(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    links_before = daemon.ns.link_names()
    host = bridged_container(daemon, "c1", br, "10.250.23.2", None, "limits.egress=10Mbit")
    found = {link["ifname"]: link for link in daemon.ns.ipj("-d", "link", "show") if link["ifname"] != br}
    [ifb] = [name for name, link in found.items() if link.get("linkinfo", {}).get("info_kind") == "ifb"]
    group = found[host]["ifindex"] | 0x80000000  # the group the port leads (ip prints it signed)
    assert int(found[host]["group"]) & 0xFFFFFFFF == int(found[ifb]["group"]) & 0xFFFFFFFF == group

    daemon.cli("stop", "c1", "-f")

    assert daemon.ns.link_names() == links_before  # neither the veth nor the IFB is left
    assert "volatile.eth0.host_name" not in config(daemon, "c1")
    daemon.cli("start", "c1")  # and the NIC comes back as it was
    assert daemon.ns.link(config(daemon, "c1")["volatile.eth0.host_name"]) is not None
    daemon.cli("stop", "c1", "-f")
    assert daemon.ns.link_names() == links_before


def test_vlan_on_this_kernel_gives_the_named_feature_error(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    daemon.cli("init", "busybox", "c1")
    daemon.cli("config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", f"parent={br}", "vlan=10")
    links_before = daemon.ns.link_names()
    msg = daemon.fails("start", "c1")
    assert "bridge VLAN filtering is not supported by this kernel" in msg
    assert daemon.ns.link_names() == links_before


@pytest.mark.slow
def test_a_10mbit_egress_limit_holds_between_two_containers(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    bridged_container(daemon, "c1", br, "10.250.23.2", None, "limits.egress=10Mbit")
    bridged_container(daemon, "c2", br, "10.250.23.3")
    rate = tcp_rate(daemon, "c1", "c2", "10.250.23.3")
    assert 8_000_000 <= rate <= 12_000_000, rate
