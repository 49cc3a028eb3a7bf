"""VMs with bridged NICs: QEMU holds the TAP, QMP reports the volatile MAC, hot-plug over QMP."""

from __future__ import annotations

from pathlib import Path

from pincus.host import qemu
from tests.integration.helpers import config, wait_for
from tests.pincus_testlib import Daemon, qemu_nic_macs


def _qmp(daemon: Daemon, name: str) -> Path:
    return daemon.dir / "instances" / name / "qmp.sock"


def test_vm_tap_on_bridge_with_volatile_mac(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    # -S: QEMU holds the NIC without booting a guest; cheap proof QEMU accepted it.
    daemon.cli("init", "v1", "--vm", "-c", "raw.qemu=-S")
    daemon.cli("config", "device", "add", "v1", "eth0", "nic", "nictype=bridged", f"parent={br}")
    daemon.cli("start", "v1")
    cfg = config(daemon, "v1")
    tap, mac = cfg["volatile.eth0.host_name"], cfg["volatile.eth0.hwaddr"]
    assert tap.startswith("tap")
    link = daemon.ns.link(tap)
    assert link is not None and link["master"] == br
    assert "UP" in link["flags"] and "NO-CARRIER" not in link["flags"]
    assert qemu_nic_macs(_qmp(daemon, "v1")) == {qemu.device_id("eth0"): mac}

    # Hot-plug a second NIC through QMP, then take it away again.
    daemon.cli("config", "device", "add", "v1", "eth1", "nic", "nictype=bridged", f"parent={br}")
    cfg = config(daemon, "v1")
    tap1, mac1 = cfg["volatile.eth1.host_name"], cfg["volatile.eth1.hwaddr"]
    assert qemu_nic_macs(_qmp(daemon, "v1"))[qemu.device_id("eth1")] == mac1
    wait_for(
        lambda: "NO-CARRIER" not in (daemon.ns.link(tap1) or {"flags": ["NO-CARRIER"]})["flags"], 5, "carrier"
    )
    daemon.cli("config", "device", "remove", "v1", "eth1")
    # A paused guest cannot acknowledge the unplug; the host side must be gone regardless.
    assert daemon.ns.link(tap1) is None
    assert not any(k.startswith("volatile.eth1.") for k in config(daemon, "v1"))

    assert "virtual machine" in daemon.fails("exec", "v1", "--", "true")
    daemon.cli("stop", "v1", "-f")
    assert daemon.ns.link(tap) is None
    # The MAC survives a restart.
    daemon.cli("start", "v1")
    assert qemu_nic_macs(_qmp(daemon, "v1")) == {qemu.device_id("eth0"): mac}
    daemon.cli("stop", "v1", "-f")


def test_vm_start_failure_leaves_nothing(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    daemon.cli("init", "v1", "--vm", "-c", "raw.qemu=-no-such-qemu-option")
    daemon.cli("config", "device", "add", "v1", "eth0", "nic", "nictype=bridged", f"parent={br}")
    before = sorted(link["ifname"] for link in daemon.ns.ipj("link", "show"))
    msg = daemon.fails("start", "v1")
    assert "no-such-qemu-option" in msg or "QEMU" in msg or "qemu" in msg
    assert sorted(link["ifname"] for link in daemon.ns.ipj("link", "show")) == before
    assert not any(k.startswith("volatile.") for k in config(daemon, "v1"))
