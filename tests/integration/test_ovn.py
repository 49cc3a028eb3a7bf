"""OVN networks on a physical uplink, on one member: real OVN and Open vSwitch daemons started by
the test's own pincusd inside the test's network namespace (userspace datapath here)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pincus.host import qemu
from tests.integration.helpers import config, in_container, ping, wait_for
from tests.ovnlib import (
    UPLINK,
    dhcp,
    init,
    links,
    nbctl,
    ovn_dir,
    processes,
    tag,
    uplink,
    vsctl,
    yaml_config,
)
from tests.pincus_testlib import NSEXEC, Daemon, NetNS, cleanup_dir, kill_leftovers, qemu_nic_macs

pytestmark = pytest.mark.skipif(shutil.which("ovn-northd") is None, reason="OVN is not installed")


def test_two_containers_on_an_ovn_network_dhcp_ping_and_snat_then_delete_leaves_nothing(
    daemon: Daemon, prefix: str
) -> None:
    before = links(daemon)
    lan = uplink(daemon, prefix)
    daemon.cli(
        "network",
        "create",
        "ovn0",
        "--type=ovn",
        "network=up",
        "ipv4.address=10.250.91.1/24",
        "ipv4.nat=true",
    )
    net = yaml_config(daemon, "ovn0")
    assert net["volatile.network.ipv4.address"] == f"{UPLINK}.100"
    # Northbound: switches, router with SNAT and a gateway port on the uplink.
    switches = nbctl(daemon, "--bare", "--columns=name", "list", "Logical_Switch").split()
    assert any(s.endswith("ovn0-ls-int") for s in switches) and any(
        s.endswith("ovn0-ls-ext") for s in switches
    )
    nat = nbctl(daemon, "--bare", "--columns=type,external_ip,logical_ip", "list", "NAT").split()
    assert nat == ["snat", f"{UPLINK}.100", "10.250.91.0/24"]
    # The uplink bridge gained one port, a veth whose peer is in the provider bridge.
    members = [x["ifname"] for x in daemon.ns.ipj("link", "show", "master", lan)]
    assert len(members) == 1
    provider = [b for b in vsctl(daemon, "list-br").split() if b.startswith("pov")]
    assert len(provider) == 1 and members[0][:-1] + "a" in vsctl(daemon, "list-ports", provider[0]).split()

    init(daemon, "c1")
    daemon.cli("config", "device", "set", "c1", "eth0", "ipv4.address=10.250.91.50")
    daemon.cli("start", "c1")
    init(daemon, "c2")
    msg = daemon.fails("config", "device", "set", "c2", "eth0", "ipv4.address=10.250.91.50")
    assert 'already used by device "eth0" of instance "c1"' in msg
    assert "is the router" in daemon.fails(
        "config", "device", "set", "c2", "eth0", "ipv4.address=10.250.91.1"
    )
    assert "not a host address" in daemon.fails(
        "config", "device", "set", "c2", "eth0", "ipv4.address=10.9.9.9"
    )
    daemon.cli("start", "c2")
    # OVN's own DHCP hands out the static allocation, with the router and the network's MTU.
    assert dhcp(daemon, "c1") == "10.250.91.50"
    dynamic = dhcp(daemon, "c2")
    assert dynamic.startswith("10.250.91.") and dynamic not in ("10.250.91.1", "10.250.91.50")
    assert in_container(daemon, "c1", "cat", "/sys/class/net/eth0/mtu").strip() == "1400"
    assert ping(daemon, "c1", dynamic, count=3)
    leases = daemon.cli("network", "list-leases", "ovn0", "--format=csv").stdout.split()
    assert sorted(row.split(",")[0::2] for row in leases) == sorted(
        [["c1", "10.250.91.50"], ["c2", dynamic]]
    ), leases
    # SNAT: the uplink bridge's own address answers, and sees the router's uplink address.
    assert ping(daemon, "c1", f"{UPLINK}.1", count=3)
    host_name = config(daemon, "c1")["volatile.eth0.host_name"]
    assert host_name in vsctl(daemon, "list-ports", f"pint{tag(daemon)}").split()
    ports = nbctl(daemon, "--bare", "--columns=name", "list", "Logical_Switch_Port").split()
    assert sum("-inst-" in p for p in ports) == 2

    # The uplink is in use while the OVN network lives on it.
    assert "/1.0/networks/ovn0" in daemon.fails("network", "delete", "up")
    assert "uplink of ovn0" in daemon.fails(
        "network", "set", "up", f"ipv4.ovn.ranges={UPLINK}.200-{UPLINK}.201"
    )

    daemon.cli("delete", "-f", "c1", "c2")
    ports = nbctl(daemon, "--bare", "--columns=name", "list", "Logical_Switch_Port").split()
    assert not any("-inst-" in p for p in ports)
    assert daemon.ns.link(host_name) is None
    daemon.cli("network", "delete", "ovn0")
    # Nothing is left: no daemon, no database, no veth on the uplink, no OVS/OVN interface.
    assert not ovn_dir(daemon).exists()
    assert daemon.ns.ipj("link", "show", "master", lan) == []
    assert links(daemon) == before | {lan}
    assert not [p for p in processes() if str(daemon.dir) in p]


def test_ipv6_router_advertisements_ping_and_snat(daemon: Daemon, prefix: str) -> None:
    lan = uplink(daemon, prefix)
    daemon.ns.ip("addr", "add", "fd42:250:90::1/64", "dev", lan, "nodad")
    daemon.cli(
        "network",
        "set",
        "up",
        "ipv6.gateway=fd42:250:90::1/64",
        "ipv6.ovn.ranges=fd42:250:90::100-fd42:250:90::1ff",
    )
    daemon.cli(
        "network", "create", "ovn0", "--type=ovn", "network=up", "ipv4.nat=true",
        "ipv6.address=fd42:250:91::1/64", "ipv6.nat=true",
    )  # fmt: skip
    assert yaml_config(daemon, "ovn0")["volatile.network.ipv6.address"] == "fd42:250:90::100"
    init(daemon, "c1", start=True)
    init(daemon, "c2", start=True)

    def slaac(name: str) -> str | None:
        addrs = json.loads(in_container(daemon, name, "ip", "-j", "-6", "addr", "show", "eth0"))
        found = [a["local"] for a in addrs[0]["addr_info"] if a["local"].startswith("fd42:250:91:")]
        return found[0] if found and not any(a.get("tentative") for a in addrs[0]["addr_info"]) else None

    wait_for(lambda: slaac("c1") is not None and slaac("c2") is not None, 40, "SLAAC addresses from OVN's RA")
    c2 = slaac("c2")
    assert c2 is not None
    wait_for(lambda: ping(daemon, "c1", c2), 10, "c1 to reach c2 over IPv6")
    # SNAT to the uplink: the uplink bridge's own IPv6 address answers.
    wait_for(lambda: ping(daemon, "c1", "fd42:250:90::1"), 10, "c1 to reach the uplink over IPv6")
    nat = nbctl(daemon, "--bare", "--columns=external_ip", "list", "NAT").split()
    assert sorted(nat) == sorted([f"{UPLINK}.100", "fd42:250:90::100"])
    daemon.cli("delete", "-f", "c1", "c2")
    daemon.cli("network", "delete", "ovn0")
    assert not ovn_dir(daemon).exists()


def test_routed_ingress_reaches_the_ovn_subnet_through_a_route(daemon: Daemon, prefix: str) -> None:
    lan = uplink(daemon, prefix, "ovn.ingress_mode=routed", "ipv4.routes=10.250.92.0/24")
    daemon.cli(
        "network",
        "create",
        "ovn0",
        "--type=ovn",
        "network=up",
        "ipv4.address=10.250.92.1/24",
        "ipv4.nat=false",
    )
    assert nbctl(daemon, "--bare", "--columns=type", "list", "NAT").split() == []
    # Unused, it may change: the logical network is made again from the new config, on the same
    # uplink address (PUT, which names no volatile key, keeps it).
    daemon.cli("network", "set", "ovn0", "dns.domain=ovn.test")
    assert '"ovn.test"' in nbctl(daemon, "--bare", "--columns=options", "list", "DHCP_Options")
    assert yaml_config(daemon, "ovn0")["volatile.network.ipv4.address"] == f"{UPLINK}.100"
    assert "ovn0" in daemon.cli("network", "list").stdout
    daemon.cli("network", "info", "ovn0")
    init(daemon, "c1")
    daemon.cli("config", "device", "set", "c1", "eth0", "ipv4.address=10.250.92.20")
    daemon.cli("start", "c1")
    assert dhcp(daemon, "c1") == "10.250.92.20"
    # The uplink routes the OVN subnet to the router's uplink address; the container answers from
    # its own address (no NAT).
    daemon.ns.ip("route", "add", "10.250.92.0/24", "via", f"{UPLINK}.100", "dev", lan)
    assert "in use" in daemon.fails("network", "set", "ovn0", "dns.domain=other.test")
    wait_for(lambda: _ping_from_host(daemon, "10.250.92.20"), 15, "the container to answer from the uplink")
    daemon.cli("delete", "-f", "c1")
    daemon.cli("network", "delete", "ovn0")
    assert not ovn_dir(daemon).exists()


def test_dead_ovn_daemons_are_restarted_and_a_daemon_restart_keeps_the_network(
    daemon: Daemon, prefix: str
) -> None:
    uplink(daemon, prefix)
    daemon.cli(
        "network",
        "create",
        "ovn0",
        "--type=ovn",
        "network=up",
        "ipv4.address=10.250.96.1/24",
        "ipv4.nat=true",
    )
    for name in ("c1", "c2"):
        init(daemon, name)
    daemon.cli("config", "device", "set", "c1", "eth0", "ipv4.address=10.250.96.11")
    daemon.cli("config", "device", "set", "c2", "eth0", "ipv4.address=10.250.96.12")
    daemon.cli("start", "c1", "c2")
    assert dhcp(daemon, "c1") == "10.250.96.11" and dhcp(daemon, "c2") == "10.250.96.12"
    assert ping(daemon, "c1", "10.250.96.12", count=2)
    # The supervisor starts again what dies, from its own pid file, with the same databases.
    pids = {f.stem: int(f.read_text()) for f in ovn_dir(daemon).glob("*/*.pid")}
    assert set(pids) == {"nb", "sb", "northd", "switchdb", "vswitchd", "controller"}
    for name in ("northd", "controller"):
        os.kill(pids[name], signal.SIGKILL)

    def restarted() -> bool:
        now = {f.stem: f.read_text().strip() for f in ovn_dir(daemon).glob("*/*.pid")}
        return all(now.get(n, str(pids[n])) != str(pids[n]) for n in ("northd", "controller"))

    wait_for(restarted, 15, "northd and ovn-controller to be restarted")
    wait_for(lambda: ping(daemon, "c1", "10.250.96.12"), 15, "the containers to reach each other again")
    # A pincusd restart finds its OVN daemons and rows and changes nothing.
    nb_before = nbctl(daemon, "show")
    daemon.stop()
    daemon.start()
    assert nbctl(daemon, "show") == nb_before
    assert ping(daemon, "c2", "10.250.96.11", count=2)
    daemon.cli("delete", "-f", "c1", "c2")
    daemon.cli("network", "delete", "ovn0")
    assert not ovn_dir(daemon).exists()


def test_a_vm_nic_is_a_tap_bound_to_its_logical_port(daemon: Daemon, prefix: str) -> None:
    uplink(daemon, prefix)
    daemon.cli("network", "create", "ovn0", "--type=ovn", "network=up")
    daemon.cli("init", "v1", "--vm", "-n", "ovn0", "-c", "raw.qemu=-S")
    daemon.cli("start", "v1")
    cfg = config(daemon, "v1")
    tap, mac = cfg["volatile.eth0.host_name"], cfg["volatile.eth0.hwaddr"]
    assert tap.startswith("tap") and tap in vsctl(daemon, "list-ports", f"pint{tag(daemon)}").split()
    assert (
        vsctl(daemon, "get", "Interface", tap, "external_ids:iface-id")
        .strip()
        .strip('"')
        .endswith("-inst-v1-eth0")
    )
    assert qemu_nic_macs(daemon.dir / "instances" / "v1" / "qmp.sock") == {qemu.device_id("eth0"): mac}
    addresses = nbctl(
        daemon, "--bare", "--columns=addresses", "find", "Logical_Switch_Port", "name=" + _port(daemon)
    )
    assert addresses.split()[0] == mac
    daemon.cli("stop", "v1", "-f")
    assert daemon.ns.link(tap) is None
    assert nbctl(daemon, "find", "Logical_Switch_Port", "name=" + _port(daemon)).strip() == ""
    daemon.cli("delete", "v1")
    daemon.cli("network", "delete", "ovn0")
    assert not ovn_dir(daemon).exists()


def _port(daemon: Daemon) -> str:
    return f"pincus-{tag(daemon)}-ovn0-inst-v1-eth0"


def test_a_nic_parent_uplink_goes_into_the_provider_bridge_and_comes_back(
    daemon: Daemon, prefix: str
) -> None:
    nic = f"{prefix}nic"
    daemon.ns.add_standin_nic(nic)
    daemon.cli(
        "network", "create", "up", "--type=physical", f"parent={nic}",
        f"ipv4.gateway={UPLINK}.1/24", f"ipv4.ovn.ranges={UPLINK}.100-{UPLINK}.109",
    )  # fmt: skip
    before = daemon.ns.link(nic)
    assert before is not None and "UP" not in before["flags"]
    daemon.cli("network", "create", "ovn0", "--type=ovn", "network=up")  # auto: a /24 with NAT
    provider = [b for b in vsctl(daemon, "list-br").split() if b.startswith("pov")]
    assert len(provider) == 1 and vsctl(daemon, "list-ports", provider[0]).split() == [nic]
    net = yaml_config(daemon, "ovn0")
    assert net["ipv4.address"].startswith("10.250.") and net["ipv4.nat"] == "true"
    assert nbctl(daemon, "--bare", "--columns=type", "list", "NAT").split() == ["snat"]
    daemon.cli("network", "delete", "ovn0")
    after = daemon.ns.link(nic)
    assert after is not None
    # Down again and out of any bridge, as the admin left it (the kernel keeps the qdisc that
    # bringing it up attached).
    fields = ("flags", "mtu", "address", "operstate", "master")
    assert {k: after.get(k) for k in fields} == {k: before.get(k) for k in fields}
    assert not ovn_dir(daemon).exists()


class ExistingCentralDaemon(Daemon):
    """A pincusd told to use an existing OVN central (PINCUS_OVN_NORTHBOUND/SOUTHBOUND)."""

    nb = "tcp:127.0.0.1:1"
    sb = "tcp:127.0.0.1:2"

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "PINCUS_OVN_NORTHBOUND": self.nb, "PINCUS_OVN_SOUTHBOUND": self.sb}


def test_an_existing_central_gets_the_rows_and_the_chassis_and_loses_them_on_delete(
    netns: NetNS, prefix: str
) -> None:
    from pincus.host import ovs_daemons, ovs_layout

    central = Path(tempfile.mkdtemp(prefix="pincus-test-central-"))
    specs = ovs_layout.central_specs(central)
    nb, sb = (f"unix:{p}" for p in ovs_layout.central_sockets(central))
    d = ExistingCentralDaemon(netns, Path(tempfile.mkdtemp(prefix="pincus-test-")))
    d.nb, d.sb = nb, sb
    try:
        start = (
            f"from pincus.host import ovs_daemons as o, ovs_layout as y; "
            f"o.start_all(y.central_specs(Path({str(central)!r})))"
        )
        netns.run(sys.executable, "-c", f"from pathlib import Path; {start}")
        d.start()
        uplink(d, prefix)
        d.cli(
            "network",
            "create",
            "ovn0",
            "--type=ovn",
            "network=up",
            "ipv4.address=10.250.91.1/24",
            "ipv4.nat=true",
        )
        assert not (d.dir / "ovn" / "central").exists()  # no embedded central of its own
        init(d, "c1", start=True)
        init(d, "c2", start=True)
        a1, a2 = dhcp(d, "c1"), dhcp(d, "c2")
        assert a1 != a2 and ping(d, "c1", a2, count=2)
        chassis = _ovn(["ovn-sbctl", f"--db={sb}", "--bare", "--columns=name", "list", "Chassis"]).split()
        assert chassis == [f"pincus-{tag(d)}"]
        d.cli("delete", "-f", "c1", "c2")
        d.cli("network", "delete", "ovn0")
        # The central keeps running (it is not ours) with nothing of ours left in it.
        for table in ("Logical_Switch", "Logical_Router", "Logical_Switch_Port", "NAT", "DHCP_Options"):
            assert _ovn(["ovn-nbctl", f"--db={nb}", "--bare", "--columns=_uuid", "list", table]).split() == []
        assert _ovn(["ovn-sbctl", f"--db={sb}", "--bare", "--columns=name", "list", "Chassis"]).split() == []
        assert not (d.dir / "ovn").exists()
    finally:
        d.shut_down()
        cleanup_dir(d.dir)
        ovs_daemons.stop_all(specs)
        kill_leftovers(central)
        cleanup_dir(central)


def _ovn(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=20).stdout


def test_admin_check_finds_and_repairs_what_went_missing(daemon: Daemon, prefix: str) -> None:
    lan = uplink(daemon, prefix)
    daemon.cli("network", "create", "ovn0", "--type=ovn", "network=up")
    assert daemon.cli("admin", "check").returncode == 0
    # The uplink's veth deleted from outside, the northbound rows removed by hand.
    (port,) = [x["ifname"] for x in daemon.ns.ipj("link", "show", "master", lan)]
    daemon.ns.ip("link", "del", port)
    for router in nbctl(daemon, "--bare", "--columns=name", "list", "Logical_Router").split():
        nbctl(daemon, "lr-del", router)
    for switch in nbctl(daemon, "--bare", "--columns=name", "list", "Logical_Switch").split():
        nbctl(daemon, "ls-del", switch)
    r = daemon.cli("admin", "check", check=False)
    assert r.returncode == 1 and port in r.stdout and "ovn rows" in r.stdout, r.stdout
    daemon.cli("admin", "check", "--repair")
    assert daemon.cli("admin", "check").returncode == 0
    assert [x["ifname"] for x in daemon.ns.ipj("link", "show", "master", lan)] == [port]
    assert nbctl(daemon, "--bare", "--columns=name", "list", "Logical_Router").split()
    init(daemon, "c1", start=True)
    assert dhcp(daemon, "c1").startswith("10.250.")
    wait_for(lambda: ping(daemon, "c1", f"{UPLINK}.1"), 15, "the repaired network to reach the uplink")
    daemon.cli("delete", "-f", "c1")
    daemon.cli("network", "delete", "ovn0")


def test_bad_input_is_refused_and_changes_nothing(daemon: Daemon, prefix: str) -> None:
    lan = f"{prefix}lan"
    daemon.ns.add_bridge(lan)
    daemon.cli("network", "create", "br0", "ipv4.address=10.250.93.1/24", "ipv6.address=none")
    before, links_before = daemon.db_dump(), links(daemon)
    msg = daemon.fails("network", "create", "o1", "--type=ovn", "network=br0", "ipv4.address=10.250.94.1/24")
    assert 'uplink "br0" is of type "bridge"' in msg and "physical" in msg
    msg = daemon.fails(
        "network", "create", "up", "--type=physical", f"parent={lan}", f"ipv4.gateway={UPLINK}.1/24",
        f"ipv4.ovn.ranges={UPLINK}.100-{UPLINK}.120,{UPLINK}.110-{UPLINK}.130",
    )  # fmt: skip
    assert "overlap" in msg
    msg = daemon.fails(
        "network",
        "create",
        "up",
        "--type=physical",
        f"parent={lan}",
        f"ipv4.ovn.ranges={UPLINK}.100-{UPLINK}.120",
    )
    assert "ipv4.gateway" in msg
    daemon.cli(
        "network", "create", "up", "--type=physical", f"parent={lan}", f"ipv4.gateway={UPLINK}.1/24",
        f"ipv4.ovn.ranges={UPLINK}.100-{UPLINK}.100",
    )  # fmt: skip
    before = daemon.db_dump()
    # Without NAT, the subnet must be routed to the uplink (its ipv4.routes), as Incus says.
    msg = daemon.fails("network", "create", "o1", "--type=ovn", "network=up", "ipv4.address=10.250.94.1/24")
    assert "ipv4.routes" in msg
    msg = daemon.fails("network", "create", "o1", "--type=ovn", "network=up", "ipv4.address=10.250.93.1/24")
    assert 'overlaps network "br0"' in msg
    assert daemon.db_dump() == before and links(daemon) == links_before
    assert not ovn_dir(daemon).exists()


@pytest.fixture
def external_daemon(netns: NetNS) -> Iterator[Daemon]:
    d = ExistingCentralDaemon(netns, Path(tempfile.mkdtemp(prefix="pincus-test-")))
    try:
        d.start()
        yield d
    finally:
        d.shut_down()
        cleanup_dir(d.dir)


def test_an_unreachable_central_is_a_clear_error_and_nothing_is_left(
    external_daemon: Daemon, prefix: str
) -> None:
    daemon = external_daemon
    lan = uplink(daemon, prefix)
    before, links_before = daemon.db_dump(), links(daemon)
    msg = daemon.fails("network", "create", "ovn0", "--type=ovn", "network=up", "ipv4.nat=true")
    assert "tcp:127.0.0.1:1" in msg and "unreachable" in msg
    assert daemon.db_dump() == before and links(daemon) == links_before
    assert daemon.ns.ipj("link", "show", "master", lan) == []
    assert not [p for p in processes() if str(daemon.dir) in p and "pincusd" not in p]


# --- helpers ---------------------------------------------------------------------------------------


def _ping_from_host(daemon: Daemon, address: str) -> bool:
    r = subprocess.run(
        [*NSEXEC, daemon.ns.name, "busybox", "ping", "-c", "1", "-W", "1", address],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return r.returncode == 0
