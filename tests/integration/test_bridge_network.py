"""Managed bridge networks (type=bridge) against the real kernel, dnsmasq and nftables.

Every test has its own pincusd inside its own network namespace (see conftest.py), so the
bridges, nftables tables and dnsmasq processes it makes are in that namespace; the
assertions ask the kernel (`ip -j`, `nft -j`, /sys, /proc) rather than pincus.

Timings of create/update/delete are printed at the end of the module (run with -s).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pincus.db.store import Store
from pincus.events import EventHub
from pincus.host import dnsmasq_hosts
from pincus.networks.bridge import BridgeNetwork, load_bridge_network
from pincus.networks.subnets import pick_subnet
from pincus.state import State
from tests.integration.helpers import wait_for
from tests.pincus_testlib import Daemon, NetNS

TIMINGS: dict[str, list[float]] = {}


@pytest.fixture(scope="module", autouse=True)
def report_timings() -> Iterator[None]:
    yield
    if TIMINGS:
        print("\n-- bridge network timings through the CLI (ms): median / max / n")
        for name, values in sorted(TIMINGS.items()):
            median, worst = statistics.median(values) * 1000, max(values) * 1000
            print(f"   {name:30s} {median:8.1f} / {worst:8.1f} / {len(values)}")


def timed(name: str, fn: Callable[[], Any]) -> Any:
    start = time.monotonic()
    result = fn()
    TIMINGS.setdefault(name, []).append(time.monotonic() - start)
    return result


# --- helpers: the kernel's and the file system's view ---------------------------------------------


def dnsmasq_processes(path: Path) -> list[int]:
    """Pids of every dnsmasq whose command line mentions path."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"/usr/sbin/dnsmasq\0") and str(path).encode() in cmdline:
            pids.append(int(entry))
    return pids


@pytest.fixture
def pd(daemon: Daemon) -> Iterator[Daemon]:
    """The test's daemon; afterwards no dnsmasq of it may outlive the test, whatever happened."""
    try:
        yield daemon
    finally:
        daemon.stop()  # first: its supervisor would restart what we kill
        for pid in dnsmasq_processes(daemon.dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def dnsmasq_pid(daemon: Daemon, net: str) -> int | None:
    """The pid in the network's pid file, if that process is the dnsmasq writing it."""
    pid_file = daemon.dir / "networks" / net / "dnsmasq" / "dnsmasq.pid"
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"dnsmasq" in cmdline and f"--pid-file={pid_file}".encode() in cmdline else None


def addresses(ns: NetNS, dev: str) -> set[str]:
    """Global addresses of dev, "addr/prefixlen"."""
    out = set()
    for link in ns.ipj("addr", "show", "dev", dev):
        for a in link.get("addr_info", []):
            if a.get("scope") == "global":
                out.add(f"{a['local']}/{a['prefixlen']}")
    return out


def ruleset(ns: NetNS) -> list[dict[str, Any]]:
    return list(json.loads(ns.run("nft", "-j", "list", "ruleset").stdout)["nftables"])


def rules_without_handles(ns: NetNS) -> list[str]:
    """The ruleset as it reads, not as it was made (re-adding a rule gives it a new handle)."""
    out = []
    for item in ruleset(ns):
        for body in item.values():
            if isinstance(body, dict):
                body.pop("handle", None)
        if "metainfo" not in item:
            out.append(json.dumps(item, sort_keys=True))
    return out


def chain_rules(ns: NetNS, chain: str) -> list[dict[str, Any]]:
    return [i["rule"] for i in ruleset(ns) if "rule" in i and i["rule"]["chain"] == chain]


def masquerades(ns: NetNS, net: str) -> list[str]:
    """The source networks masqueraded by the network's NAT chain."""
    found = []
    for rule in chain_rules(ns, f"nat_{net}"):
        if not any("masquerade" in e for e in rule["expr"]):
            continue
        for e in rule["expr"]:
            right = e.get("match", {}).get("right")
            if isinstance(right, dict) and "prefix" in right:
                found.append(f"{right['prefix']['addr']}/{right['prefix']['len']}")
    return found


def network_config(daemon: Daemon, net: str) -> dict[str, str]:
    return dict(yaml.safe_load(daemon.cli("network", "show", net).stdout)["config"])


def snapshot(daemon: Daemon) -> dict[str, Any]:
    """Everything a refused request must leave as it was."""
    ns = daemon.ns
    links = sorted(
        (link["ifname"], link.get("master"), link.get("mtu"), "UP" in link["flags"])
        for link in ns.ipj("link")
    )
    addrs = sorted(
        (link["ifname"], a["local"], a["prefixlen"])
        for link in ns.ipj("addr")
        for a in link.get("addr_info", [])
    )
    # Without flags: "linkdown" follows carrier, which settles on its own after a change.
    routes = sorted(
        (r.get("table", "main"), r.get("type", "unicast"), r["dst"], r.get("dev"))
        for r in ns.ipj("route", "show", "table", "all")
    )
    nets = daemon.dir / "networks"
    files = sorted(str(p.relative_to(nets)) for p in nets.rglob("*")) if nets.exists() else []
    return {
        "db": daemon.db_dump(),
        "links": links,
        "addrs": addrs,
        "routes": routes,
        "nft": ruleset(ns),
        "files": files,
        "dnsmasq": sorted(dnsmasq_processes(daemon.dir)),
    }


# --- lifecycle ---------------------------------------------------------------------------------------


def test_create_makes_bridge_addresses_dnsmasq_and_nat(pd: Daemon, prefix: str) -> None:
    net, ns = f"{prefix}br", pd.ns
    timed(
        "create (v4+v6, dnsmasq)",
        lambda: pd.cli(
            "network",
            "create",
            net,
            "ipv4.address=10.250.1.1/24",
            "ipv6.address=fd42:250:1::1/64",
            "ipv4.nat=true",
        ),
    )
    assert addresses(ns, net) == {"10.250.1.1/24", "fd42:250:1::1/64"}
    (link,) = ns.ipj("-d", "link", "show", net)
    assert link["linkinfo"]["info_kind"] == "bridge"
    assert link["linkinfo"]["info_data"]["stp_state"] == 0
    assert link["linkinfo"]["info_data"]["forward_delay"] == 0
    assert ns.run("cat", f"/sys/class/net/{net}/bridge/stp_state").stdout.strip() == "0"
    assert "UP" in link["flags"]
    # The IPv6 address is usable at once (no DAD), so dnsmasq could bind it.
    v6 = [a for a in ns.ipj("addr", "show", "dev", net)[0]["addr_info"] if a["local"] == "fd42:250:1::1"]
    assert v6 and not v6[0].get("tentative")
    assert dnsmasq_pid(pd, net) is not None
    assert dnsmasq_processes(pd.dir) == [dnsmasq_pid(pd, net)]
    assert sorted(masquerades(ns, net)) == ["10.250.1.0/24", "fd42:250:1::/64"]
    # NAT needs forwarding; the bridge, the subnet's router, learns nothing from RAs.
    assert ns.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert ns.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == "1"
    assert ns.run("cat", f"/proc/sys/net/ipv6/conf/{net}/autoconf").stdout.strip() == "0"
    # dnsmasq must reach its hosts directory after dropping root to nobody.
    for path in (pd.dir / "networks", pd.dir / "networks" / net, pd.dir / "networks" / net / "dnsmasq"):
        assert path.stat().st_mode & 0o001, path


def test_update_nat_keeps_dnsmasq_and_ranges_restart_it(pd: Daemon, prefix: str) -> None:
    net, ns = f"{prefix}br", pd.ns
    pd.cli("network", "create", net, "ipv4.address=10.250.1.1/24", "ipv6.address=none")
    pid = dnsmasq_pid(pd, net)
    assert pid is not None and masquerades(ns, net) == ["10.250.1.0/24"]
    timed("update (nat only)", lambda: pd.cli("network", "set", net, "ipv4.nat=false"))
    assert masquerades(ns, net) == []
    assert chain_rules(ns, f"fwd_{net}"), "the firewall rules stay"
    assert dnsmasq_pid(pd, net) == pid, "a NAT change must not restart dnsmasq"
    timed(
        "update (dhcp ranges)",
        lambda: pd.cli("network", "set", net, "ipv4.dhcp.ranges=10.250.1.100-10.250.1.150"),
    )
    new_pid = dnsmasq_pid(pd, net)
    assert new_pid is not None and new_pid != pid
    assert dnsmasq_processes(pd.dir) == [new_pid]
    cmdline = Path(f"/proc/{new_pid}/cmdline").read_bytes().split(b"\0")
    assert any(arg.startswith(b"--dhcp-range=10.250.1.100,10.250.1.150") for arg in cmdline)
    pd.cli("network", "set", net, "ipv4.nat=true")
    assert masquerades(ns, net) == ["10.250.1.0/24"] and dnsmasq_pid(pd, net) == new_pid


def test_killed_dnsmasq_comes_back(pd: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    pd.cli("network", "create", net, "ipv4.address=10.250.1.1/24", "ipv6.address=none")
    pid = dnsmasq_pid(pd, net)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    wait_for(lambda: dnsmasq_pid(pd, net) not in (None, pid), timeout=5, what="dnsmasq to be restarted")
    TIMINGS.setdefault("dnsmasq restart after kill", []).append(time.monotonic() - start)
    assert len(dnsmasq_processes(pd.dir)) == 1
    log = (pd.dir / "logs" / "pincusd.log").read_text()
    assert f"dnsmasq of network {net} was not running; restarted it" in log


def test_delete_leaves_nothing_behind(pd: Daemon, prefix: str) -> None:
    net, ns = f"{prefix}br", pd.ns
    before = snapshot(pd)
    pd.cli("network", "create", net, "ipv4.address=10.250.1.1/24", "ipv6.address=fd42:250:1::1/64")
    pd.cli("network", "set", net, "ipv4.routes=10.250.60.0/24")
    assert ns.ipj("route", "show", "10.250.60.0/24")[0]["dev"] == net
    timed("delete", lambda: pd.cli("network", "delete", net))
    assert net not in ns.link_names()
    assert not any(i.get("table", {}).get("name", "").startswith("pincus_") for i in ruleset(ns))
    assert dnsmasq_processes(pd.dir) == []
    assert not (pd.dir / "networks" / net).exists()
    assert ns.ipj("route", "show", "10.250.60.0/24") == []
    assert snapshot(pd) == before


# --- a real DHCP client ------------------------------------------------------------------------------

UDHCPC_SCRIPT = """#!/bin/sh
# Called by busybox udhcpc: configure the leased address so the test can read it back.
[ "$1" = bound ] && busybox ip addr add "$ip/$mask" dev "$interface"
exit 0
"""


@pytest.fixture
def client_ns(prefix: str) -> Iterator[NetNS]:
    ns = NetNS(f"{prefix}cl")
    try:
        yield ns
    finally:
        ns.delete()


def plug_client(daemon: Daemon, client: NetNS, net: str, host_end: str, client_end: str) -> str:
    """A veth from the bridge into the client namespace; returns the client end's MAC."""
    daemon.ns.ip("link", "add", host_end, "type", "veth", "peer", "name", client_end, "netns", client.name)
    daemon.ns.ip("link", "set", host_end, "master", net, "up")
    client.ip("link", "set", client_end, "up")
    return str(client.ipj("link", "show", client_end)[0]["address"])


def dhcp(client: NetNS, iface: str, script: Path) -> str:
    """Run udhcpc once; the IPv4 address it configured."""
    client.run(
        "busybox", "udhcpc", "-n", "-q", "-t", "5", "-T", "1", "-i", iface, "-s", str(script), timeout=20
    )
    (link,) = client.ipj("addr", "show", "dev", iface)
    return str(next(a["local"] for a in link["addr_info"] if a["family"] == "inet"))


def leases_csv(daemon: Daemon, net: str) -> list[list[str]]:
    out = daemon.cli("network", "list-leases", net, "--format=csv").stdout
    return [line.split(",") for line in out.splitlines() if line]


def test_dhcp_client_gets_a_dynamic_lease_and_a_static_allocation(
    pd: Daemon, prefix: str, client_ns: NetNS, tmp_path: Path
) -> None:
    net = f"{prefix}br"
    ranges = "ipv4.dhcp.ranges=10.250.2.50-10.250.2.60"
    pd.cli("network", "create", net, "ipv4.address=10.250.2.1/24", "ipv6.address=none", ranges)
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)

    mac = plug_client(pd, client_ns, net, f"{prefix}h1", f"{prefix}c1")
    address = dhcp(client_ns, f"{prefix}c1", script)
    assert (
        ipaddress.IPv4Address("10.250.2.50")
        <= ipaddress.IPv4Address(address)
        <= ipaddress.IPv4Address("10.250.2.60")
    )
    assert [["", mac, address, "DYNAMIC"]] == leases_csv(pd, net)
    code, doc = pd.api("GET", f"/1.0/networks/{net}/leases")
    assert code == 200
    assert doc["metadata"] == [
        {"hostname": "", "hwaddr": mac, "address": address, "type": "dynamic", "location": "none"}
    ]

    # The NIC side's call (devices/ makes it when an instance NIC has ipv4.address set).
    mac2 = plug_client(pd, client_ns, net, f"{prefix}h2", f"{prefix}c2")
    state = State(dir=pd.dir, store=Store(pd.dir / "pincus.db"), events=EventHub(), tag="0")
    try:
        bridge = load_bridge_network(state, net)
        assert bridge is not None and bridge.has_dhcp()
        assert bridge.ipv4_interface() == ipaddress.IPv4Interface("10.250.2.1/24")
        assert bridge.ipv6_interface() is None
        bridge.add_static_allocation("web.eth0", mac2, "10.250.2.200", None, "web")
        assert load_bridge_network(state, "nosuch") is None
    finally:
        state.store.close()
    assert dhcp(client_ns, f"{prefix}c2", script) == "10.250.2.200"
    rows = leases_csv(pd, net)
    assert ["web", mac2, "10.250.2.200", "STATIC"] in rows
    assert ["", mac, address, "DYNAMIC"] in rows
    assert len(rows) == 2


# --- auto addresses ------------------------------------------------------------------------------------


def test_auto_subnets_are_picked_from_the_pool_and_do_not_collide(pd: Daemon, prefix: str) -> None:
    a, b, c = f"{prefix}a", f"{prefix}b", f"{prefix}c"
    timed("create (auto)", lambda: pd.cli("network", "create", a))
    pd.cli("network", "create", b, "ipv4.address=auto", "ipv6.address=auto")
    pd.cli("network", "create", c, "ipv6.address=none")
    subnets4, subnets6 = [], []
    for net in (a, b):
        config = network_config(pd, net)
        v4 = ipaddress.IPv4Interface(config["ipv4.address"])
        v6 = ipaddress.IPv6Interface(config["ipv6.address"])
        assert v4.network.subnet_of(ipaddress.IPv4Network("10.250.0.0/16")) and v4.network.prefixlen == 24
        assert v4.ip == v4.network.network_address + 1
        assert v6.network.subnet_of(ipaddress.IPv6Network("fd42:250::/32"))
        assert v6.network.prefixlen == 64
        assert v6.ip == v6.network.network_address + 1
        assert addresses(pd.ns, net) == {str(v4), str(v6)}
        subnets4.append(v4.network)
        subnets6.append(v6.network)
    config_c = network_config(pd, c)
    assert config_c["ipv6.address"] == "none"
    subnets4.append(ipaddress.IPv4Interface(config_c["ipv4.address"]).network)
    # "auto" in an update is resolved too, before it is stored.
    pd.cli("network", "set", c, "ipv6.address=auto")
    v6 = ipaddress.IPv6Interface(network_config(pd, c)["ipv6.address"])
    assert str(v6) in addresses(pd.ns, c)
    subnets6.append(v6.network)
    assert len(set(subnets4)) == 3 and len(set(subnets6)) == 3


def test_pick_subnet_skips_used_subnets_and_reports_a_full_pool() -> None:
    rng = random.Random(7)
    pool = ipaddress.ip_network("10.250.8.0/22")
    used = [ipaddress.ip_network(n) for n in ("10.250.8.0/24", "10.250.9.128/25", "10.250.11.1/32")]
    assert pick_subnet(pool, 24, used, rng) == ipaddress.ip_network("10.250.10.0/24")
    assert pick_subnet(pool, 24, [*used, ipaddress.ip_network("10.250.10.0/23")], rng) is None
    assert pick_subnet(pool, 24, [ipaddress.ip_network("10.0.0.0/8")], rng) is None
    # A default route (prefix 0) covers everything and is not counted.
    assert pick_subnet(pool, 24, [ipaddress.ip_network("0.0.0.0/0")], rng) is not None
    big = ipaddress.ip_network("fd42:250::/32")
    got = pick_subnet(big, 64, [ipaddress.ip_network("fd42:250::/33")], rng)
    assert isinstance(got, ipaddress.IPv6Network) and got.subnet_of(
        ipaddress.IPv6Network("fd42:250:8000::/33")
    )


# --- bad input changes nothing -----------------------------------------------------------------------

BAD_CREATE = [
    pytest.param(["ipv4.address=10.250.10.129/25"], "overlaps", id="overlapping-subnet"),
    pytest.param(
        ["ipv4.address=10.250.20.1/24", "ipv6.address=fd42:250:10::1/64"], "overlaps", id="overlap-v6"
    ),
    pytest.param(
        ["ipv4.address=10.250.20.1/24", "ipv4.routes=10.250.10.0/26"], "overlaps", id="route-overlap"
    ),
    pytest.param(
        ["ipv4.address=10.250.20.1/24", "ipv4.dhcp.ranges=10.250.21.10-10.250.21.20"],
        "outside",
        id="range-out",
    ),
    pytest.param(
        ["ipv4.address=10.250.20.1/24", "ipv4.dhcp.ranges=10.250.20.1-10.250.20.20"],
        "bridge address",
        id="range-own",
    ),
    pytest.param(
        ["ipv4.address=10.250.20.1/24", "ipv4.dhcp.gateway=10.250.30.1"], "outside", id="gateway-out"
    ),
    pytest.param(["ipv4.address=10.250.20.0/24"], "network address", id="address-is-network"),
    pytest.param(["ipv4.dhcp.expiry=1h\nfoo"], "ipv4.dhcp.expiry", id="expiry-newline"),
    pytest.param(["ipv4.routes=10.250.40.1/24"], "host bits", id="route-host-bits"),
    pytest.param(
        ["ipv4.address=10.250.20.1/24", "ipv4.routes=10.250.20.0/24"], "subnet", id="route-own-subnet"
    ),
    pytest.param(["ipv6.address=fd42:250:20::1/56", "ipv6.dhcp.stateful=true"], "/64", id="stateful-not-64"),
    pytest.param(
        [
            "ipv6.address=fd42:250:20::1/64",
            "ipv6.dhcp.ranges=fd42:250:21::10-fd42:250:21::20",
            "ipv6.dhcp.stateful=true",
        ],
        "outside",
        id="range6-out",
    ),
    pytest.param(
        ["ipv6.address=fd42:250:20::1/64", "ipv6.ra=false", "ipv6.dhcp=true"],
        "router advertisements",
        id="stateless-dhcp6-without-ra",
    ),
    pytest.param(["bridge.external_interfaces=nosuch0"], "does not exist", id="external-missing"),
    pytest.param(
        ["ipv4.address=none", "ipv4.routes=10.250.77.0/24"], "10.250.77.0/24", id="route-taken-in-kernel"
    ),
]


@pytest.mark.parametrize(("config", "needle"), BAD_CREATE)
def test_bad_create_is_refused_and_changes_nothing(
    pd: Daemon, prefix: str, config: list[str], needle: str
) -> None:
    pd.cli("network", "create", f"{prefix}a", "ipv4.address=10.250.10.1/24", "ipv6.address=fd42:250:10::1/64")
    # A route the kernel already has: the network's own route to it fails half way through start.
    pd.ns.ip("route", "add", "10.250.77.0/24", "dev", "lo")
    before = snapshot(pd)
    msg = pd.fails("network", "create", f"{prefix}b", *config)
    assert needle in msg
    assert snapshot(pd) == before


def test_name_of_an_existing_host_interface_is_refused(pd: Daemon, prefix: str) -> None:
    pd.ns.add_bridge(f"{prefix}lan")
    before = snapshot(pd)
    assert pd.fails("network", "create", f"{prefix}lan") == f'Interface "{prefix}lan" already exists'
    assert snapshot(pd) == before


def test_failed_update_is_rolled_back(pd: Daemon, prefix: str) -> None:
    net, ns = f"{prefix}a", pd.ns
    pd.cli("network", "create", net, "ipv4.address=10.250.10.1/24", "ipv6.address=fd42:250:10::1/64")
    pd.ns.ip("route", "add", "10.250.77.0/24", "dev", "lo")
    pid = dnsmasq_pid(pd, net)
    before = snapshot(pd)
    # MTU and address are applied, then the route fails: both must be undone.
    msg = pd.fails(
        "network", "set", net, "bridge.mtu=1400", "ipv4.address=10.250.11.1/24", "ipv4.routes=10.250.77.0/24"
    )
    assert "10.250.77.0/24" in msg
    assert snapshot(pd) == before
    assert dnsmasq_pid(pd, net) == pid
    for args in (
        ["ipv4.dhcp.ranges=10.250.99.1-10.250.99.9"],
        ["ipv4.nat=perhaps"],
        ["ipv6.address=fd42:250:10::1/56"],
    ):
        pd.fails("network", "set", net, *args)
        assert snapshot(pd) == before
    assert addresses(ns, net) == {"10.250.10.1/24", "fd42:250:10::1/64"}


# --- live updates, external interfaces, restart, rename ----------------------------------------------


def test_live_update_of_mtu_hwaddr_addresses_and_routes(pd: Daemon, prefix: str) -> None:
    net, ns = f"{prefix}br", pd.ns
    pd.cli("network", "create", net, "ipv4.address=10.250.1.1/24", "ipv6.address=fd42:250:1::1/64")
    pid = dnsmasq_pid(pd, net)
    pd.cli("network", "set", net, "bridge.mtu=1400", "bridge.hwaddr=0a:92:a7:0d:b7:d9")
    (link,) = ns.ipj("link", "show", net)
    assert link["mtu"] == 1400 and link["address"] == "0a:92:a7:0d:b7:d9"
    assert dnsmasq_pid(pd, net) == pid
    timed(
        "update (addresses)",
        lambda: pd.cli("network", "set", net, "ipv4.address=10.250.3.1/24", "ipv6.address=fd42:250:3::1/64"),
    )
    assert addresses(ns, net) == {"10.250.3.1/24", "fd42:250:3::1/64"}
    assert sorted(masquerades(ns, net)) == ["10.250.3.0/24", "fd42:250:3::/64"]
    new_pid = dnsmasq_pid(pd, net)
    assert new_pid not in (None, pid)
    pd.cli("network", "set", net, "ipv4.routes=10.250.60.0/24,10.250.61.0/24", "ipv6.routes=fd42:250:60::/64")
    assert ns.ipj("route", "show", "10.250.61.0/24")[0]["dev"] == net
    assert ns.ipj("-6", "route", "show", "fd42:250:60::/64")[0]["dev"] == net
    pd.cli("network", "set", net, "ipv4.routes=10.250.61.0/24")
    pd.cli("network", "unset", net, "ipv6.routes")
    assert ns.ipj("route", "show", "10.250.60.0/24") == []
    assert ns.ipj("route", "show", "10.250.61.0/24") != []
    assert ns.ipj("-6", "route", "show", "fd42:250:60::/64") == []
    pd.cli("network", "unset", net, "bridge.mtu")
    assert ns.ipj("link", "show", net)[0]["mtu"] == 1500
    pd.cli("network", "set", net, "ipv4.address=none", "ipv6.address=none")
    assert addresses(ns, net) == set()
    assert dnsmasq_pid(pd, net) is None and dnsmasq_processes(pd.dir) == []
    assert masquerades(ns, net) == []


def test_external_interfaces_are_enslaved_and_given_back(pd: Daemon, prefix: str) -> None:
    net, ns = f"{prefix}br", pd.ns
    nic, other = f"{prefix}nic", f"{prefix}nic2"
    ns.add_standin_nic(nic)  # down, as a fresh veth is
    peer2 = ns.add_standin_nic(other)
    ns.ip("link", "set", other, "up")
    pd.cli("network", "create", net, "ipv4.address=10.250.1.1/24", f"bridge.external_interfaces={nic}")
    link = ns.link(nic)
    assert link is not None and link.get("master") == net and "UP" in link["flags"]
    pd.cli("network", "set", net, f"bridge.external_interfaces={nic},{other}")
    assert ns.link(other)["master"] == net  # type: ignore[index]
    pd.cli("network", "set", net, f"bridge.external_interfaces={other}")
    link = ns.link(nic)
    assert link is not None and link.get("master") is None and "UP" not in link["flags"], "given back down"
    pd.cli("network", "delete", net)
    link = ns.link(other)
    assert link is not None and link.get("master") is None and "UP" in link["flags"], "given back up"

    # Refused: a configured interface, a bridge, another bridge's port.
    ns.ip("addr", "add", "10.250.50.5/24", "dev", peer2)
    before = snapshot(pd)
    assert "addresses" in pd.fails("network", "create", net, f"bridge.external_interfaces={peer2}")
    ns.add_bridge(f"{prefix}lan")
    assert "bridge" in pd.fails("network", "create", net, f"bridge.external_interfaces={prefix}lan")
    ns.ip("link", "set", other, "master", f"{prefix}lan")
    before = snapshot(pd)
    msg = pd.fails("network", "create", net, f"bridge.external_interfaces={other}")
    assert f'(member of "{prefix}lan")' in msg
    assert snapshot(pd) == before


def test_daemon_restart_adopts_the_running_network(pd: Daemon, prefix: str) -> None:
    net, ns = f"{prefix}br", pd.ns
    pd.cli("network", "create", net, "ipv4.address=10.250.1.1/24", "ipv6.address=fd42:250:1::1/64")
    pd.cli("network", "set", net, "ipv4.routes=10.250.60.0/24")
    pid = dnsmasq_pid(pd, net)
    before, rules_before = snapshot(pd), rules_without_handles(ns)
    pd.stop()
    # SIGTERM leaves the network as it is: instances and their DHCP keep working.
    assert dnsmasq_pid(pd, net) == pid and net in ns.link_names()
    assert masquerades(ns, net) != []
    pd.start()
    assert dnsmasq_pid(pd, net) == pid, "a dnsmasq with the right config is adopted, not restarted"
    after = snapshot(pd)
    assert after["addrs"] == before["addrs"] and after["links"] == before["links"]
    assert after["routes"] == before["routes"] and rules_without_handles(ns) == rules_before
    pd.cli("network", "delete", net)
    assert dnsmasq_processes(pd.dir) == [] and net not in ns.link_names()


def test_rename_moves_bridge_rules_and_dnsmasq(pd: Daemon, prefix: str) -> None:
    old, new, ns = f"{prefix}br", f"{prefix}b2", pd.ns
    pd.cli("network", "create", old, "ipv4.address=10.250.1.1/24", "ipv6.address=none")
    pd.cli("network", "rename", old, new)
    assert old not in ns.link_names() and addresses(ns, new) == {"10.250.1.1/24"}
    assert masquerades(ns, new) == ["10.250.1.0/24"] and chain_rules(ns, f"nat_{old}") == []
    assert dnsmasq_pid(pd, new) is not None and len(dnsmasq_processes(pd.dir)) == 1
    assert not (pd.dir / "networks" / old).exists()
    ns.add_bridge(f"{prefix}lan")
    assert "already exists" in pd.fails("network", "rename", new, f"{prefix}lan")
    assert dnsmasq_pid(pd, new) is not None
    pd.cli("network", "delete", new)
    assert dnsmasq_processes(pd.dir) == []


# --- leases and static allocations, without a kernel -------------------------------------------------


def test_leases_merge_dnsmasq_leases_and_static_allocations(tmp_path: Path) -> None:
    state = State(dir=tmp_path, store=Store(tmp_path / "pincus.db"), events=EventHub(), tag="0")
    try:
        net = BridgeNetwork(
            state, "br0", {"ipv4.address": "10.250.3.1/24", "ipv6.address": "fd42:250:3::1/64"}
        )
        net.add_static_allocation("web.eth0", "0a:00:00:00:00:01", "10.250.3.10", "fd42:250:3::10", "web")
        net.add_static_allocation("db.eth0", "0a:00:00:00:00:02", "10.250.3.11", None, "db")
        (net.dnsmasq_dir / "dnsmasq.leases").write_text(
            "1900000000 0a:00:00:00:00:01 10.250.3.10 web 01:0a:00:00:00:00:01\n"
            "1900000000 0a:00:00:00:00:09 10.250.3.99 laptop *\n"
        )
        got = {(x["hostname"], x["hwaddr"], x["address"], x["type"]) for x in net.leases()}
        assert got == {
            ("web", "0a:00:00:00:00:01", "10.250.3.10", "static"),
            ("laptop", "0a:00:00:00:00:09", "10.250.3.99", "dynamic"),
            ("web", "0a:00:00:00:00:01", "fd42:250:3::10", "static"),  # allocated, not leased yet
            ("db", "0a:00:00:00:00:02", "10.250.3.11", "static"),
        }
        net.remove_static_allocation("db.eth0")
        assert all(x["hostname"] != "db" for x in net.leases())
        assert all(x["location"] == "none" for x in net.leases())
    finally:
        state.store.close()


def test_removals_reload_dnsmasq_in_batches_and_a_colliding_entry_at_once(tmp_path: Path) -> None:
    # dnsmasq rereads every entry per reload, so removals are batched: the retired file lists what
    # dnsmasq still holds, and goes when a reload (here: none running, as after a restart) clears it.
    state = State(dir=tmp_path, store=Store(tmp_path / "pincus.db"), events=EventHub(), tag="0")
    try:
        net = BridgeNetwork(state, "br0", {"ipv4.address": "10.250.3.1/24"})
        for i in range(16):
            net.add_static_allocation(
                f"c{i}.eth0", f"0a:00:00:00:00:{i:02x}", f"10.250.3.{10 + i}", None, None
            )

        def retired() -> list[str]:
            return [a.nic_id for a in dnsmasq_hosts.retired_allocations(net.dnsmasq_dir)]

        net.remove_static_allocation("c0.eth0")
        net.remove_static_allocation("c1.eth0")
        assert retired() == ["c0.eth0", "c1.eth0"]
        assert len(net.leases()) == 14  # gone from the hosts dir at once
        net.remove_static_allocation("c2.eth0")  # 3 > 16 / 8: reload
        assert retired() == []

        net.remove_static_allocation("c3.eth0")
        net.add_static_allocation("new.eth0", "0a:00:00:00:01:00", "10.250.3.30", None, None)
        assert retired() == ["c3.eth0"]  # no collision: no reload
        net.add_static_allocation("c3b.eth0", "0a:00:00:00:01:01", "10.250.3.13", None, None)
        assert retired() == []  # c3's address, which dnsmasq still held: reloaded
        net.remove_static_allocation("missing.eth0")
        assert retired() == []
        # 14 entries left: each batch counts those there are at its first removal; from 8 down a
        # batch is two removals (2 > 8 / 8), under 8 every removal reloads at once.
        for i in range(4, 16):
            net.remove_static_allocation(f"c{i}.eth0")
            assert retired() == ([f"c{i}.eth0"] if i in (4, 6, 8, 10) else [])
    finally:
        state.store.close()
