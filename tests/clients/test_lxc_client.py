"""Debian's LXD 5.0.2 Go client, `lxc`, against pincusd: the same commands an LXD user types.

lxc talks only to the daemon's socket (LXD_SOCKET), so it runs outside the test's namespace; what
the kernel did is read inside it.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from tests.clients.kernel import addresses, bridge_ports
from tests.pincus_testlib import IMAGE, Daemon

LXC = shutil.which("lxc") or "/usr/bin/lxc"
pytestmark = pytest.mark.skipif(not os.path.exists(LXC), reason="lxc (Debian lxd-client) is not installed")


class Lxc:
    """`lxc` pointed at one daemon, with a throw-away client config and no stdin."""

    def __init__(self, daemon: Daemon, conf: Path) -> None:
        self.daemon = daemon
        self.env = {**os.environ, "LXD_SOCKET": str(daemon.dir / "unix.socket"), "LXD_CONF": str(conf)}

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if args[:1] in (("init",), ("launch",)) and IMAGE in args[1:2]:
            self.daemon.image()
        r = subprocess.run(
            [LXC, *args], env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if check and r.returncode != 0:
            raise AssertionError(f"lxc {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r

    def fails(self, *args: str) -> str:
        """Run a command that must be refused; its error message."""
        r = self.run(*args, check=False)
        assert r.returncode != 0, f"lxc {' '.join(args)} succeeded: {r.stdout}"
        assert r.stderr.startswith("Error: "), r.stderr
        return r.stderr[len("Error: ") :].strip()

    def yaml(self, *args: str) -> Any:
        return yaml.safe_load(self.run(*args).stdout)

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--format", "json").stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [LXC, *args], env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip


# A config of its own keeps lxc from greeting a first run ("If this is your first time...").
_CONFIG = "default-remote: local\nremotes:\n  local:\n    addr: unix://\n    public: false\naliases: {}\n"


@pytest.fixture
def lxc(daemon: Daemon, tmp_path: Path) -> Lxc:
    conf = tmp_path / "lxd-conf"
    conf.mkdir()
    (conf / "config.yml").write_text(_CONFIG)
    return Lxc(daemon, conf)


@pytest.fixture
def net(lxc: Lxc, prefix: str) -> Iterator[str]:
    """A managed bridge made by `lxc network create`."""
    name = f"{prefix}net"
    lxc.run("network", "create", name, "ipv4.address=10.250.60.1/24", "ipv6.address=none")
    yield name


def _running(lxc: Lxc, name: str, *flags: str) -> None:
    lxc.run("init", "busybox", name, *flags)
    lxc.run("start", name)


def _host_name(lxc: Lxc, instance: str, device: str) -> str:
    config = lxc.yaml("config", "show", instance)["config"]
    return str(config[f"volatile.{device}.host_name"])


# --- server ---------------------------------------------------------------------------------------


def test_lxc_info_shows_the_server(lxc: Lxc) -> None:
    info = lxc.yaml("info")
    assert info["api_version"] == "1.0"
    assert info["auth"] == "trusted"
    assert "network_type_physical" in info["api_extensions"]
    assert info["environment"]["server"] == "pincus"
    assert all(isinstance(v, str) for v in info["environment"]["kernel_features"].values())


# --- networks -------------------------------------------------------------------------------------


def test_lxc_managed_bridge_create_list_show_set_unset_delete(lxc: Lxc, daemon: Daemon, prefix: str) -> None:
    name = f"{prefix}net"
    assert "created" in lxc.run("network", "create", name, "ipv4.address=10.250.61.1/24",
                                "ipv6.address=none").stdout  # fmt: skip
    assert addresses(daemon, name) == ["10.250.61.1/24"]
    listed = {n["name"]: n for n in lxc.json("network", "list")}
    assert listed[name]["managed"] is True
    assert listed[name]["type"] == "bridge"
    shown = lxc.yaml("network", "show", name)
    assert shown["config"] == {"ipv4.address": "10.250.61.1/24", "ipv6.address": "none"}
    assert shown["status"] == "Created"

    lxc.run("network", "set", name, "ipv4.address=10.250.62.1/24")
    assert addresses(daemon, name) == ["10.250.62.1/24"]
    lxc.run("network", "set", name, "ipv4.dhcp=false")
    assert lxc.run("network", "get", name, "ipv4.dhcp").stdout.strip() == "false"
    lxc.run("network", "unset", name, "ipv4.dhcp")
    assert "ipv4.dhcp" not in lxc.yaml("network", "show", name)["config"]

    lxc.run("network", "delete", name)
    assert name not in {n["name"] for n in lxc.json("network", "list") if n["managed"]}
    assert daemon.ns.link(name) is None


def test_lxc_physical_network_on_a_bridge_parent(lxc: Lxc, daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    name = f"{prefix}phy"
    lxc.run("network", "create", name, "--type=physical", f"parent={br}")
    shown = lxc.yaml("network", "show", name)
    assert (shown["type"], shown["config"], shown["managed"]) == ("physical", {"parent": br}, True)
    lxc.run("network", "set", name, "mtu=1400")
    assert lxc.run("network", "get", name, "mtu").stdout.strip() == "1400"
    lxc.run("network", "unset", name, "mtu")
    assert lxc.yaml("network", "show", name)["config"] == {"parent": br}
    # Its state is the parent's.
    parent = daemon.ns.link(br)
    assert parent is not None
    info = lxc.run("network", "info", name).stdout
    assert f"MAC address: {parent['address']}" in info
    assert "Bridge:" in info
    lxc.run("network", "delete", name)
    assert name not in {n["name"] for n in lxc.json("network", "list") if n["managed"]}
    # The admin's bridge is left where it was.
    link = daemon.ns.link(br)
    assert link is not None and "UP" in link["flags"]


def test_lxc_network_info_of_a_managed_bridge(lxc: Lxc, daemon: Daemon, net: str) -> None:
    out = lxc.run("network", "info", net).stdout
    link = daemon.ns.link(net)
    assert link is not None
    mac = link["address"]
    assert f"Name: {net}" in out
    assert f"MAC address: {mac}" in out
    assert "State: up" in out
    assert "inet\t10.250.60.1/24 (global)" in out
    assert "Bridge:" in out


def test_lxc_network_list_leases_shows_a_dhcp_lease(lxc: Lxc, net: str) -> None:
    _running(lxc, "c1", "-p", "default", "-n", net)
    mac = lxc.yaml("config", "show", "c1")["config"]["volatile.eth0.hwaddr"]
    # busybox's DHCP client, without a script: the lease is taken but no address is set.
    lxc.run("exec", "c1", "--", "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", "/bin/true")
    leases = lxc.json("network", "list-leases", net)
    dynamic = [lease for lease in leases if lease["type"] == "dynamic"]
    assert [lease["hwaddr"] for lease in dynamic] == [mac]
    assert dynamic[0]["address"].startswith("10.250.60.")


# --- profiles and instances -----------------------------------------------------------------------


def test_lxc_profile_nic_gives_the_instance_its_port_and_addresses(
    lxc: Lxc, daemon: Daemon, net: str, prefix: str
) -> None:
    profile = f"{prefix}p"
    lxc.run("profile", "create", profile)
    lxc.run("profile", "device", "add", profile, "eth0", "nic", f"network={net}", "name=eth0")
    assert lxc.yaml("profile", "show", profile)["devices"] == {
        "eth0": {"type": "nic", "network": net, "name": "eth0"}
    }
    lxc.run("init", "busybox", "c1", "-p", "default", "-p", profile)
    assert lxc.yaml("config", "show", "c1")["profiles"] == ["default", profile]
    lxc.run("start", "c1")
    host = _host_name(lxc, "c1", "eth0")
    assert bridge_ports(daemon)[host] == net
    lxc.run("exec", "c1", "--", "ip", "addr", "add", "10.250.60.5/24", "dev", "eth0")

    [c1] = lxc.json("list", "c1")
    assert c1["status"] == "Running"
    eth0 = c1["state"]["network"]["eth0"]
    assert {"family": "inet", "address": "10.250.60.5", "netmask": "24", "scope": "global"} in eth0[
        "addresses"
    ]
    assert eth0["hwaddr"] == lxc.yaml("config", "show", "c1")["config"]["volatile.eth0.hwaddr"]
    assert "10.250.60.5 (eth0)" in lxc.run("list", "c1", "--format", "csv", "-c", "4").stdout


def test_lxc_info_names_each_nics_host_interface(lxc: Lxc, net: str) -> None:
    _running(lxc, "c1", "-p", "default", "-n", net)
    host = _host_name(lxc, "c1", "eth0")
    [c1] = lxc.json("list", "c1")
    assert c1["state"]["network"]["eth0"]["host_name"] == host
    assert f"Host interface: {host}" in lxc.run("info", "c1").stdout


def test_lxc_list_filters_by_status_as_typed(lxc: Lxc) -> None:
    _running(lxc, "c1", "-p", "default")
    lxc.run("init", "busybox", "c2", "-p", "default")
    # lxc sends the value as typed (`?filter=status+eq+running`); the server compares without case.
    assert [i["name"] for i in lxc.json("list", "status=running")] == ["c1"]
    assert [i["name"] for i in lxc.json("list", "status=stopped")] == ["c2"]


def test_lxc_hotplug_and_unplug_a_nic_on_a_running_instance(
    lxc: Lxc, daemon: Daemon, net: str, prefix: str
) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    lxc.run("network", "create", f"{prefix}phy", "--type=physical", f"parent={br}")
    _running(lxc, "c1", "-p", "default", "-n", net)
    before = set(bridge_ports(daemon))

    lxc.run("config", "device", "add", "c1", "eth1", "nic", f"network={prefix}phy", "name=eth1")
    host = _host_name(lxc, "c1", "eth1")
    assert bridge_ports(daemon) == {**dict.fromkeys(before, net), host: br}
    assert "eth1" in lxc.run("exec", "c1", "--", "ip", "-o", "link", "show", "eth1").stdout

    lxc.run("config", "device", "remove", "c1", "eth1")
    assert set(bridge_ports(daemon)) == before
    assert daemon.ns.link(host) is None
    assert "volatile.eth1.host_name" not in lxc.yaml("config", "show", "c1")["config"]


def test_lxc_hotplug_and_unplug_a_disk_on_a_running_instance(lxc: Lxc, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("host data\n")
    _running(lxc, "c1", "-p", "default")
    lxc.run("config", "device", "add", "c1", "data", "disk", f"source={shared}", "path=/mnt/data",
            "readonly=true")  # fmt: skip
    assert lxc.run("exec", "c1", "--", "cat", "/mnt/data/from-host").stdout == "host data\n"
    lxc.run("config", "device", "remove", "c1", "data")
    r = lxc.run("exec", "c1", "--", "test", "-e", "/mnt/data/from-host", check=False)
    assert r.returncode == 1 and (shared / "from-host").exists()


def test_lxc_exec_without_a_terminal_passes_output_and_exit_code(lxc: Lxc) -> None:
    _running(lxc, "c1", "-p", "default")
    r = lxc.run("exec", "c1", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "hi\n", "oops\n")


def test_lxc_exec_with_a_terminal_gets_a_pts(lxc: Lxc) -> None:
    _running(lxc, "c1", "-p", "default")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [LXC, "exec", "c1", "--", "sh", "-c", "tty; exit 4"], env=lxc.env, stdin=slave, stdout=slave,
        stderr=slave,
    )  # fmt: skip
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: lxc, the terminal's last user, has gone
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=10) == 4
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    assert re.fullmatch(r"/dev/pts/\d+\r\n", out.decode()), out


def test_lxc_stop_and_delete_take_the_port_away(lxc: Lxc, daemon: Daemon, net: str) -> None:
    _running(lxc, "c1", "-p", "default", "-n", net)
    host = _host_name(lxc, "c1", "eth0")
    assert host in bridge_ports(daemon)
    lxc.run("stop", "c1")
    assert lxc.json("list", "c1")[0]["status"] == "Stopped"
    assert daemon.ns.link(host) is None
    lxc.run("delete", "c1")
    assert lxc.json("list") == []
    assert "not found" in lxc.fails("config", "show", "c1")


def test_lxc_launch_without_profiles_gets_default(lxc: Lxc) -> None:
    # lxc sends "profiles": null, which LXD and Incus read as ["default"].
    lxc.run("launch", "busybox", "c1")
    [c1] = lxc.json("list", "c1")
    assert (c1["status"], c1["profiles"]) == ("Running", ["default"])


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """Each line STREAM gives, read on a thread of its own; "" once it ends."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _until(lines: queue.Queue[str], found: Callable[[str], bool], timeout: float = 20) -> list[str]:
    """The lines up to the first one FOUND accepts (that one included); fails at end or timeout."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        assert line, f"stream ended before the line looked for: {seen}"
        seen.append(line)
        if found(line):
            return seen


def test_lxc_monitor_sees_instance_started(lxc: Lxc) -> None:
    lxc.run("init", "busybox", "c1", "-p", "default")
    monitor = lxc.popen("--debug", "monitor", "--type=lifecycle", "--format=json")
    try:
        assert monitor.stderr is not None and monitor.stdout is not None
        events = _lines(monitor.stdout)
        # --debug logs the websocket's connection: no event is missed after it.
        _until(_lines(monitor.stderr), lambda line: "Connected to the websocket" in line)
        lxc.run("start", "c1")
        seen = _until(events, lambda line: '"instance-started"' in line)
        event = json.loads(seen[-1])
        assert event["type"] == "lifecycle"
        assert event["metadata"]["action"] == "instance-started"
        assert event["metadata"]["source"] == "/1.0/instances/c1"
    finally:
        monitor.kill()
        monitor.wait()


# --- refusals -------------------------------------------------------------------------------------


def test_lxc_refuses_a_physical_nic_on_a_bridge(lxc: Lxc, daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    _running(lxc, "c1", "-p", "default")
    before = bridge_ports(daemon)
    err = lxc.fails("config", "device", "add", "c1", "eth2", "nic", "nictype=physical", f"parent={br}")
    assert "is a bridge, use nictype=bridged instead" in err
    assert br in err
    assert "eth2" not in (lxc.yaml("config", "show", "c1")["devices"] or {})
    assert bridge_ports(daemon) == before
    assert daemon.ns.link(br) is not None


def test_lxc_network_set_of_a_bad_key_names_it(lxc: Lxc, net: str) -> None:
    err = lxc.fails("network", "set", net, "bogus.key=1")
    assert '"bogus.key"' in err
    assert "bogus.key" not in lxc.yaml("network", "show", net)["config"]


def test_lxc_storage_pools_and_volumes(lxc: Lxc, daemon: Daemon) -> None:
    assert "created" in lxc.run("storage", "create", "p1", "dir").stdout
    lxc.run("init", "c1", "--empty", "-s", "p1")
    assert {p["name"]: p["driver"] for p in lxc.json("storage", "list")} == {"p1": "dir"}
    shown = lxc.yaml("storage", "show", "p1")
    assert shown["used_by"] == ["/1.0/instances/c1"] and shown["status"] == "Created"
    vols = lxc.json("storage", "volume", "list", "p1")
    assert [(v["type"], v["name"]) for v in vols] == [("container", "c1")]
    assert (daemon.dir / "storage-pools" / "p1" / "containers" / "c1" / "rootfs").is_dir()
    assert "in use" in lxc.fails("storage", "delete", "p1")
    lxc.run("delete", "c1")
    lxc.run("storage", "delete", "p1")
    assert lxc.json("storage", "list") == []


def test_lxc_config_edit_without_devices_cannot_drop_the_root_disk(lxc: Lxc, daemon: Daemon) -> None:
    lxc.run("storage", "create", "p1", "dir")
    lxc.run("init", "c1", "--empty", "-s", "p1")
    shown = lxc.yaml("config", "show", "c1")
    assert shown["devices"]["root"] == {"type": "disk", "path": "/", "pool": "p1"}
    del shown["devices"]
    shown["config"]["user.note"] = "edited"
    r = subprocess.run(
        [LXC, "config", "edit", "c1"], env=lxc.env, input=yaml.safe_dump(shown), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0 and 'would have no root disk: keep device "root"' in r.stderr, r.stderr
    after = lxc.yaml("config", "show", "c1")
    assert after["devices"]["root"]["pool"] == "p1" and "user.note" not in after["config"]
    shown["devices"] = after["devices"]  # the same edit with its devices goes through
    subprocess.run(
        [LXC, "config", "edit", "c1"], env=lxc.env, input=yaml.safe_dump(shown), capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    assert lxc.yaml("config", "show", "c1")["config"]["user.note"] == "edited"
    lxc.run("delete", "c1")
    lxc.run("storage", "delete", "p1")
