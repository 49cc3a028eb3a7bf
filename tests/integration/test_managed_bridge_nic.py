"""NICs on a managed bridge: DHCP from pincus's dnsmasq, static allocations, leases, clean teardown."""

from __future__ import annotations

import json
import re

from tests.integration.helpers import config, in_container, ping, wait_for, with_host_usr
from tests.pincus_testlib import Daemon

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr flush dev "$interface"
ip addr add "$ip/${mask:-24}" dev "$interface"
"""


def dhcp(daemon: Daemon, name: str, ifname: str = "eth0") -> str:
    """Run busybox udhcpc inside; return the address it configured (the kernel's view inside)."""
    # The host's files are not visible inside: the script goes in through exec's stdin.
    daemon.cli("exec", name, "--", "sh", "-c", "cat > /bin/udhcpc.script && chmod +x /bin/udhcpc.script",
               stdin=UDHCPC_SCRIPT)  # fmt: skip
    in_container(
        daemon, name, "busybox", "udhcpc", "-q", "-n", "-t", "5", "-T", "1", "-i", ifname,
        "-s", "/bin/udhcpc.script",
    )  # fmt: skip
    # busybox's ip (no -j in the image): one "inet A.B.C.D/N" per IPv4 address.
    shown = in_container(daemon, name, "ip", "-o", "-4", "addr", "show", "dev", ifname)
    (addr,) = re.findall(r"\binet (\S+)/", shown)
    return str(addr)


def leases(daemon: Daemon, network: str) -> list[list[str]]:
    return [
        row.split(",") for row in daemon.cli("network", "list-leases", network, "--format=csv").stdout.split()
    ]


def test_dhcp_static_and_dynamic_with_leases(daemon: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=10.250.40.1/24", "ipv6.address=none",
               "ipv4.dhcp.ranges=10.250.40.100-10.250.40.150")  # fmt: skip
    daemon.cli("init", "busybox", "c1", "-n", net)
    daemon.cli(
        "config", "device", "set", "c1", "eth0", "ipv4.address=10.250.40.50", "security.ipv4_filtering=true"
    )
    daemon.cli("start", "c1")
    daemon.cli("launch", "busybox", "c2", "-n", net)
    assert dhcp(daemon, "c1") == "10.250.40.50"
    dynamic = dhcp(daemon, "c2")
    assert 100 <= int(dynamic.split(".")[-1]) <= 150
    assert ping(daemon, "c2", "10.250.40.50")
    mac1, mac2 = config(daemon, "c1")["volatile.eth0.hwaddr"], config(daemon, "c2")["volatile.eth0.hwaddr"]
    rows = leases(daemon, net)
    assert ["c1", mac1, "10.250.40.50", "STATIC"] in rows
    assert any(r[1:] == [mac2, dynamic, "DYNAMIC"] for r in rows)
    # A live change of the static address: the next lease follows it.
    daemon.cli("config", "device", "set", "c1", "eth0", "ipv4.address=10.250.40.51")
    in_container(daemon, "c1", "ip", "addr", "flush", "dev", "eth0")
    assert dhcp(daemon, "c1") == "10.250.40.51"


def test_static_allocation_through_a_physical_network_on_a_managed_bridge(
    daemon: Daemon, prefix: str
) -> None:
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=10.250.41.1/24", "ipv6.address=none")
    daemon.cli("network", "create", "phys", "--type=physical", f"parent={net}")
    daemon.cli("init", "busybox", "c1", "-n", "phys")
    daemon.cli("config", "device", "set", "c1", "eth0", "ipv4.address=10.250.41.77")
    daemon.cli("start", "c1")
    assert dhcp(daemon, "c1") == "10.250.41.77"
    mac = config(daemon, "c1")["volatile.eth0.hwaddr"]
    daemon.cli("restart", "c1", "-f")
    assert config(daemon, "c1")["volatile.eth0.hwaddr"] == mac
    assert dhcp(daemon, "c1") == "10.250.41.77"


def test_bad_static_addresses_are_refused(daemon: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=10.250.42.1/24", "ipv6.address=none")
    daemon.cli("init", "busybox", "c1", "-n", net)
    daemon.cli("config", "device", "set", "c1", "eth0", "ipv4.address=10.250.42.5")
    daemon.cli("init", "busybox", "c2", "-n", net)
    before = daemon.db_dump()
    assert "already used by device" in daemon.fails(
        "config", "device", "set", "c2", "eth0", "ipv4.address=10.250.42.5"
    )
    assert "outside" in daemon.fails("config", "device", "set", "c2", "eth0", "ipv4.address=10.250.43.5")
    assert "itself" in daemon.fails("config", "device", "set", "c2", "eth0", "ipv4.address=10.250.42.1")
    assert "ipv4.address" in daemon.fails(
        "config", "device", "set", "c2", "eth0", "ipv4.address=10.250.42.5\nx"
    )
    assert daemon.db_dump() == before


def test_deleting_everything_leaves_nothing_of_pincus(daemon: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    links_before = daemon.ns.link_names()
    sysctls = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
    sysctls_before = [daemon.ns.run("cat", path).stdout for path in sysctls]
    daemon.cli("network", "create", net, "ipv4.address=10.250.44.1/24", "ipv6.address=fd42:250:44::1/64")
    assert daemon.ns.run("cat", sysctls[0]).stdout.strip() == "1"  # NAT needs forwarding
    daemon.cli("init", "busybox", "c1", "-n", net)
    keys = ("ipv4.address=10.250.44.9", "security.ipv4_filtering=true", "limits.egress=5Mbit",
            "ipv4.routes=10.250.45.0/24")  # fmt: skip
    daemon.cli("config", "device", "set", "c1", "eth0", *keys)
    daemon.cli("start", "c1")
    daemon.cli("delete", "-f", "c1")
    daemon.cli("network", "delete", net)
    assert daemon.ns.link_names() == links_before
    assert [daemon.ns.run("cat", path).stdout for path in sysctls] == sysctls_before
    ruleset = json.loads(daemon.ns.run("nft", "-j", "list", "ruleset").stdout)["nftables"]
    assert not [x for x in ruleset if "table" in x and x["table"]["name"].startswith("pincus")]
    qdiscs = json.loads(daemon.ns.run("tc", "-j", "qdisc", "show").stdout)
    assert [q for q in qdiscs if q["kind"] in ("tbf", "htb", "ingress")] == []
    assert daemon.ns.ipj("route", "show", "10.250.45.0/24") == []
    for sub in ("networks", "instances"):
        assert not (daemon.dir / sub).exists() or list((daemon.dir / sub).iterdir()) == []


def test_removing_a_nic_or_deleting_its_instance_releases_its_leases(daemon: Daemon, prefix: str) -> None:
    # As Incus: a NIC that leaves gives its leases back to dnsmasq, dynamic ones included, so its
    # addresses are free at once and no stale lease names a NIC that is gone.
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=10.250.46.1/24", "ipv6.address=none",
               "ipv4.dhcp.ranges=10.250.46.100-10.250.46.150")  # fmt: skip
    daemon.cli("launch", "busybox", "c1", "-n", net)
    daemon.cli("init", "busybox", "c2", "-n", net)
    daemon.cli("config", "device", "set", "c2", "eth0", "ipv4.address=10.250.46.20")
    daemon.cli("start", "c2")
    daemon.cli("launch", "busybox", "c3", "-n", net)
    dynamic, static, kept = dhcp(daemon, "c1"), dhcp(daemon, "c2"), dhcp(daemon, "c3")
    assert static == "10.250.46.20"
    lease_file = daemon.dir / "networks" / net / "dnsmasq" / "dnsmasq.leases"

    def leased() -> set[str]:
        # dnsmasq's own record, which it rewrites when it drops a lease.
        lines = lease_file.read_text().splitlines()
        return {line.split()[2] for line in lines if not line.startswith("duid")}

    assert leased() == {dynamic, static, kept}
    daemon.cli("config", "device", "remove", "c1", "eth0")
    wait_for(lambda: leased() == {static, kept}, 5, "the dynamic lease to be released")
    daemon.cli("delete", "-f", "c2")
    wait_for(lambda: leased() == {kept}, 5, "the static lease to be released")
    assert [r[2] for r in leases(daemon, net)] == [kept]


# A DHCPv6 client with rapid commit (busybox here has no udhcpc6): Solicit, then the Reply binds the
# lease. argv: interface, MAC.
_DHCP6_CLIENT = """
import socket, struct, sys, time
ifname, mac = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", ""))
def opt(code, data):
    return struct.pack("!HH", code, len(data)) + data
duid = struct.pack("!HH", 3, 1) + mac
ia_na = opt(3, struct.pack("!III", 7, 0, 0))
msg = b"\\x01\\x00\\x00\\x2a" + opt(1, duid) + ia_na + opt(14, b"") + opt(8, b"\\0\\0")
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
s.bind(("::", 546))
s.settimeout(1)
idx = socket.if_nametoindex(ifname)
for _ in range(20):
    try:
        s.sendto(msg, ("ff02::1:2", 547, 0, idx))
        reply = s.recv(2048)
    except OSError:
        time.sleep(0.5)
        continue
    if reply[0] == 7:
        print("bound")
        break
"""


def test_removing_a_nic_releases_its_dhcpv6_lease(daemon: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=none", "ipv6.address=fd42:250:47::1/64",
               "ipv6.dhcp.stateful=true", "ipv6.dhcp.ranges=fd42:250:47::100-fd42:250:47::150")  # fmt: skip
    for name in ("c1", "c2"):  # python3 for the DHCPv6 client
        daemon.cli("init", "busybox", name, "-n", net)
        with_host_usr(daemon, name)
        daemon.cli("start", name)
    lease_file = daemon.dir / "networks" / net / "dnsmasq" / "dnsmasq.leases"

    def leased() -> set[str]:
        lines = lease_file.read_text().splitlines() if lease_file.exists() else []
        return {line.split()[2] for line in lines if not line.startswith("duid")}

    for name in ("c1", "c2"):
        mac = config(daemon, name)["volatile.eth0.hwaddr"]
        out = daemon.cli("exec", name, "--", "python3", "-c", _DHCP6_CLIENT, "eth0", mac, timeout=60).stdout
        assert out.strip() == "bound", out
    assert len(leased()) == 2, leased()
    kept = leased()
    daemon.cli("config", "device", "remove", "c1", "eth0")
    wait_for(lambda: len(leased()) == 1, 5, "the DHCPv6 lease to be released")
    assert leased() < kept
