"""Incus's grammar end to end on a private daemon: network info against the kernel's own view,
list-allocations, attach/detach on a running container, list filters/columns/formats, KEY= and
unset, an image refused before anything is made, and query."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from tests.integration.helpers import config, in_container
from tests.pincus_testlib import Daemon


def _managed_bridge(daemon: Daemon, name: str, subnet: int, *keys: str) -> None:
    daemon.cli(
        "network", "create", name, f"ipv4.address=10.250.{subnet}.1/24", "ipv6.address=none", *keys
    )  # fmt: skip


def _sysfs(daemon: Daemon, path: str) -> str:
    return daemon.ns.run("cat", f"/sys/class/net/{path}").stdout.strip()


def _stats(daemon: Daemon, name: str) -> dict[str, int]:
    link = daemon.ns.ipj("-s", "link", "show", name)[0]
    s = link["stats64"]
    return {
        "bytes_received": s["rx"]["bytes"],
        "bytes_sent": s["tx"]["bytes"],
        "packets_received": s["rx"]["packets"],
        "packets_sent": s["tx"]["packets"],
    }


def test_network_info_of_a_managed_bridge_is_what_the_kernel_says(daemon: Daemon, prefix: str) -> None:
    br, port = f"{prefix}br", f"{prefix}v"
    _managed_bridge(daemon, br, 30)
    daemon.ns.add_standin_nic(port)
    daemon.ns.ip("link", "set", port, "master", br)
    before = _stats(daemon, br)
    code, doc = daemon.api("GET", f"/1.0/networks/{br}/state")
    after = _stats(daemon, br)
    assert code == 200
    st = doc["metadata"]
    link = daemon.ns.ipj("-d", "link", "show", br)[0]
    assert st["hwaddr"] == link["address"] and st["mtu"] == link["mtu"]
    assert st["state"] == ("up" if "UP" in link["flags"] else "down") and st["type"] == "broadcast"
    kernel_addresses = {
        (a["family"], a["local"], str(a["prefixlen"]))
        for a in daemon.ns.ipj("addr", "show", br)[0]["addr_info"]
    }
    assert {(a["family"], a["address"], a["netmask"]) for a in st["addresses"]} == kernel_addresses
    assert {"family": "inet", "address": "10.250.30.1", "netmask": "24", "scope": "global"} in st["addresses"]
    for key, value in st["counters"].items():
        if key in before:
            assert before[key] <= value <= after[key], key
    data = link["linkinfo"]["info_data"]
    assert st["bridge"] == {
        "id": _sysfs(daemon, f"{br}/bridge/bridge_id"),
        "stp": data["stp_state"] != 0,
        "forward_delay": data["forward_delay"],  # the kernel's centiseconds, as ip shows them
        "vlan_default": data.get("vlan_default_pvid", 0),
        "vlan_filtering": bool(data.get("vlan_filtering", 0)),
        "upper_devices": [port],
    }
    assert (st["bond"], st["vlan"], st["ovn"]) == (None, None, None)
    out = daemon.cli("network", "info", br).stdout.splitlines()
    for line in (
        f"Name: {br}",
        f"MAC address: {link['address']}",
        f"MTU: {link['mtu']}",
        "  inet 10.250.30.1/24 (global)",
        f"  Forward delay: {data['forward_delay']}",
        f"  Upper devices: {port}",
    ):
        assert line in out


def test_network_info_of_host_interfaces(daemon: Daemon, prefix: str) -> None:
    out = daemon.cli("network", "info", "lo").stdout.splitlines()
    assert "Type: loopback" in out and "  inet 127.0.0.1/8 (local)" in out and "Bridge:" not in out
    nic = f"{prefix}n"
    daemon.ns.add_standin_nic(nic)
    daemon.ns.ip("link", "set", nic, "mtu", "1400")
    st = daemon.api("GET", f"/1.0/networks/{nic}/state")[1]["metadata"]
    assert (st["mtu"], st["state"], st["bridge"]) == (1400, "down", None)
    assert st["hwaddr"] == _sysfs(daemon, f"{nic}/address")
    assert "not found" in daemon.fails("network", "info", f"{prefix}none")


def test_list_allocations_shows_networks_and_static_addresses(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    _managed_bridge(daemon, br, 31, "ipv4.nat=true")
    daemon.cli("init", "busybox", "c1", "-n", br, "-d", "eth0,ipv4.address=10.250.31.5")
    daemon.cli("init", "busybox", "c2", "-n", br)  # no static address: not listed
    allocs = json.loads(daemon.cli("network", "list-allocations", "--format=json").stdout)
    mac = config(daemon, "c1").get("volatile.eth0.hwaddr", "")
    assert sorted(allocs, key=lambda a: str(a["address"])) == [
        {"address": "10.250.31.1/24", "used_by": f"/1.0/networks/{br}", "type": "network", "nat": True,
         "hwaddr": "", "network": br},
        {"address": "10.250.31.5/32", "used_by": "/1.0/instances/c1", "type": "instance", "nat": True,
         "hwaddr": mac, "network": br},
    ]  # fmt: skip
    table = daemon.cli("network", "list-allocations").stdout
    assert "USED BY" in table and "HARDWARE ADDRESS" in table
    row = next(line for line in table.splitlines() if "10.250.31.5/32" in line)
    assert "/1.0/instances/c1" in row and "instance" in row


def _ports(daemon: Daemon, bridge: str) -> set[str]:
    links = json.loads(daemon.ns.run("bridge", "-j", "link").stdout or "[]")
    return {p["ifname"] for p in links if p.get("master") == bridge}


def test_attach_and_detach_plug_a_running_container(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    daemon.cli("init", "busybox", "c1")
    daemon.cli("start", "c1")
    daemon.cli("network", "attach", br, "c1", "eth1", "wan0")
    host = config(daemon, "c1")["volatile.eth1.host_name"]
    assert _ports(daemon, br) == {host}
    assert "wan0" in in_container(daemon, "c1", "ip", "link", "show", "wan0")
    devices = yaml.safe_load(daemon.cli("config", "device", "show", "c1").stdout)
    assert devices == {"eth1": {"type": "nic", "nictype": "bridged", "parent": br, "name": "wan0"}}
    daemon.cli("network", "detach", br, "c1")
    assert _ports(daemon, br) == set()
    assert in_container(daemon, "c1", "ip", "link", "show", "wan0", check=False) == ""
    assert "No device found" in daemon.fails("network", "detach", br, "c1")


def _csv(daemon: Daemon, *args: str) -> list[list[str]]:
    return list(csv.reader(daemon.cli("list", *args, "--format=csv").stdout.splitlines(keepends=True)))


def test_list_filters_columns_and_formats(daemon: Daemon, prefix: str) -> None:
    daemon.cli("init", "busybox", "c1")
    daemon.cli("init", "busybox", "web2", "-c", "user.role=front", "--description", "the web")
    daemon.cli("start", "c1")
    pid = daemon.api("GET", "/1.0/instances/c1/state")[1]["metadata"]["pid"]
    assert _csv(daemon, "-c", "nsp") == [["c1", "RUNNING", str(pid)], ["web2", "STOPPED", ""]]
    assert _csv(daemon, "-c", "n", "status=stopped") == [["web2"]]
    assert _csv(daemon, "-c", "n", "type=container", "user.role=front") == [["web2"]]
    assert _csv(daemon, "-c", "n", "w") == [["web2"]]
    assert _csv(daemon, "-c", "n", "^c[0-9]$") == [["c1"]]
    assert _csv(daemon, "-c", "ndS") == [["c1", "", "0"], ["web2", "the web", "0"]]
    compact = daemon.cli("list", "-c", "nst", "--format", "compact").stdout.splitlines()
    assert compact[0].split() == ["NAME", "STATE", "TYPE"] and compact[2].split() == [
        "web2",
        "STOPPED",
        "CONTAINER",
    ]
    markdown = daemon.cli("list", "-c", "ns", "--format=markdown").stdout.splitlines()
    assert markdown[0] == "| NAME |  STATE  |" and markdown[1] == "|------|---------|"
    docs = json.loads(daemon.cli("list", "--format=json").stdout)
    assert [d["name"] for d in docs] == ["c1", "web2"] and docs[0]["state"]["pid"] == pid
    daemon.cli("stop", "c1", "--force")


def test_empty_value_unsets_and_unset_of_an_absent_key_succeeds(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    daemon.cli("init", "busybox", "c1", "-c", "user.a=1")
    daemon.cli("config", "set", "c1", "user.a=", "user.b=2")
    assert {k: v for k, v in config(daemon, "c1").items() if k.startswith("user.")} == {"user.b": "2"}
    daemon.cli("config", "unset", "c1", "user.never")
    daemon.cli("config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", f"parent={br}", "mtu=1400")
    daemon.cli("config", "device", "set", "c1", "eth0", "mtu=")
    assert "mtu" not in yaml.safe_load(daemon.cli("config", "device", "show", "c1").stdout)["eth0"]
    daemon.cli("config", "device", "unset", "c1", "eth0", "mtu")
    net = f"{prefix}m"
    _managed_bridge(daemon, net, 32, "dns.domain=lab.test")
    daemon.cli("network", "set", net, "dns.domain=")
    assert "dns.domain" not in yaml.safe_load(daemon.cli("network", "show", net).stdout)["config"]
    before = daemon.db_dump()
    daemon.cli("network", "unset", net, "never.set")
    assert daemon.db_dump() == before


def test_an_unknown_image_or_pool_is_refused_and_nothing_is_created(daemon: Daemon) -> None:
    before = daemon.db_dump()
    assert 'Image "debian/12" not found' in daemon.fails("launch", "debian/12", "c1")
    assert 'storage pool "nopool" not found' in daemon.fails("init", "c1", "-s", "nopool")
    assert daemon.db_dump() == before
    assert daemon.fails("config", "show", "c1")


def test_query(daemon: Daemon, prefix: str, tmp_path: Path) -> None:
    server = json.loads(daemon.cli("query", "/1.0").stdout)
    assert server["api_version"] == "1.0"
    assert json.loads(daemon.cli("query", "--raw", "/1.0").stdout)["type"] == "sync"
    body = json.dumps(
        {"name": f"{prefix}q", "config": {"ipv4.address": "10.250.33.1/24", "ipv6.address": "none"}}
    )
    daemon.cli("query", "-X", "POST", "-d", body, "/1.0/networks")
    assert f"/1.0/networks/{prefix}q" in json.loads(daemon.cli("query", "/1.0/networks").stdout)
    assert "not found" in daemon.fails("query", "/1.0/instances/nope")
