"""VMs with bridged NICs: QEMU holds the TAP, QMP reports the volatile MAC, hot-plug over QMP."""

from __future__ import annotations

from pathlib import Path

from pincus.host import qemu, qmp
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


def test_hot_plugged_nics_take_their_boot_priority_as_cold_plugged_ones(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    daemon.cli("init", "v1", "--vm", "-c", "raw.qemu=-S", "--no-profiles")
    nic = ("nic", "nictype=bridged", f"parent={br}")
    daemon.cli("config", "device", "add", "v1", "eth0", *nic, "boot.priority=1")
    daemon.cli("config", "device", "add", "v1", "eth1", *nic, "boot.priority=1")
    daemon.cli("config", "device", "add", "v1", "eth2", *nic)
    daemon.cli("start", "v1")
    # Hot-plugged: one more of the same priority (QEMU refuses a bootindex already in use) and
    # one of a higher priority, which must come first.
    daemon.cli("config", "device", "add", "v1", "eth3", *nic, "boot.priority=1")
    daemon.cli("config", "device", "add", "v1", "eth4", *nic, "boot.priority=9")
    idx = {k.removeprefix("dev-"): v for k, v in qemu.nic_bootindexes(_qmp(daemon, "v1")).items()}
    assert idx["eth2"] == -1  # no priority: not in the boot order
    ones = [idx[d] for d in ("eth0", "eth1", "eth3")]
    assert len(set(ones)) == 3 and min(ones) >= 0, idx
    assert 0 <= idx["eth4"] < min(ones), idx
    daemon.cli("stop", "v1", "-f")
    # The same order after a cold start.
    daemon.cli("start", "v1")
    cold = {k.removeprefix("dev-"): v for k, v in qemu.nic_bootindexes(_qmp(daemon, "v1")).items()}
    assert cold["eth2"] == -1 and 0 <= cold["eth4"] < min(cold[d] for d in ("eth0", "eth1", "eth3"))
    daemon.cli("stop", "v1", "-f")


def test_limits_cpu_gives_the_vm_that_many_vcpus(daemon: Daemon) -> None:
    daemon.cli("init", "v1", "--vm", "-c", "raw.qemu=-S", "-c", "limits.cpu=3", "--no-profiles")
    daemon.cli("start", "v1")
    with qmp.QMP(_qmp(daemon, "v1"), 10) as monitor:
        assert len(monitor.execute("query-cpus-fast")) == 3
    daemon.cli("stop", "v1", "-f")


def test_limits_cpu_set_and_memory_size_the_vm(daemon: Daemon) -> None:
    daemon.cli(
        "init", "v1", "--vm", "--no-profiles",
        "-c", "raw.qemu=-S", "-c", "limits.cpu=0-1", "-c", "limits.memory=300MiB",
    )  # fmt: skip
    daemon.cli("start", "v1")
    with qmp.QMP(_qmp(daemon, "v1"), 10) as monitor:
        assert len(monitor.execute("query-cpus-fast")) == 2
        assert monitor.execute("query-memory-size-summary")["base-memory"] == 300 * 1024 * 1024
    daemon.cli("stop", "v1", "-f")
    # A share of the host's memory, as Incus takes it.
    daemon.cli("config", "set", "v1", "limits.memory=1%")
    total = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    daemon.cli("start", "v1")
    with qmp.QMP(_qmp(daemon, "v1"), 10) as monitor:
        mib = monitor.execute("query-memory-size-summary")["base-memory"] // (1024 * 1024)
        assert mib == max(16, total // 100 // (1024 * 1024))
    daemon.cli("stop", "v1", "-f")
    assert "at most 64 vCPUs" in daemon.fails("config", "set", "v1", "limits.cpu=65")
    assert "not supported for virtual machines" in daemon.fails("config", "set", "v1", "limits.processes=5")
