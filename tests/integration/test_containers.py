"""Containers with bridged NICs against the real kernel."""

from __future__ import annotations

import os
import signal

from tests.integration.helpers import config, in_container, ip_link_snapshot, ping, wait_for
from tests.pincus_testlib import Daemon


def _launch(daemon: Daemon, name: str, bridge: str, address: str) -> None:
    daemon.cli("init", "busybox", name)
    daemon.cli(
        "config", "device", "add", name, "eth0", "nic", "nictype=bridged", f"parent={bridge}", "name=eth0"
    )
    daemon.cli("start", name)
    in_container(daemon, name, "ip", "addr", "add", address, "dev", "eth0")


def test_two_containers_on_a_bridge_ping_each_other(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    _launch(daemon, "c1", br, "10.250.10.2/24")
    _launch(daemon, "c2", br, "10.250.10.3/24")
    assert ping(daemon, "c1", "10.250.10.3")
    assert ping(daemon, "c2", "10.250.10.2")

    cfg = config(daemon, "c1")
    mac_inside = in_container(daemon, "c1", "cat", "/sys/class/net/eth0/address").strip()
    assert mac_inside == cfg["volatile.eth0.hwaddr"]
    assert mac_inside.startswith("10:66:6a:")
    host_name = cfg["volatile.eth0.host_name"]
    link = daemon.ns.link(host_name)
    assert link is not None and link["master"] == br and "UP" in link["flags"]
    v6 = daemon.ns.run("cat", f"/proc/sys/net/ipv6/conf/{host_name}/disable_ipv6").stdout.strip()
    assert v6 == "1"
    # Inside: its own interfaces only, hostname = instance name, init is pid 1.
    assert sorted(in_container(daemon, "c1", "ls", "/sys/class/net").split()) == ["eth0", "lo"]
    assert in_container(daemon, "c1", "hostname").strip() == "c1"
    assert in_container(daemon, "c1", "cat", "/proc/1/comm").strip() != ""

    daemon.cli("stop", "c1", "--timeout", "5")
    assert daemon.ns.link(host_name) is None
    assert "volatile.eth0.host_name" not in config(daemon, "c1")
    # The MAC is kept across restarts.
    daemon.cli("start", "c1")
    assert in_container(daemon, "c1", "cat", "/sys/class/net/eth0/address").strip() == mac_inside
    daemon.cli("stop", "c1", "-f")


def test_hotplug_and_unplug_a_nic(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    daemon.cli("launch", "busybox", "c1")
    daemon.cli("config", "device", "add", "c1", "eth1", "nic", "nictype=bridged", f"parent={br}")
    cfg = config(daemon, "c1")
    host_name = cfg["volatile.eth1.host_name"]
    assert (
        in_container(daemon, "c1", "cat", "/sys/class/net/eth1/address").strip()
        == cfg["volatile.eth1.hwaddr"]
    )
    assert in_container(daemon, "c1", "cat", "/sys/class/net/eth1/operstate").strip() in ("up", "unknown")
    assert daemon.ns.link(host_name)["master"] == br  # type: ignore[index]
    daemon.cli("config", "device", "remove", "c1", "eth1")
    assert daemon.ns.link(host_name) is None
    assert "eth1" not in in_container(daemon, "c1", "ls", "/sys/class/net").split()
    assert not any(k.startswith("volatile.eth1.") for k in config(daemon, "c1"))
    daemon.cli("stop", "c1", "-f")


def test_failed_start_leaves_nothing_behind(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    daemon.cli("init", "busybox", "c1")
    daemon.cli("config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", f"parent={br}")
    daemon.cli("config", "device", "add", "c1", "eth1", "nic", "nictype=bridged", f"parent={prefix}gone")
    links_before = ip_link_snapshot(daemon)
    config_before = config(daemon, "c1")
    msg = daemon.fails("start", "c1")
    assert f'"{prefix}gone"' in msg and "does not exist" in msg
    assert ip_link_snapshot(daemon) == links_before
    assert config(daemon, "c1") == config_before
    # Nothing a start sets was there before (only the create's pending template trigger, which
    # the failed start leaves pending), so the equality above says the start left nothing.
    volatile_before = {k: v for k, v in config_before.items() if k.startswith("volatile.")}
    assert volatile_before == {"volatile.apply_template": "create"}, config_before
    assert "STOPPED" in daemon.cli("list", "--format=csv").stdout
    assert not (daemon.dir / "instances" / "c1" / "netns").exists() or not os.path.ismount(
        daemon.dir / "instances" / "c1" / "netns"
    )


def test_container_survives_daemon_sigkill_and_is_adopted(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    _launch(daemon, "c1", br, "10.250.11.2/24")
    host_name = config(daemon, "c1")["volatile.eth0.host_name"]
    daemon.stop(signal.SIGKILL)
    daemon.start()
    assert "c1,RUNNING" in daemon.cli("list", "--format=csv").stdout
    assert in_container(daemon, "c1", "hostname").strip() == "c1"
    daemon.cli("stop", "c1", "--timeout", "5")
    assert daemon.ns.link(host_name) is None
    assert "c1,STOPPED" in daemon.cli("list", "--format=csv").stdout


def test_killed_init_is_noticed_and_cleaned_up(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    _launch(daemon, "c1", br, "10.250.12.2/24")
    host_name = config(daemon, "c1")["volatile.eth0.host_name"]
    pid = daemon.api("GET", "/1.0/instances/c1/state")[1]["metadata"]["pid"]
    assert pid > 1
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: daemon.ns.link(host_name) is None, 10, "the host veth to go")
    wait_for(lambda: "c1,STOPPED" in daemon.cli("list", "--format=csv").stdout, 5, "STOPPED")


def test_exec_passes_stdio_and_exit_status(daemon: Daemon) -> None:
    daemon.cli("launch", "busybox", "c1")
    script = 'read x; echo "$GREETING $x $(pwd)"; echo err >&2; exit 7'
    argv = ["exec", "c1", "--env", "GREETING=hi", "--cwd", "/tmp", "--", "sh", "-c", script]
    r = daemon.cli(*argv, stdin="there\n", check=False)
    assert r.returncode == 7
    assert r.stdout == "hi there /tmp\n" and r.stderr == "err\n"
    daemon.cli("stop", "c1", "-f")


def test_instance_bad_input(daemon: Daemon, prefix: str) -> None:
    before = daemon.db_dump()
    assert "name" in daemon.fails("init", "1bad")
    assert "name" in daemon.fails("init", "a" * 64)
    assert "name" in daemon.fails("init", "has space")
    daemon.cli("init", "busybox", "c1")
    before = daemon.db_dump()
    assert "already exists" in daemon.fails("init", "c1")
    assert "not running" in daemon.fails("exec", "c1", "--", "true")
    assert "already stopped" in daemon.fails("stop", "c1")
    add = ("config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", "parent=x")
    assert "unknown key" in daemon.fails(*add, "bogus=1")
    assert "4095" in daemon.fails(*add, "vlan=4095")
    assert "not supported for containers" in daemon.fails("config", "set", "c1", "raw.qemu=-S")
    assert "boot.priority" in daemon.fails(*add, "boot.priority=1")
    assert "eth9" in daemon.fails("config", "device", "remove", "c1", "eth9")
    assert "not found" in daemon.fails("start", "nosuch")
    assert daemon.db_dump() == before
    daemon.cli("start", "c1")
    assert "already running" in daemon.fails("start", "c1")
    assert "running" in daemon.fails("delete", "c1")
    daemon.cli("delete", "c1", "-f")
    assert "not found" in daemon.fails("info", "c1")


def test_boot_autostart_starts_the_instance_with_the_daemon(daemon: Daemon) -> None:
    daemon.cli("init", "busybox", "auto", "--no-profiles", "-c", "boot.autostart=true")
    daemon.cli("init", "busybox", "manual", "--no-profiles")
    daemon.cli("init", "busybox", "off", "--no-profiles", "-c", "boot.autostart=false")
    daemon.cli("start", "manual")
    # As after a host reboot: every instance stopped with the daemon, then the daemon starts.
    daemon.cli("admin", "shutdown", "--timeout", "5")
    daemon.stop()
    daemon.start()
    states = dict(
        line.split(",")[:2] for line in daemon.cli("list", "--format=csv", "-c", "ns").stdout.split()
    )
    assert states == {"auto": "RUNNING", "manual": "STOPPED", "off": "STOPPED"}, states
    pid = daemon.api("GET", "/1.0/instances/auto/state")[1]["metadata"]["pid"]
    assert pid > 0 and os.path.exists(f"/proc/{pid}")
    daemon.cli("stop", "-f", "auto")
