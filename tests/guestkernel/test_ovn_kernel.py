"""OVN on Open vSwitch's kernel datapath, which the host's kernel has not (its OVN tests run on the
userspace datapath): the core scenario of tests/integration/test_ovn.py inside the test guest.

pincusd is given no PINCUS_OVS_DATAPATH_TYPE: it must find the openvswitch module and choose the
`system` datapath itself. The kernel's own view says it did: the datapath is an `openvswitch`
link (`ovs-system`) and the instance's veth and the uplink's veth are its ports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.helpers import config, ping
from tests.ovnlib import UPLINK, dhcp, init, links, nbctl, ovn_dir, processes, tag, uplink, vsctl
from tests.pincus_testlib import Daemon


def _kinds(daemon: Daemon) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in daemon.ns.ipj("-d", "link", "show")}


def test_ovn_on_the_kernel_datapath_dhcp_ping_snat_then_delete_leaves_nothing(
    daemon: Daemon, prefix: str
) -> None:
    assert "PINCUS_OVS_DATAPATH_TYPE" not in daemon.env
    before = links(daemon)
    lan = uplink(daemon, prefix)
    daemon.cli(
        "network", "create", "ovn0", "--type=ovn", "network=up", "ipv4.address=10.250.91.1/24",
        "ipv4.nat=true",
    )  # fmt: skip
    assert Path("/sys/module/openvswitch").is_dir()
    integration = f"pint{tag(daemon)}"
    (provider,) = [b for b in vsctl(daemon, "list-br").split() if b.startswith("pov")]
    for bridge in (integration, provider):
        assert vsctl(daemon, "get", "Bridge", bridge, "datapath_type").strip().strip('"') == "system"

    init(daemon, "c1")
    daemon.cli("config", "device", "set", "c1", "eth0", "ipv4.address=10.250.91.50")
    init(daemon, "c2")
    daemon.cli("start", "c1", "c2")
    # OVN's own DHCP hands out the static allocation; the two containers reach each other.
    assert dhcp(daemon, "c1") == "10.250.91.50"
    dynamic = dhcp(daemon, "c2")
    assert dynamic.startswith("10.250.91.") and dynamic not in ("10.250.91.1", "10.250.91.50")
    assert ping(daemon, "c1", dynamic, count=3)
    # SNAT: the uplink bridge's own address answers through the router's gateway port.
    assert ping(daemon, "c1", f"{UPLINK}.1", count=3)

    # The kernel's view: one openvswitch datapath (`ovs-system`; the bridges' own ports are its
    # internal ports, which name no master) holding the instance's and the uplink's veths; no
    # `ovs-netdev` tap, which is the userspace datapath's.
    kinds = _kinds(daemon)
    ovs_links = {n for n, link in kinds.items() if link.get("linkinfo", {}).get("info_kind") == "openvswitch"}
    assert ovs_links == {"ovs-system", integration, provider}, sorted(kinds)
    assert "ovs-netdev" not in kinds
    host_name = config(daemon, "c1")["volatile.eth0.host_name"]
    (uplink_port,) = [x["ifname"] for x in daemon.ns.ipj("link", "show", "master", lan)]
    for port in (host_name, uplink_port[:-1] + "a"):
        assert kinds[port].get("master") == "ovs-system", kinds[port]

    daemon.cli("delete", "-f", "c1", "c2")
    ports = nbctl(daemon, "--bare", "--columns=name", "list", "Logical_Switch_Port").split()
    assert not any("-inst-" in p for p in ports)
    daemon.cli("network", "delete", "ovn0")
    # Nothing is left: no daemon, no database, no veth on the uplink, no datapath or its ports.
    assert not ovn_dir(daemon).exists()
    assert daemon.ns.ipj("link", "show", "master", lan) == []
    assert links(daemon) == before | {lan}
    assert not [p for p in processes() if str(daemon.dir) in p]
