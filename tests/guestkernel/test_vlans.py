"""VLANs on a kernel that has them: bridge VLAN filtering on bridged ports, 802.1Q sub-interfaces.

Runs inside the test guest only (see conftest.py); the host's kernel has neither feature.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any

from tests.integration.helpers import bridged_container, config, in_container, ping, wait_for
from tests.pincus_testlib import Daemon


def _port_vlans(daemon: Daemon, port: str) -> dict[int, set[str]]:
    """{vid: flags} of one bridge port, as the kernel reports it."""
    doc: list[dict[str, Any]] = json.loads(
        daemon.ns.run("bridge", "-j", "vlan", "show", "dev", port).stdout or "[]"
    )
    for entry in doc:
        if entry.get("ifname") == port:
            return {v["vlan"]: set(v.get("flags", [])) for v in entry.get("vlans", [])}
    return {}


def _vlan_bridge(daemon: Daemon, name: str) -> None:
    daemon.ns.add_bridge(name)
    daemon.ns.ip("link", "set", name, "type", "bridge", "vlan_filtering", "1")


def test_bridged_ports_join_exactly_their_vlans_and_traffic_follows(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    _vlan_bridge(daemon, br)
    p1 = bridged_container(daemon, "c1", br, "10.250.40.1", None, "vlan=10", "vlan.tagged=20,30")
    bridged_container(daemon, "c2", br, "10.250.40.2", None, "vlan=10")
    p3 = bridged_container(daemon, "c3", br, "10.250.40.3", None, "vlan=20")
    # The default VLAN 1 is gone: the port is in 10 (PVID, untagged on egress) and carries 20, 30 tagged.
    assert _port_vlans(daemon, p1) == {10: {"PVID", "Egress Untagged"}, 20: set(), 30: set()}
    assert _port_vlans(daemon, p3) == {20: {"PVID", "Egress Untagged"}}
    assert ping(daemon, "c1", "10.250.40.2", count=3)  # a TCG guest under load may miss the first reply
    assert not ping(daemon, "c1", "10.250.40.3")

    # Live: c1 moves to VLAN 20 untagged; the kernel's view and the traffic follow.
    daemon.cli("config", "device", "set", "c1", "eth0", "vlan=20", "vlan.tagged=")
    assert _port_vlans(daemon, p1) == {20: {"PVID", "Egress Untagged"}}
    assert ping(daemon, "c1", "10.250.40.3", count=3)  # a TCG guest under load may miss the first reply
    assert not ping(daemon, "c1", "10.250.40.2")

    # A bad live change is refused and the port keeps what it had.
    assert "4095" in daemon.fails("config", "device", "set", "c1", "eth0", "vlan=4095")
    assert _port_vlans(daemon, p1) == {20: {"PVID", "Egress Untagged"}}
    daemon.cli("stop", "c1", "c2", "c3", "-f")
    assert daemon.ns.link(p1) is None


def test_tagged_frames_reach_a_vlan_interface_inside_the_container(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    _vlan_bridge(daemon, br)
    bridged_container(daemon, "c1", br, "10.250.41.1", None, "vlan=10", "vlan.tagged=30")
    bridged_container(daemon, "c2", br, "10.250.41.2", None, "vlan=30")
    # c1 speaks VLAN 30 tagged over its own 802.1Q interface; c2 gets it untagged.
    in_container(
        daemon, "c1", "ip", "link", "add", "link", "eth0", "name", "eth0.30", "type", "vlan", "id", "30"
    )
    in_container(daemon, "c1", "ip", "addr", "add", "10.250.42.1/24", "dev", "eth0.30")
    in_container(daemon, "c1", "ip", "link", "set", "eth0.30", "up")
    in_container(daemon, "c2", "ip", "addr", "add", "10.250.42.2/24", "dev", "eth0")
    assert ping(daemon, "c2", "10.250.42.1", count=3)  # a TCG guest under load may miss the first reply


def test_vlan_filtering_off_on_the_bridge_is_a_clear_error(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)  # vlan_filtering stays 0
    daemon.cli("init", "busybox", "c1")
    daemon.cli("config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", f"parent={br}", "vlan=10")
    links_before = daemon.ns.link_names()
    msg = daemon.fails("start", "c1")
    assert f'bridge "{br}" has VLAN filtering off' in msg
    assert daemon.ns.link_names() == links_before


def test_a_bridge_parent_physical_network_puts_its_ports_in_its_vlans(daemon: Daemon, prefix: str) -> None:
    lan = f"{prefix}lan"
    _vlan_bridge(daemon, lan)
    daemon.cli("network", "create", "v10", "--type=physical", f"parent={lan}", "vlan=10", "vlan.tagged=40")
    daemon.cli("launch", "busybox", "c1", "-n", "v10")
    port = config(daemon, "c1")["volatile.eth0.host_name"]
    assert _port_vlans(daemon, port) == {10: {"PVID", "Egress Untagged"}, 40: set()}
    daemon.cli("stop", "c1", "-f")
    assert daemon.ns.link(port) is None


def _link_in(daemon: Daemon, instance: str, name: str) -> dict[str, Any]:
    # From the host, in the container's netns: the busybox image's ip has no JSON output.
    _, doc = daemon.api("GET", f"/1.0/instances/{instance}/state")
    netns = f"/proc/{doc['metadata']['pid']}/ns/net"
    out = subprocess.run(
        ["nsenter", f"--net={netns}", "ip", "-j", "-d", "link", "show", name],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    links: list[dict[str, Any]] = json.loads(out)
    return links[0]


def test_a_nic_parent_network_with_vlan_moves_an_8021q_interface_in(daemon: Daemon, prefix: str) -> None:
    nic = f"{prefix}nic"
    peer = daemon.ns.add_standin_nic(nic)
    daemon.ns.ip("link", "set", nic, "up")
    daemon.cli("network", "create", "v10", "--type=physical", f"parent={nic}", "vlan=10", "gvrp=true")
    daemon.cli("init", "busybox", "c1")
    daemon.cli(
        "config", "device", "add", "c1", "lan", "nic", "network=v10", "name=lan0", "hwaddr=02:00:00:00:10:10"
    )
    before = daemon.ns.link_names()
    daemon.cli("start", "c1")

    inside = _link_in(daemon, "c1", "lan0")
    data = inside["linkinfo"]["info_data"]
    assert inside["linkinfo"]["info_kind"] == "vlan"
    assert (data["protocol"], data["id"]) == ("802.1Q", 10)
    assert "GVRP" in data.get("flags", [])
    assert inside["address"] == "02:00:00:00:10:10"
    assert daemon.ns.link_names() == before  # the sub-interface lives in the container only
    assert daemon.ns.link(nic) is not None  # the parent itself stays on the host

    # Tagged traffic: the far end of the stand-in NIC has its own VLAN 10 interface.
    daemon.ns.ip("link", "add", "link", peer, "name", f"{peer[:10]}.10", "type", "vlan", "id", "10")
    daemon.ns.ip("addr", "add", "10.250.43.1/24", "dev", f"{peer[:10]}.10")
    daemon.ns.ip("link", "set", peer, "up")
    daemon.ns.ip("link", "set", f"{peer[:10]}.10", "up")
    in_container(daemon, "c1", "ip", "addr", "add", "10.250.43.2/24", "dev", "lan0")
    in_container(daemon, "c1", "ip", "link", "set", "lan0", "up")
    assert ping(daemon, "c1", "10.250.43.1", count=3)  # a TCG guest under load may miss the first reply

    # Stop deletes the sub-interface: nothing of it comes back to the host.
    daemon.cli("stop", "c1", "-f")
    assert daemon.ns.link_names() == before | {f"{peer[:10]}.10"}
    assert not [k for k in config(daemon, "c1") if k.startswith("volatile.lan.") and "last_state" in k]


def test_vlan_interface_of_a_crashed_container_is_cleaned_up(daemon: Daemon, prefix: str) -> None:
    nic = f"{prefix}nic"
    daemon.ns.add_standin_nic(nic)
    daemon.cli("network", "create", "v10", "--type=physical", f"parent={nic}", "vlan=10")
    daemon.cli("init", "busybox", "c1")
    daemon.cli("config", "device", "add", "c1", "lan", "nic", "network=v10", "name=lan0")
    before = daemon.ns.link_names()
    daemon.cli("start", "c1")
    pid = daemon.api("GET", "/1.0/instances/c1/state")[1]["metadata"]["pid"]
    os.kill(pid, signal.SIGKILL)
    # The netns dies with init; the VLAN interface returns to the host and must be removed.
    wait_for(lambda: "STOPPED" in daemon.cli("list", "--format=csv").stdout, 20, "c1 noticed as stopped")
    wait_for(lambda: daemon.ns.link_names() == before, 10, "the VLAN interface removed from the host")
    # The parent was down before: it had to come up for the VLAN, and it is down again.
    assert "UP" not in daemon.ns.link(nic)["flags"]  # type: ignore[index]


def test_the_last_vlan_user_of_a_parent_that_was_down_puts_it_down(daemon: Daemon, prefix: str) -> None:
    nic = f"{prefix}nic"
    daemon.ns.add_standin_nic(nic)  # down, as a NIC nobody configured
    daemon.cli("network", "create", "v10", "--type=physical", f"parent={nic}", "vlan=10")
    daemon.cli("network", "create", "v20", "--type=physical", f"parent={nic}", "vlan=20")
    daemon.cli("launch", "busybox", "c1")
    daemon.cli("config", "device", "add", "c1", "v10", "nic", "network=v10", "name=v10")
    daemon.cli("launch", "busybox", "c2")
    daemon.cli("config", "device", "add", "c2", "v20", "nic", "network=v20", "name=v20")

    def up() -> bool:
        return "UP" in daemon.ns.link(nic)["flags"]  # type: ignore[index]

    assert up()
    # c1 brought it up, but c2 still needs it after c1 is gone; c2 is then the last.
    daemon.cli("config", "device", "remove", "c1", "v10")
    assert up()
    daemon.cli("stop", "c2", "-f")
    assert not up()
