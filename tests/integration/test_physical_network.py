"""Physical networks whose parent is a NIC or a bridge: the four behaviours and the security boundary."""

from __future__ import annotations

import os
import signal

import pytest

from pincus.host import qemu
from tests.integration.helpers import config, in_container, ping, wait_for
from tests.pincus_testlib import Daemon, qemu_nic_macs


def _link(daemon: Daemon, name: str) -> dict[str, object]:
    link = daemon.ns.link(name)
    assert link is not None, f"{name} is not on the host"
    return link


# --- bridge parent: the bridged driver does the work ----------------------------------------------


def test_container_on_bridge_parent_physical_network(daemon: Daemon, prefix: str) -> None:
    lan = f"{prefix}lan"
    daemon.ns.add_bridge(lan)
    daemon.cli("network", "create", "phys0", "--type=physical", f"parent={lan}")
    daemon.cli("launch", "busybox", "c1", "-n", "phys0")
    daemon.cli("launch", "busybox", "c2", "-n", "phys0")
    cfg = config(daemon, "c1")
    host_name, mac = cfg["volatile.eth0.host_name"], cfg["volatile.eth0.hwaddr"]
    assert _link(daemon, host_name)["master"] == lan
    assert in_container(daemon, "c1", "cat", "/sys/class/net/eth0/address").strip() == mac
    in_container(daemon, "c1", "ip", "addr", "add", "10.250.30.2/24", "dev", "eth0")
    in_container(daemon, "c2", "ip", "addr", "add", "10.250.30.3/24", "dev", "eth0")
    assert ping(daemon, "c1", "10.250.30.3")
    info = daemon.cli("info", "c1").stdout
    assert f"bridged via physical network phys0: parent {lan} is a bridge" in info
    assert "/1.0/instances/c1" in daemon.cli("network", "show", "phys0").stdout
    # The MAC survives a restart; the bridge is untouched by stop.
    daemon.cli("restart", "c1", "-f")
    assert in_container(daemon, "c1", "cat", "/sys/class/net/eth0/address").strip() == mac
    daemon.cli("stop", "c1", "c2", "-f")
    assert daemon.ns.link(host_name) is None
    assert "UP" in _link(daemon, lan)["flags"]  # type: ignore[operator]
    assert "in use" in daemon.fails("network", "delete", "phys0")


def test_bridged_only_keys_on_physical_networks_even_before_start(daemon: Daemon, prefix: str) -> None:
    lan, nic = f"{prefix}lan", f"{prefix}nic"
    daemon.ns.add_bridge(lan)
    daemon.ns.add_standin_nic(nic)
    daemon.cli("network", "create", "onbr", "--type=physical", f"parent={lan}")
    daemon.cli("network", "create", "onnic", "--type=physical", f"parent={nic}")
    daemon.cli("init", "busybox", "c1")
    bridged_keys = ("security.ipv4_filtering=true", "ipv4.address=10.250.31.5", "limits.ingress=10Mbit")
    daemon.cli("config", "device", "add", "c1", "eth0", "nic", "network=onbr", *bridged_keys)
    before = daemon.db_dump()
    for key in bridged_keys:
        msg = daemon.fails("config", "device", "add", "c1", "eth1", "nic", "network=onnic", "name=eth1", key)
        assert "needs a bridged NIC" in msg and key.split("=")[0] in msg
    for key in ("nictype=bridged", "parent=x", "mtu=1400", "vlan=5"):
        msg = daemon.fails("config", "device", "add", "c1", "eth1", "nic", "network=onbr", key)
        assert "in conjunction with" in msg
    assert "not found" in daemon.fails("config", "device", "add", "c1", "eth1", "nic", "network=nosuch")
    assert daemon.db_dump() == before


def test_vm_on_bridge_parent_physical_network(daemon: Daemon, prefix: str) -> None:
    lan = f"{prefix}lan"
    daemon.ns.add_bridge(lan)
    daemon.cli("network", "create", "phys0", "--type=physical", f"parent={lan}")
    daemon.cli("init", "v1", "--vm", "-n", "phys0", "-c", "raw.qemu=-S")
    daemon.cli("start", "v1")
    cfg = config(daemon, "v1")
    tap, mac = cfg["volatile.eth0.host_name"], cfg["volatile.eth0.hwaddr"]
    assert _link(daemon, tap)["master"] == lan
    assert qemu_nic_macs(daemon.dir / "instances" / "v1" / "qmp.sock") == {qemu.device_id("eth0"): mac}
    daemon.cli("stop", "v1", "-f")
    assert daemon.ns.link(tap) is None


# --- the security boundary ------------------------------------------------------------------------


def test_direct_physical_nic_on_a_bridge_is_refused_and_the_bridge_untouched(
    daemon: Daemon, prefix: str
) -> None:
    lan = f"{prefix}lan"
    daemon.ns.add_bridge(lan)
    daemon.ns.ip("addr", "add", "10.250.32.1/24", "dev", lan)
    before_link, before_db = daemon.ns.link(lan), daemon.db_dump()
    daemon.cli("init", "busybox", "c1")
    before_db = daemon.db_dump()
    msg = daemon.fails(
        "config", "device", "add", "c1", "eth0", "nic", "nictype=physical", f"parent={lan}", "name=eth0"
    )
    assert msg == f'Parent device "{lan}" is a bridge, use nictype=bridged instead'
    assert daemon.db_dump() == before_db
    daemon.cli("start", "c1")
    assert daemon.ns.link(lan) == before_link
    assert "UP" in _link(daemon, lan)["flags"]  # type: ignore[operator]


def test_a_physical_nic_never_takes_a_bridge_member_or_an_addressed_interface(
    daemon: Daemon, prefix: str
) -> None:
    lan, member, addressed = f"{prefix}lan", f"{prefix}m", f"{prefix}a"
    daemon.ns.add_bridge(lan)
    daemon.ns.add_standin_nic(member)
    daemon.ns.ip("link", "set", member, "master", lan)
    daemon.ns.add_standin_nic(addressed)
    daemon.ns.ip("addr", "add", "10.250.33.1/24", "dev", addressed)
    daemon.cli("launch", "busybox", "c1")
    links_before = daemon.ns.link_names()
    add = ("config", "device", "add", "c1", "eth1", "nic", "nictype=physical")
    msg = daemon.fails(*add, f"parent={member}", "name=eth1")
    assert msg == f'Interface "{member}" is in use by the host (member of "{lan}")'
    msg = daemon.fails(*add, f"parent={addressed}", "name=eth1")
    assert f'Interface "{addressed}" is in use by the host' in msg and "10.250.33.1/24" in msg
    assert daemon.ns.link_names() == links_before


# --- NIC parent: moved in, given back -------------------------------------------------------------


def _nic_state(daemon: Daemon, name: str) -> tuple[str, int, str]:
    link = _link(daemon, name)
    return str(link["ifname"]), int(link["mtu"]), str(link["address"])  # type: ignore[call-overload]


def _nic_network(daemon: Daemon, prefix: str) -> tuple[str, tuple[str, int, str]]:
    nic = f"{prefix}nic"
    daemon.ns.add_standin_nic(nic)
    daemon.ns.ip("link", "set", nic, "mtu", "1400")
    daemon.ns.ip("link", "set", nic, "up")
    daemon.cli("network", "create", "lan", "--type=physical", f"parent={nic}")
    return nic, _nic_state(daemon, nic)


def _inside(daemon: Daemon, name: str, ifname: str) -> tuple[str, str]:
    mac = in_container(daemon, name, "cat", f"/sys/class/net/{ifname}/address").strip()
    mtu = in_container(daemon, name, "cat", f"/sys/class/net/{ifname}/mtu").strip()
    return mac, mtu


def test_nic_parent_moves_in_with_mac_and_mtu_and_comes_back_on_stop(daemon: Daemon, prefix: str) -> None:
    nic, original = _nic_network(daemon, prefix)
    daemon.cli("init", "busybox", "c1")
    daemon.cli("config", "device", "add", "c1", "lan0", "nic", "network=lan", "name=lan0",
               "hwaddr=10:66:6a:12:34:56")  # fmt: skip
    daemon.cli("start", "c1")
    assert daemon.ns.link(nic) is None
    assert _inside(daemon, "c1", "lan0") == ("10:66:6a:12:34:56", "1400")
    cfg = config(daemon, "c1")
    assert cfg["volatile.lan0.last_state.name"] == nic and cfg["volatile.lan0.last_state.mtu"] == "1400"
    assert f"physical: {nic} moved in, restores to {nic} mtu 1400" in daemon.cli("info", "c1").stdout
    daemon.cli("stop", "c1", "--timeout", "5")
    assert _nic_state(daemon, nic) == original
    assert "UP" in _link(daemon, nic)["flags"]  # type: ignore[operator]
    assert not any(k.startswith("volatile.lan0.last_state") for k in config(daemon, "c1"))


def test_nic_parent_comes_back_on_hot_unplug(daemon: Daemon, prefix: str) -> None:
    nic, original = _nic_network(daemon, prefix)
    daemon.cli("launch", "busybox", "c1")
    daemon.cli("config", "device", "add", "c1", "lan0", "nic", "network=lan", "name=lan0")
    assert "lan0" in in_container(daemon, "c1", "ls", "/sys/class/net")
    # In use: a second instance cannot take it.
    daemon.cli("launch", "busybox", "c2")
    msg = daemon.fails("config", "device", "add", "c2", "lan0", "nic", "network=lan", "name=lan0")
    assert f'Interface "{nic}" is in use by instance "c1"' == msg
    daemon.cli("config", "device", "remove", "c1", "lan0")
    assert _nic_state(daemon, nic) == original
    assert "lan0" not in in_container(daemon, "c1", "ls", "/sys/class/net")


def test_nic_parent_comes_back_when_the_container_init_is_killed(daemon: Daemon, prefix: str) -> None:
    nic, original = _nic_network(daemon, prefix)
    daemon.cli("init", "busybox", "c1", "-n", "lan")
    daemon.cli("start", "c1")
    pid = daemon.api("GET", "/1.0/instances/c1/state")[1]["metadata"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: daemon.ns.link(nic) is not None, 10, "the NIC to come back")
    assert _nic_state(daemon, nic) == original


def test_nic_parent_comes_back_after_daemon_sigkill_restart_and_stop(daemon: Daemon, prefix: str) -> None:
    nic, original = _nic_network(daemon, prefix)
    daemon.cli("init", "busybox", "c1", "-n", "lan")
    daemon.cli("start", "c1")
    daemon.stop(signal.SIGKILL)
    daemon.start()
    assert "c1,RUNNING" in daemon.cli("list", "--format=csv").stdout
    daemon.cli("stop", "c1")
    assert _nic_state(daemon, nic) == original


def test_a_restart_with_the_parent_inside_a_container_is_no_network_failure(
    daemon: Daemon, prefix: str
) -> None:
    # The parent is in use by the instance, not missing: no "Failed to start network" error, and the
    # network works again once the NIC is back.
    nic, original = _nic_network(daemon, prefix)
    daemon.cli("network", "set", "lan", "mtu=1450")
    daemon.cli("launch", "busybox", "c1", "-n", "lan")
    assert daemon.ns.link(nic) is None
    log = daemon.dir / "pincusd.stderr"
    start = log.stat().st_size
    daemon.stop()
    daemon.start()
    daemon.cli("admin", "waitready")
    restarted = log.read_bytes()[start:].decode()
    assert "Failed to start network" not in restarted and "Traceback" not in restarted, restarted
    assert f'parent "{nic}" is in instance "c1"' in restarted
    assert "c1,RUNNING" in daemon.cli("list", "--format=csv").stdout
    daemon.cli("stop", "c1")
    assert _link(daemon, nic)["mtu"] == 1450
    daemon.cli("network", "unset", "lan", "mtu")
    assert _nic_state(daemon, nic) == original


def test_a_physical_nic_without_name_takes_the_next_free_eth(daemon: Daemon, prefix: str) -> None:
    # As Incus: eth0 is the bridged NIC's (its device name), so the moved NIC becomes eth1 at a
    # cold start; hot-plugged next to them, another takes eth2. Each comes home under its own name.
    nic, original = _nic_network(daemon, prefix)
    other = f"{prefix}nic2"
    daemon.ns.add_standin_nic(other)
    before2 = _nic_state(daemon, other)
    daemon.ns.add_bridge(f"{prefix}br")
    daemon.cli("init", "busybox", "c1", "--no-profiles")
    daemon.cli("config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", f"parent={prefix}br")
    daemon.cli("config", "device", "add", "c1", "lan", "nic", "network=lan")
    daemon.cli("start", "c1")
    inside = set(in_container(daemon, "c1", "ls", "/sys/class/net").split())
    assert inside == {"lo", "eth0", "eth1"}, inside
    assert _inside(daemon, "c1", "eth1")[0] == original[2]  # the moved NIC, by its MAC
    daemon.cli("config", "device", "add", "c1", "more", "nic", "nictype=physical", f"parent={other}")
    inside = set(in_container(daemon, "c1", "ls", "/sys/class/net").split())
    assert inside == {"lo", "eth0", "eth1", "eth2"}, inside
    assert _inside(daemon, "c1", "eth2")[0] == before2[2]
    daemon.cli("config", "device", "remove", "c1", "more")
    assert _nic_state(daemon, other) == before2
    daemon.cli("stop", "c1")
    assert _nic_state(daemon, nic) == original


def test_physical_network_mtu_is_applied_and_restored(daemon: Daemon, prefix: str) -> None:
    nic = f"{prefix}nic"
    daemon.ns.add_standin_nic(nic)
    daemon.cli("network", "create", "lan", "--type=physical", f"parent={nic}", "mtu=1450")
    assert _link(daemon, nic)["mtu"] == 1450
    daemon.cli("network", "set", "lan", "mtu=1420")
    assert _link(daemon, nic)["mtu"] == 1420
    daemon.cli("network", "delete", "lan")
    assert _link(daemon, nic)["mtu"] == 1500


def test_a_renamed_physical_network_still_gives_the_parent_mtu_back(daemon: Daemon, prefix: str) -> None:
    nic = f"{prefix}nic"
    daemon.ns.add_standin_nic(nic)
    daemon.cli("network", "create", "lan", "--type=physical", f"parent={nic}", "mtu=1450")
    daemon.cli("network", "rename", "lan", "uplink")
    assert _link(daemon, nic)["mtu"] == 1450
    daemon.cli("network", "delete", "uplink")
    assert _link(daemon, nic)["mtu"] == 1500


def test_parent_that_vanished_is_a_clear_error(daemon: Daemon, prefix: str) -> None:
    nic = f"{prefix}nic"
    daemon.ns.add_standin_nic(nic)
    daemon.cli("network", "create", "lan", "--type=physical", f"parent={nic}")
    daemon.ns.ip("link", "del", nic)
    daemon.cli("init", "busybox", "c1")
    msg = daemon.fails("config", "device", "add", "c1", "eth0", "nic", "network=lan", "name=eth0")
    assert f'parent "{nic}" of physical network "lan" does not exist' in msg


@pytest.mark.parametrize(
    ("parent", "missing"),
    [
        ("nic", "802.1Q VLAN interfaces are not supported by this kernel"),
        # The network's "vlan" reaches the bridged NIC, which needs bridge VLAN filtering.
        ("bridge", "bridge VLAN filtering is not supported by this kernel"),
    ],
)
def test_vlan_names_the_missing_feature(daemon: Daemon, prefix: str, parent: str, missing: str) -> None:
    """tests/guestkernel runs the working paths on a kernel that has these features."""
    iface = f"{prefix}{parent[:3]}"
    daemon.ns.add_bridge(iface) if parent == "bridge" else daemon.ns.add_standin_nic(iface)
    daemon.cli("network", "create", "v10", "--type=physical", f"parent={iface}", "vlan=10")
    daemon.cli("init", "busybox", "c1", "-n", "v10")
    links_before = daemon.ns.link_names()
    assert missing in daemon.fails("start", "c1")
    assert daemon.ns.link_names() == links_before
