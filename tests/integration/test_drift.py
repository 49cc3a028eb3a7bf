"""`pincus admin check [--repair]`: one thing broken from outside is found, put back, and seen back
by the kernel; what pincus does not own is reported and left alone."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import config, in_container, wait_for
from tests.pincus_testlib import Daemon

NET_V4 = "10.250.90"


@pytest.fixture(autouse=True)
def _slow_supervisor(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The daemon's supervisor would restart a killed dnsmasq within a second, before any check."""
    monkeypatch.setenv("PINCUS_SUPERVISE_INTERVAL", "3600")
    yield


def check(daemon: Daemon, *args: str) -> tuple[int, list[str]]:
    r = daemon.cli("admin", "check", *args, check=False)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, r.stdout.strip().splitlines()


def nft_json(daemon: Daemon, *args: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(daemon.ns.run("nft", "-j", *args).stdout)["nftables"]
    return items


def bridge_table(daemon: Daemon) -> str:
    (name,) = [
        t["table"]["name"]
        for t in nft_json(daemon, "list", "tables")
        if "table" in t and t["table"]["family"] == "bridge" and t["table"]["name"].startswith("pincus_")
    ]
    return str(name)


def set_elements(daemon: Daemon, set_name: str) -> list[Any]:
    for item in nft_json(daemon, "list", "set", "bridge", bridge_table(daemon), set_name):
        if "set" in item:
            return list(item["set"].get("elem", []))
    return []


def qdisc_kinds(daemon: Daemon, dev: str) -> set[str]:
    out = daemon.ns.run("tc", "-j", "qdisc", "show", "dev", dev).stdout
    return {q["kind"] for q in json.loads(out or "[]")}


def dnsmasq_dir(daemon: Daemon, net: str) -> Path:
    return daemon.dir / "networks" / net / "dnsmasq"


def dnsmasq_pid(daemon: Daemon, net: str) -> int | None:
    try:
        pid = int((dnsmasq_dir(daemon, net) / "dnsmasq.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"dnsmasq" in cmdline else None


def filtered_limited_container(daemon: Daemon, prefix: str) -> tuple[str, str]:
    """A managed bridge and a running container on it with a filtered, limited NIC and a static
    address; the check finds nothing. (network, host end of the NIC)"""
    net = f"{prefix}br"
    daemon.cli("network", "create", net, f"ipv4.address={NET_V4}.1/24", "ipv6.address=none")
    daemon.cli("init", "busybox", "c1", "-n", net)
    daemon.cli("config", "device", "set", "c1", "eth0", f"ipv4.address={NET_V4}.50",
               "security.ipv4_filtering=true", "limits.ingress=10Mbit", "limits.egress=10Mbit")  # fmt: skip
    daemon.cli("start", "c1")
    assert check(daemon) == (0, ["No drift found"])
    return net, config(daemon, "c1")["volatile.eth0.host_name"]


def only_difference(daemon: Daemon, *words: str) -> None:
    """`admin check` lists exactly one difference, naming WORDS, and exits 1."""
    status, lines = check(daemon)
    assert status == 1, lines
    assert len(lines) == 1, lines
    assert all(w in lines[0] for w in words), lines


def repaired(daemon: Daemon) -> None:
    status, lines = check(daemon, "--repair")
    assert status == 0, lines
    assert lines and all(line.startswith("Repaired: ") for line in lines), lines
    assert check(daemon) == (0, ["No drift found"])


def test_info_lists_what_each_nic_owns(daemon: Daemon, prefix: str) -> None:
    net, host = filtered_limited_container(daemon, prefix)
    info = daemon.cli("info", "c1").stdout
    owns = info[info.index("Owns:") :]
    assert f"veth {host}" in owns
    assert "ifb pif" in owns  # this kernel has no tc police: egress is shaped on an IFB
    assert f'nft element bridge {bridge_table(daemon)} allowed_v4 {{ "{host}" . {NET_V4}.50 }}' in owns
    assert f"hosts file {dnsmasq_dir(daemon, net)}/dnsmasq.hosts/c1.eth0" in owns
    net_info = daemon.cli("network", "info", net).stdout
    assert f"  interface {net}\n  address {NET_V4}.1/24\n" in net_info[net_info.index("Owns:") :]


def test_deleted_veth_is_remade_with_its_peer_inside(daemon: Daemon, prefix: str) -> None:
    net, host = filtered_limited_container(daemon, prefix)
    daemon.ns.ip("link", "del", host)
    only_difference(daemon, f"veth {host}", "missing")
    repaired(daemon)
    link = daemon.ns.link(host)
    assert link is not None and link["master"] == net and "UP" in link["flags"]
    # busybox's ip (no -j in the image): "link/ether MAC brd ..." is the MAC the kernel inside holds.
    inside = in_container(daemon, "c1", "ip", "-o", "link", "show", "eth0")
    assert re.findall(r"link/ether (\S+)", inside) == [config(daemon, "c1")["volatile.eth0.hwaddr"]]
    assert "tbf" in qdisc_kinds(daemon, host) and "ingress" in qdisc_kinds(daemon, host)
    assert any(e == host for e in set_elements(daemon, "filtered"))


def test_bridge_taken_down_is_brought_up(daemon: Daemon, prefix: str) -> None:
    net, _ = filtered_limited_container(daemon, prefix)
    daemon.ns.ip("link", "set", net, "down")
    only_difference(daemon, f"interface state {net}", "expected up, found down")
    r = daemon.cli("admin", "check", "--format=json", check=False)
    assert r.returncode == 1
    assert json.loads(r.stdout)["differences"] == [
        {"owner": f'network "{net}"', "kind": "interface state", "name": net, "expected": "up",
         "found": "down", "repairable": True}
    ]  # fmt: skip
    status, doc = daemon.api("POST", "/internal/pincus/check", {"repair": "yes"})
    assert status == 400 and '"repair"' in doc["error"], doc
    repaired(daemon)
    link = daemon.ns.link(net)
    assert link is not None and "UP" in link["flags"]


def test_deleted_nft_set_element_is_added_back(daemon: Daemon, prefix: str) -> None:
    _, host = filtered_limited_container(daemon, prefix)
    table = bridge_table(daemon)
    daemon.ns.run("nft", "delete", "element", "bridge", table, "allowed_v4", f'{{ "{host}" . {NET_V4}.50 }}')
    assert set_elements(daemon, "allowed_v4") == []
    only_difference(daemon, "nft element", f'allowed_v4 {{ "{host}" . {NET_V4}.50 }}', "found missing")
    repaired(daemon)
    assert set_elements(daemon, "allowed_v4") == [{"concat": [host, f"{NET_V4}.50"]}]


def test_killed_dnsmasq_is_restarted(daemon: Daemon, prefix: str) -> None:
    net, _ = filtered_limited_container(daemon, prefix)
    pid = dnsmasq_pid(daemon, net)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: dnsmasq_pid(daemon, net) is None, what="dnsmasq to die")
    only_difference(daemon, f'network "{net}"', "process dnsmasq", "found not running")
    repaired(daemon)
    assert dnsmasq_pid(daemon, net) not in (None, pid)


def test_deleted_hosts_file_is_written_again(daemon: Daemon, prefix: str) -> None:
    net, _ = filtered_limited_container(daemon, prefix)
    hosts = dnsmasq_dir(daemon, net) / "dnsmasq.hosts" / "c1.eth0"
    line = hosts.read_text()
    hosts.unlink()
    only_difference(daemon, 'instance "c1" device "eth0"', f"hosts file {hosts}", "found missing")
    repaired(daemon)
    assert hosts.read_text() == line


def test_vanished_admin_bridge_is_reported_never_made(daemon: Daemon, prefix: str) -> None:
    admin = f"{prefix}adm"
    daemon.ns.add_bridge(admin)
    daemon.cli("network", "create", "phys", "--type=physical", f"parent={admin}")
    daemon.cli("init", "busybox", "c1", "-n", "phys")
    daemon.cli("start", "c1")
    host = config(daemon, "c1")["volatile.eth0.host_name"]
    assert check(daemon) == (0, ["No drift found"])
    daemon.ns.ip("link", "del", admin)
    only_difference(daemon, 'network "phys"', f"interface {admin}", "missing", "not repaired")
    status, lines = check(daemon, "--repair")
    assert status == 1 and len(lines) == 1 and lines[0].startswith("Remaining: "), lines
    assert admin not in daemon.ns.link_names()
    link = daemon.ns.link(host)
    assert link is not None and "master" not in link  # the orphaned port is left as it is


def test_flushed_shared_filter_chain_gets_its_rules_back(daemon: Daemon, prefix: str) -> None:
    filtered_limited_container(daemon, prefix)
    table = bridge_table(daemon)

    def rules() -> int:
        return sum("rule" in i for i in nft_json(daemon, "list", "chain", "bridge", table, "port_filter"))

    before = rules()
    assert before > 0
    daemon.ns.run("nft", "flush", "chain", "bridge", table, "port_filter")
    only_difference(daemon, "daemon: nft chain", f"{table} port_filter", f"expected {before} rules, found 0")
    repaired(daemon)
    assert rules() == before


def test_deleted_managed_bridge_is_remade_with_its_ports(daemon: Daemon, prefix: str) -> None:
    net, host = filtered_limited_container(daemon, prefix)
    daemon.ns.ip("link", "del", net)
    status, lines = check(daemon)
    assert status == 1, lines
    assert f'network "{net}": interface {net}: expected a bridge, found missing' in lines, lines
    repaired(daemon)
    addresses = daemon.ns.ipj("addr", "show", net)[0]["addr_info"]
    assert f"{NET_V4}.1" in [a["local"] for a in addresses]
    port = daemon.ns.link(host)
    assert port is not None and port["master"] == net
    assert dnsmasq_pid(daemon, net) is not None


def test_a_foreign_interface_with_a_pincus_name_is_left_alone(daemon: Daemon, prefix: str) -> None:
    _, host = filtered_limited_container(daemon, prefix)
    foreign = host[:-2] + ("00" if host[-2:] != "00" else "01")  # this daemon's prefix, not its NIC
    daemon.ns.ip("link", "add", foreign, "type", "veth", "peer", "name", f"{prefix}peer")
    assert check(daemon, "--repair") == (0, ["No drift found"])
    assert foreign in daemon.ns.link_names()


def test_a_physical_nic_gone_from_its_container_is_reported_not_made(daemon: Daemon, prefix: str) -> None:
    nic = f"{prefix}nic"
    daemon.ns.add_standin_nic(nic)
    daemon.cli("init", "busybox", "c1")
    daemon.cli(
        "config", "device", "add", "c1", "eth1", "nic", "nictype=physical", f"parent={nic}", "name=eth1"
    )
    daemon.cli("start", "c1")
    owns = daemon.cli("info", "c1").stdout
    assert f"interface {nic} (inside the instance as eth1)" in owns
    assert check(daemon) == (0, ["No drift found"])
    in_container(daemon, "c1", "ip", "link", "del", "eth1")  # a veth end: its peer on the host goes too
    only_difference(daemon, 'instance "c1" device "eth1"', "interface eth1", "missing", "not repaired")
    status, lines = check(daemon, "--repair")
    assert status == 1 and [line.startswith("Remaining: ") for line in lines] == [True], lines
    assert nic not in daemon.ns.link_names()  # nothing made in its place
