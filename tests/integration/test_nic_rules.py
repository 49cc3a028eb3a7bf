"""Rules a NIC configuration must follow, found missing in review and by probing a live daemon:
each refusal changes nothing; concurrent changes cannot slip two NICs past one check."""

from __future__ import annotations

import json
import threading
from typing import Any

from tests.integration.helpers import config
from tests.pincus_testlib import Daemon


def put_device(daemon: Daemon, instance: str, name: str, device: dict[str, str]) -> int:
    """Add DEVICE through the API as a client without If-Match would: GET, then PUT all back."""
    _, doc = daemon.api("GET", f"/1.0/instances/{instance}")
    meta = doc["metadata"]
    body = {"config": {}, "devices": {**meta["devices"], name: device}, "profiles": meta["profiles"]}
    code, doc = daemon.api("PUT", f"/1.0/instances/{instance}", body)
    if code == 202:
        op = daemon.wait_op(doc)
        return 200 if op["status"] == "Success" else 409
    return code


def test_a_managed_bridge_named_as_parent_is_in_use(daemon: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=10.250.41.1/24", "ipv6.address=none")
    daemon.cli("init", "busybox", "c1")
    daemon.cli("config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", f"parent={net}")
    daemon.cli("profile", "create", "p1")
    daemon.cli("profile", "device", "add", "p1", "eth0", "nic", "nictype=bridged", f"parent={net}")
    _, doc = daemon.api("GET", f"/1.0/networks/{net}")
    assert doc["metadata"]["used_by"] == ["/1.0/instances/c1", "/1.0/profiles/p1"]
    assert "in use" in daemon.fails("network", "delete", net)
    assert daemon.ns.link(net) is not None


def test_static_addresses_compare_parsed_and_macs_are_unique_per_network(daemon: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=10.250.42.1/24", "ipv6.address=fd42:250:42::1/64")
    daemon.cli("init", "busybox", "c1", "-n", net)
    daemon.cli("init", "busybox", "c2", "-n", net)
    daemon.cli(
        "config", "device", "set", "c1", "eth0", "ipv6.address=fd42:250:42::5", "hwaddr=10:66:6a:00:00:05"
    )
    before = daemon.db_dump()
    err = daemon.fails("config", "device", "set", "c2", "eth0", "ipv6.address=FD42:250:42:0::5")
    assert 'already used by device "eth0" of instance "c1"' in err
    err = daemon.fails("config", "device", "set", "c2", "eth0", "hwaddr=10:66:6A:00:00:05")
    assert "hwaddr" in err and "c1" in err
    assert daemon.db_dump() == before
    # On another network the same MAC is no conflict.
    other = f"{prefix}b2"
    daemon.cli("network", "create", other, "ipv4.address=10.250.43.1/24", "ipv6.address=none")
    daemon.cli("config", "device", "add", "c2", "eth1", "nic", f"network={other}", "hwaddr=10:66:6a:00:00:05")


def test_concurrent_adds_of_one_address_or_mac_let_exactly_one_through(daemon: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=10.250.44.1/24", "ipv6.address=none")
    names = [f"c{i}" for i in range(6)]
    for name in names:
        daemon.cli("init", "busybox", name, "--no-profiles")
    for key, value in (("ipv4.address", "10.250.44.9"), ("hwaddr", "10:66:6a:00:00:09")):
        codes: dict[str, int] = {}

        def add(name: str, key: str = key, value: str = value, codes: dict[str, int] = codes) -> None:
            codes[name] = put_device(
                daemon, name, key.split(".")[0], {"type": "nic", "network": net, key: value}
            )

        threads = [threading.Thread(target=add, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(codes.values()).count(200) == 1, codes
        holders = [n for n in names if any(d.get(key) == value for d in devices(daemon, n).values())]
        assert len(holders) == 1, holders


def devices(daemon: Daemon, name: str) -> dict[str, dict[str, Any]]:
    _, doc = daemon.api("GET", f"/1.0/instances/{name}")
    return dict(doc["metadata"]["devices"])


def test_untagged_vlan_may_not_be_tagged_too(daemon: Daemon, prefix: str) -> None:
    daemon.ns.add_bridge(f"{prefix}br")
    daemon.cli("init", "busybox", "c1")
    err = daemon.fails(
        "config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", f"parent={prefix}br",
        "vlan=10", "vlan.tagged=5,10-12",
    )  # fmt: skip
    assert 'VLAN 10 is the untagged "vlan"' in err
    assert devices(daemon, "c1") == {}


def test_a_static_address_on_an_unmanaged_bridge_needs_filtering(daemon: Daemon, prefix: str) -> None:
    bridge = f"{prefix}br"
    daemon.ns.add_bridge(bridge)
    daemon.cli("init", "busybox", "c1")
    base = ["config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", f"parent={bridge}"]
    err = daemon.fails(*base, "ipv4.address=10.250.45.5")
    assert "cannot use manually specified ipv4.address when using unmanaged parent bridge" in err
    assert devices(daemon, "c1") == {}
    daemon.cli(*base, "ipv4.address=10.250.45.5", "security.ipv4_filtering=true")


def test_filtering_allows_the_nics_routes_as_sources(daemon: Daemon, prefix: str) -> None:
    bridge = f"{prefix}br"
    daemon.ns.add_bridge(bridge)
    daemon.ns.ip("addr", "add", "10.250.46.1/24", "dev", bridge)  # the routes go via the NIC's address
    daemon.cli("init", "busybox", "c1")
    daemon.cli(
        "config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", f"parent={bridge}", "name=eth0",
        "ipv4.address=10.250.46.5", "security.ipv4_filtering=true", "ipv4.routes=10.250.47.0/24",
    )  # fmt: skip
    daemon.cli("start", "c1")
    try:
        host_name = config(daemon, "c1")["volatile.eth0.host_name"]
        ruleset = json.loads(daemon.ns.run("nft", "-j", "list", "ruleset").stdout)["nftables"]
        elements = json.dumps([e for e in ruleset if "set" in e or "element" in e])
        assert host_name in elements
        assert '"addr": "10.250.47.0", "len": 24' in elements, elements[:3000]
        assert "10.250.46.5" in elements
    finally:
        daemon.cli("stop", "-f", "c1")


def test_a_managed_bridge_keeps_its_mac_as_ports_come_and_go(daemon: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=10.250.48.1/24", "ipv6.address=none")
    link = daemon.ns.link(net)
    assert link is not None
    mac = link["address"]
    assert mac.startswith("10:66:6a:") and mac != "00:00:00:00:00:00"
    daemon.cli("launch", "busybox", "c1", "-n", net)
    daemon.cli("stop", "-f", "c1")
    after = daemon.ns.link(net)
    assert after is not None and after["address"] == mac
    # bridge.hwaddr still wins, live.
    daemon.cli("network", "set", net, "bridge.hwaddr=10:66:6a:12:34:56")
    now = daemon.ns.link(net)
    assert now is not None and now["address"] == "10:66:6a:12:34:56"
