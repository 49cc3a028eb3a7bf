"""An OVN network across three cluster members: one central (run by the member that formed the
cluster), a chassis on every member, containers on two members talking over a geneve tunnel.

Each member is a pincusd in its own network namespace (test_cluster.py's Cluster). The uplink is
one L2 segment: a Linux bridge in the cluster's switch namespace holding the uplink gateway's
address, with a veth into each member, where it is the only port of that member's own Linux bridge
(the physical network's per-member parent). Each member's tunnel endpoint is a free address of the
uplink subnet (PINCUS_OVN_ENCAP_IP), which pincus puts on the member's provider bridge: OVS's
userspace datapath sends tunnels only out of an OVS bridge holding the endpoint address.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import config, in_container, ping, wait_for, with_host_usr
from tests.integration.test_cluster import Cluster
from tests.ovnlib import dhcp
from tests.pincus_testlib import Daemon, NetNS

pytestmark = [
    pytest.mark.skipif(shutil.which("ovn-northd") is None, reason="OVN is not installed"),
    pytest.mark.skipif(
        not Path("/usr/lib/x86_64-linux-gnu/libdqlite.so.0").exists(), reason="libdqlite0 is not installed"
    ),
]


class OvnDaemon(Daemon):
    """A member whose chassis has its own tunnel endpoint address."""

    def __init__(self, ns: NetNS, pincus_dir: Path, encap_ip: str | None) -> None:
        super().__init__(ns, pincus_dir)
        self.encap_ip = encap_ip

    @property
    def env(self) -> dict[str, str]:
        extra = {"PINCUS_OVN_ENCAP_IP": self.encap_ip} if self.encap_ip else {}
        return {**super().env, **extra}


class OvnCluster(Cluster):
    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        taken = int(self.subnet.rsplit(".", 1)[1])  # the members' own link
        octets = random.sample([o for o in range(100, 250) if o != taken and o != 99], 2)
        self.uplink = f"10.250.{octets[0]}"  # the uplink segment; routers take .100-.109
        self.inside = f"10.250.{octets[1]}"  # the OVN network's own subnet
        self.switch.add_bridge("up0")
        self.switch.ip("addr", "add", f"{self.uplink}.1/24", "dev", "up0")

    def add_daemon(self) -> Daemon:
        """A member with its own Linux bridge ul<i> on the shared uplink segment."""
        i = len(self.members)
        ns = NetNS(f"{self.prefix}m{i}")
        self.switch.ip("link", "add", f"p{i}", "type", "veth", "peer", "name", "eth1", "netns", ns.path)
        self.switch.ip("link", "set", f"p{i}", "master", "br0", "up")
        ns.ip("addr", "add", f"{self.subnet}.{i + 1}/24", "dev", "eth1")
        ns.ip("link", "set", "eth1", "up")
        self.switch.ip("link", "add", f"u{i}", "type", "veth", "peer", "name", "ulport", "netns", ns.path)
        self.switch.ip("link", "set", f"u{i}", "master", "up0", "up")
        ns.add_bridge(f"ul{i}")
        ns.ip("link", "set", "ulport", "master", f"ul{i}", "up")
        # m1 and m2 take their endpoint from the environment, m3 from its own server key (form()).
        encap = f"{self.uplink}.{11 + i}" if i < 2 else None
        d = OvnDaemon(ns, Path(tempfile.mkdtemp(prefix="pincus-test-")), encap)
        self.members.append(d)
        d.start()
        return d

    def form(self) -> tuple[Daemon, Daemon, Daemon]:
        d1, d2, d3 = super().form()
        d3.cli("config", "set", f"network.ovn.encap_address={self.uplink}.13")
        assert d2.cli("config", "get", "network.ovn.encap_address").stdout.strip() == ""  # m3's own
        return d1, d2, d3


@pytest.fixture
def ovn_cluster(prefix: str) -> Iterator[OvnCluster]:
    c = OvnCluster(prefix)
    try:
        yield c
    finally:
        c.close()


def _ctl(program: str, sock: Path, *args: str) -> str:
    return subprocess.run(
        [program, f"--db=unix:{sock}", *args], check=True, capture_output=True, text=True, timeout=20
    ).stdout


def _status(d: Daemon, name: str) -> tuple[str, list[str]]:
    doc = json.loads(d.cli("query", f"/1.0/networks/{name}").stdout)
    return doc["status"], doc["locations"]


def _ovn_processes(d: Daemon) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(d.dir) in line and "pincusd" not in line]


def test_an_ovn_network_spans_three_members_tunnels_between_them_and_goes_from_all(
    ovn_cluster: OvnCluster,
) -> None:
    c = ovn_cluster
    d1, d2, d3 = c.form()
    members = (d1, d2, d3)
    before = [d.ns.link_names() for d in members]

    # An existing central that does not answer: refused before anything is recorded or started.
    d1.cli("config", "set", f"network.ovn.northbound_connection=tcp:{c.subnet}.99:6641")
    for i, d in enumerate(members):
        d.cli("network", "create", "up", "--type=physical", f"--target=m{i + 1}", f"parent=ul{i}")
    uplink = (f"ipv4.gateway={c.uplink}.1/24", f"ipv4.ovn.ranges={c.uplink}.100-{c.uplink}.109")
    d1.cli("network", "create", "up", "--type=physical", *uplink)
    assert _status(d3, "up") == ("Created", ["m1", "m2", "m3"])
    err = d2.fails("network", "create", "ovn0", "--type=ovn", "network=up")
    assert f"tcp:{c.subnet}.99:6641" in err, err
    assert "ovn0" not in d3.cli("network", "list", "-f", "csv").stdout
    assert not any((d.dir / "ovn").exists() for d in members)
    d1.cli("config", "unset", "network.ovn.northbound_connection")
    # An uplink that is not a physical network.
    d1.cli("network", "create", "lbr", "ipv4.address=none", "ipv6.address=none")
    assert 'must be a managed "physical" network' in d1.fails(
        "network", "create", "bad", "--type=ovn", "network=lbr"
    )
    assert "bad" not in d2.cli("network", "list", "-f", "csv").stdout
    d1.cli("network", "delete", "lbr")

    d3.cli(
        "network",
        "create",
        "ovn0",
        "--type=ovn",
        "network=up",
        f"ipv4.address={c.inside}.1/24",
        "ipv4.nat=true",
    )
    assert _status(d2, "ovn0") == ("Created", ["m1", "m2", "m3"])
    # One central, on m1: the logical network once, a chassis per member with its own endpoint.
    central = d1.dir / "ovn" / "central"
    assert not (d2.dir / "ovn" / "central").exists() and not (d3.dir / "ovn" / "central").exists()
    routers = _ctl(
        "ovn-nbctl", central / "nb.sock", "--bare", "--columns=name", "list", "Logical_Router"
    ).split()
    assert len(routers) == 1 and routers[0].endswith("ovn0-lr")
    encaps = _ctl("ovn-sbctl", central / "sb.sock", "--bare", "--columns=ip", "list", "Encap").split()
    assert sorted(encaps) == sorted(f"{c.uplink}.{11 + i}" for i in range(3))
    for i, d in enumerate(members):
        # Each member's own bridge gained one veth into its provider bridge (holding its endpoint).
        assert len(d.ns.ipj("link", "show", "master", f"ul{i}")) == 2
        provider = [x for x in d.ns.link_names() if x.startswith("pov") and len(x) == 11]
        assert len(provider) == 1, d.ns.link_names()
        addrs = d.ns.ipj("-4", "addr", "show", provider[0])[0]["addr_info"]
        assert [a["local"] for a in addrs] == [f"{c.uplink}.{11 + i}"]

    d1.image()
    for d in members:
        d._image_imported = True  # recorded for the cluster: the others fetch its files from m1
    d2.cli("init", "busybox", "c1", "--target", "m2", "-n", "ovn0")
    d3.cli("init", "busybox", "c2", "--target", "m3", "-n", "ovn0")
    with_host_usr(d2, "c1")
    with_host_usr(d3, "c2")
    d1.cli("config", "device", "set", "c1", "eth0", f"ipv4.address={c.inside}.50")
    d2.cli("start", "c1")
    d3.cli("start", "c2")
    # Each NIC is bound on its own member's integration bridge.
    for d, name in ((d2, "c1"), (d3, "c2")):
        host_name = config(d, name)["volatile.eth0.host_name"]
        ports = _ctl(
            "ovs-vsctl", d.dir / "ovn" / "chassis" / "db.sock", "list-ports", f"pint{_tag(d)}"
        ).split()
        assert host_name in ports
    # OVN's DHCP (from the central, through each member's chassis) gives the static allocation.
    assert dhcp(d2, "c1") == f"{c.inside}.50"
    other = dhcp(d3, "c2")
    assert other.startswith(f"{c.inside}.") and other not in (f"{c.inside}.1", f"{c.inside}.50")
    # Across members, over the tunnel (the first packet to a new endpoint may be lost).
    wait_for(lambda: ping(d2, "c1", other), 15, "c1 on m2 pings c2 on m3")
    assert ping(d2, "c1", other, count=3)
    assert ping(d3, "c2", f"{c.inside}.50", count=3)
    # SNAT to the uplink: the switch namespace has no route back to the OVN subnet, so an answer
    # from the uplink gateway means it saw the router's uplink address.
    assert not any(c.inside in r for r in c.switch.ip("-4", "route").stdout.splitlines())
    for d, name in ((d3, "c2"), (d2, "c1")):  # both through m1's gateway chassis
        wait_for(lambda: ping(d, name, f"{c.uplink}.1"), 15, f"{name} reaches the uplink gateway")  # noqa: B023
        assert ping(d, name, f"{c.uplink}.1", count=3)
    assert in_container(d2, "c1", "cat", "/sys/class/net/eth0/mtu").strip() == "1400"

    assert "in use" in d1.fails("network", "delete", "ovn0")
    # A second OVN network keeps the central and chassis up: deleting the first must take each of
    # its own rows (switches, router, ports, NAT, DHCP) and its chassis bindings by itself.
    d1.cli(
        "network",
        "create",
        "ovn1",
        "--type=ovn",
        "network=up",
        "ipv4.address=10.250.99.1/24",
        "ipv4.nat=true",
    )
    nb, sb = central / "nb.sock", central / "sb.sock"
    d1.cli("delete", "-f", "c1", "c2")
    d2.cli("network", "delete", "ovn0")
    assert "ovn0" not in d1.cli("network", "list", "-f", "csv").stdout
    for table in ("Logical_Switch", "Logical_Router", "Logical_Switch_Port", "Logical_Router_Port"):
        names = _ctl("ovn-nbctl", nb, "--bare", "--columns=name", "list", table).split()
        assert names and not [n for n in names if "-ovn0-" in n], (table, names)
    assert (
        _ctl("ovn-nbctl", nb, "--bare", "--columns=external_ids", "list", "DHCP_Options").count("/ovn0") == 0
    )
    assert "10.250.99.0/24" in _ctl("ovn-nbctl", nb, "--bare", "--columns=logical_ip", "list", "NAT")
    bound = _ctl("ovn-sbctl", sb, "--bare", "--columns=logical_port", "list", "Port_Binding").split()
    assert not [p for p in bound if "-ovn0-" in p], bound
    d3.cli("network", "delete", "ovn1")
    for i, d in enumerate(members):
        assert not (d.dir / "ovn").exists(), f"m{i + 1}"
        assert [x["ifname"] for x in d.ns.ipj("link", "show", "master", f"ul{i}")] == ["ulport"]
        assert d.ns.link_names() == before[i], f"m{i + 1}"
        assert _ovn_processes(d) == [], f"m{i + 1}"
    d1.cli("network", "delete", "up")


def _tag(d: Daemon) -> str:
    from pincus.server.daemon import daemon_tag

    return daemon_tag(d.dir.absolute())
