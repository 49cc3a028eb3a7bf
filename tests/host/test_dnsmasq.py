"""dnsmasq for a managed bridge, against the real dnsmasq and real DHCP clients.

Every test builds a private "host" netns (bridge 10.250.<x>.1/24 + fd42:250:<x>::1/64, dnsmasq on it)
and a "client" netns joined to the bridge by a veth, where busybox udhcpc (DHCPv4) or a minimal
DHCPv6 client (below; Debian's busybox has no udhcpc6) asks for leases.

Timings are printed at the end of the module (run with -s to see them).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pincus.errors import HostError, InvalidError
from pincus.host import dnsmasq_args, dnsmasq_hosts, dnsmasq_process
from pincus.host.dnsmasq_args import DnsmasqConfig
from pincus.host.dnsmasq_hosts import Lease, StaticAllocation
from tests.pincus_testlib import NetNS, unique_prefix

TIMINGS: dict[str, list[float]] = {}


def timed(name: str, seconds: float) -> None:
    TIMINGS.setdefault(name, []).append(seconds)


@pytest.fixture(scope="module", autouse=True)
def report_timings() -> Iterator[None]:
    yield
    if TIMINGS:
        print("\n-- dnsmasq timings (ms): median / max / n")
        for name, values in sorted(TIMINGS.items()):
            median, worst = statistics.median(values) * 1000, max(values) * 1000
            print(f"   {name:38s} {median:8.2f} / {worst:8.2f} / {len(values)}")


def dnsmasq_processes_for(path: Path) -> list[int]:
    """Every process whose command line mentions path (ours, by construction)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"dnsmasq" in cmdline and str(path).encode() in cmdline:
                pids.append(int(entry))
    return pids


UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "ip=$ip router=$router dns=$dns domain=$domain hostname=$hostname lease=$lease"
exit 0
"""

# SOLICIT -> ADVERTISE -> REQUEST -> REPLY with a DUID-LL and one IA_NA; prints the address.
DHCP6_CLIENT = r"""
import random, socket, struct, sys
ifname, mac = sys.argv[1], sys.argv[2]
idx = socket.if_nametoindex(ifname)
duid = struct.pack("!HH", 3, 1) + bytes.fromhex(mac.replace(":", ""))
def opt(code, data): return struct.pack("!HH", code, len(data)) + data
def parse(data):
    out, i = {}, 0
    while i + 4 <= len(data):
        code, ln = struct.unpack_from("!HH", data, i)
        out.setdefault(code, []).append(data[i + 4:i + 4 + ln]); i += 4 + ln
    return out
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
s.bind(("::", 546)); s.settimeout(3)
def exchange(mtype, want, opts):
    xid = random.getrandbits(24)
    s.sendto(bytes([mtype]) + xid.to_bytes(3, "big") + b"".join(opts), ("ff02::1:2", 547, 0, idx))
    while True:
        data = s.recv(2048)
        if data[0] == want and int.from_bytes(data[1:4], "big") == xid:
            return parse(data[4:])
ia_empty = opt(3, struct.pack("!III", 1, 0, 0))
adv = exchange(1, 2, [opt(1, duid), ia_empty, opt(8, b"\0\0")])
ia = parse(adv[3][0][12:])
if 5 not in ia: sys.exit("no address offered: %r" % adv)
ia_addr = opt(3, adv[3][0][:12] + opt(5, ia[5][0]))
reply = exchange(3, 7, [opt(1, duid), opt(2, adv[2][0]), ia_addr, opt(8, b"\0\0")])
ia = parse(reply[3][0][12:])
print(socket.inet_ntop(socket.AF_INET6, ia[5][0][:16]))
"""


class Lab:
    """host netns with a bridge and dnsmasq's directory; client netns on a veth into the bridge."""

    def __init__(self, prefix: str, x: int) -> None:
        self.prefix = prefix
        self.x = x
        self.bridge = f"{prefix}br"
        self.client_if = f"{prefix}cv"
        self.host = NetNS(f"{prefix}h")
        self.client = NetNS(f"{prefix}c")
        # 0755 all the way down: dnsmasq reads the hosts dir as "nobody".
        self.dir = Path(tempfile.mkdtemp(prefix=f"pincus-dnsmasq-{prefix}-")) / "dnsmasq"
        self.dir.parent.chmod(0o755)
        self.script = self.dir.parent / "udhcpc.sh"
        self.script.write_text(UDHCPC_SCRIPT)
        self.script.chmod(0o755)
        for ns in (self.host, self.client):
            # The bridge's and the client's own addresses must be usable at once (no DAD wait).
            ns.run("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        self.host.add_bridge(self.bridge)
        self.host.ip("addr", "add", f"10.250.{x}.1/24", "dev", self.bridge)
        self.host.ip("addr", "add", f"fd42:250:{x}::1/64", "dev", self.bridge, "nodad")
        self.host.ip("link", "add", f"{prefix}v", "type", "veth", "peer", "name", self.client_if,
                     "netns", self.client.name)  # fmt: skip
        self.host.ip("link", "set", f"{prefix}v", "master", self.bridge, "up")
        self.set_client_mac("0a:92:a7:00:00:01")

    def config(self, **overrides: object) -> DnsmasqConfig:
        base = DnsmasqConfig(
            bridge=self.bridge,
            dir=self.dir,
            ipv4_address=f"10.250.{self.x}.1/24",
            ipv4_ranges=[(f"10.250.{self.x}.100", f"10.250.{self.x}.199")],
            ipv6_address=f"fd42:250:{self.x}::1/64",
            ipv6_stateful=True,
            ipv6_ranges=[(f"fd42:250:{self.x}::1000", f"fd42:250:{self.x}::1fff")],
            ipv4_expiry="1h",
            ipv6_expiry="1h",
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    def start(self, cfg: DnsmasqConfig | None = None) -> int:
        t0 = time.perf_counter()
        pid = dnsmasq_process.start(cfg or self.config(), netns=self.host.name)
        timed("start", time.perf_counter() - t0)
        return pid

    def set_client_mac(self, mac: str) -> None:
        """Become another NIC. Down and up, so the link-local address follows the MAC: dnsmasq
        and the host's neighbour table map the old link-local address to the old MAC."""
        self.client.ip("link", "set", self.client_if, "down")
        self.client.ip("link", "set", self.client_if, "address", mac)
        self.client.ip("link", "set", self.client_if, "up")

    def dhcp4(self, *extra: str) -> dict[str, str]:
        """One udhcpc run in the client netns; the variables of its "bound" event."""
        t0 = time.perf_counter()
        r = self.client.run(
            "busybox", "udhcpc", "-f", "-q", "-n", "-i", self.client_if, "-s", str(self.script),
            "-t", "3", "-T", "1", *extra, check=False,
        )  # fmt: skip
        timed("lease acquisition (udhcpc)", time.perf_counter() - t0)
        assert r.returncode == 0, f"udhcpc failed: {r.stdout}{r.stderr}"
        line = next(line for line in r.stdout.splitlines() if line.startswith("ip="))
        return dict(field.split("=", 1) for field in line.split(" "))

    def dhcp6(self, mac: str) -> str:
        t0 = time.perf_counter()
        r = self.client.run(sys.executable, "-c", DHCP6_CLIENT, self.client_if, mac, check=False)
        timed("lease acquisition (DHCPv6)", time.perf_counter() - t0)
        assert r.returncode == 0, f"DHCPv6 client failed: {r.stdout}{r.stderr}"
        return r.stdout.strip()

    def close(self) -> None:
        try:
            dnsmasq_process.stop(self.dir)
        finally:
            for pid in dnsmasq_processes_for(self.dir):  # a failed test must not leak one
                os.kill(pid, signal.SIGKILL)
            self.client.delete()
            self.host.delete()
            shutil.rmtree(self.dir.parent, ignore_errors=True)


@pytest.fixture
def lab() -> Iterator[Lab]:
    prefix = unique_prefix()
    made = Lab(prefix, 1 + int(prefix[1:], 16) % 250)
    try:
        yield made
    finally:
        made.close()


# --- DHCPv4 -----------------------------------------------------------------------------------


def test_pool_lease_comes_from_the_range_and_shows_in_leases(lab: Lab) -> None:
    lab.start()
    got = lab.dhcp4()
    addr = ipaddress.IPv4Address(got["ip"])
    assert (
        ipaddress.IPv4Address(f"10.250.{lab.x}.100") <= addr <= ipaddress.IPv4Address(f"10.250.{lab.x}.199")
    )
    assert got["router"] == f"10.250.{lab.x}.1"
    assert got["dns"] == ""  # dns_mode none: no DNS server, none advertised
    leases = dnsmasq_hosts.read_leases(lab.dir)
    assert [(lease.mac, lease.address) for lease in leases] == [("0a:92:a7:00:00:01", str(addr))]
    assert leases[0].client_id == "01:0a:92:a7:00:00:01"
    assert leases[0].expiry > time.time() + 3000


def test_static_allocation_written_while_running_is_used_without_reload(lab: Lab) -> None:
    lab.start()
    mac = "0a:92:a7:00:00:01"
    t0 = time.perf_counter()
    assert (
        dnsmasq_hosts.write_static_allocation(lab.dir, "c1.eth0", mac, f"10.250.{lab.x}.50", None, "c1")
        is False
    )
    timed("write allocation", time.perf_counter() - t0)
    got = lab.dhcp4()  # no reload: dnsmasq saw the new file by inotify
    assert got["ip"] == f"10.250.{lab.x}.50"
    assert got["hostname"] == "c1"
    assert [(lease.mac, lease.address, lease.hostname) for lease in dnsmasq_hosts.read_leases(lab.dir)] == [
        (mac, f"10.250.{lab.x}.50", "c1")
    ]


def test_removed_allocation_stays_reserved_until_reload(lab: Lab) -> None:
    reserved = f"10.250.{lab.x}.150"  # inside the pool: only the reservation keeps it from others
    dnsmasq_hosts.write_static_allocation(lab.dir, "c1.eth0", "0a:92:a7:00:00:01", reserved, None, None)
    lab.start()
    # Other NICs (each a fresh MAC, so no earlier lease of theirs gets in the way) ask for it.
    lab.set_client_mac("0a:92:a7:00:00:02")
    assert lab.dhcp4("-r", reserved)["ip"] != reserved

    assert dnsmasq_hosts.remove_static_allocation(lab.dir, "c1.eth0") is True
    lab.set_client_mac("0a:92:a7:00:00:03")
    assert lab.dhcp4("-r", reserved)["ip"] != reserved  # inotify does not drop entries

    t0 = time.perf_counter()
    dnsmasq_process.reload(lab.dir)
    timed("reload", time.perf_counter() - t0)
    lab.set_client_mac("0a:92:a7:00:00:04")
    assert lab.dhcp4("-r", reserved)["ip"] == reserved
    assert dnsmasq_hosts.remove_static_allocation(lab.dir, "c1.eth0") is False  # missing = fine


def test_changed_allocation_asks_for_reload_and_applies_after_it(lab: Lab) -> None:
    mac = "0a:92:a7:00:00:01"
    lab.start()
    assert (
        dnsmasq_hosts.write_static_allocation(lab.dir, "c1.eth0", mac, f"10.250.{lab.x}.50", None, "c1")
        is False
    )
    assert lab.dhcp4()["ip"] == f"10.250.{lab.x}.50"
    # identical content: nothing to do
    assert (
        dnsmasq_hosts.write_static_allocation(lab.dir, "c1.eth0", mac, f"10.250.{lab.x}.50", None, "c1")
        is False
    )
    assert (
        dnsmasq_hosts.write_static_allocation(lab.dir, "c1.eth0", mac, f"10.250.{lab.x}.60", None, "c1")
        is True
    )
    dnsmasq_process.reload(lab.dir)
    time.sleep(0.05)
    assert lab.dhcp4()["ip"] == f"10.250.{lab.x}.60"
    # Same address, new name: dnsmasq rejects the new entry as a duplicate until the reload.
    assert (
        dnsmasq_hosts.write_static_allocation(lab.dir, "c1.eth0", mac, f"10.250.{lab.x}.60", None, "c1b")
        is True
    )
    time.sleep(0.05)
    assert lab.dhcp4()["hostname"] == "c1"
    dnsmasq_process.reload(lab.dir)
    time.sleep(0.05)
    assert lab.dhcp4()["hostname"] == "c1b"


def test_dns_managed_serves_static_names_and_ignores_client_names(lab: Lab) -> None:
    lab.start(lab.config(dns_mode="managed", dns_domain="pincus.test"))
    dnsmasq_hosts.write_static_allocation(lab.dir, "c1.eth0", "0a:92:a7:00:00:01", None, None, "c1")
    got = lab.dhcp4("-x", "hostname:sneaky")
    assert got["dns"] == f"10.250.{lab.x}.1"
    assert got["domain"] == "pincus.test"
    server = f"10.250.{lab.x}.1"
    lab.client.ip("addr", "add", f"{got['ip']}/24", "dev", lab.client_if)
    answer = lab.client.run("busybox", "nslookup", "c1.pincus.test", server, check=False).stdout
    assert got["ip"] in answer, answer
    sneaky = lab.client.run("busybox", "nslookup", "sneaky.pincus.test", server, check=False)
    assert got["ip"] not in sneaky.stdout
    sockets = lab.host.run("ss", "-Hlnu", "sport", "=", "53").stdout
    assert f"10.250.{lab.x}.1:53" in sockets and f"[fd42:250:{lab.x}::1]:53" in sockets, sockets


def test_dns_on_ipv6_waits_for_duplicate_address_detection(lab: Lab) -> None:
    # A fresh bridge address with DAD: dnsmasq would skip it while tentative and never bind it.
    lab.host.ip("addr", "del", f"fd42:250:{lab.x}::1/64", "dev", lab.bridge)
    lab.host.run("sysctl", "-qw", f"net.ipv6.conf.{lab.bridge}.accept_dad=1")
    lab.host.ip("addr", "add", f"fd42:250:{lab.x}::1/64", "dev", lab.bridge)
    assert "tentative" in lab.host.ip("-6", "addr", "show", "dev", lab.bridge).stdout
    t0 = time.perf_counter()
    lab.start(lab.config(dns_mode="dynamic"))
    timed("start waiting for DAD", time.perf_counter() - t0)
    sockets = lab.host.run("ss", "-Hlnu", "sport", "=", "53").stdout
    assert f"[fd42:250:{lab.x}::1]:53" in sockets, sockets


# --- DHCPv6 and RA --------------------------------------------------------------------------


def test_dhcpv6_stateful_pool_and_static_allocation(lab: Lab) -> None:
    lab.start()
    mac1, mac2 = "0a:92:a7:00:00:01", "0a:92:a7:00:00:02"
    pool = ipaddress.IPv6Address(lab.dhcp6(mac1))
    assert (
        ipaddress.IPv6Address(f"fd42:250:{lab.x}::1000")
        <= pool
        <= ipaddress.IPv6Address(f"fd42:250:{lab.x}::1fff")
    )
    dnsmasq_hosts.write_static_allocation(lab.dir, "c2.eth0", mac2, None, f"fd42:250:{lab.x}::50", "c2")
    lab.set_client_mac(mac2)
    assert lab.dhcp6(mac2) == f"fd42:250:{lab.x}::50"
    v6 = {lease.address: lease for lease in dnsmasq_hosts.read_leases(lab.dir)}
    assert v6[str(pool)].mac == mac1 and v6[str(pool)].iaid == 1
    assert v6[f"fd42:250:{lab.x}::50"].mac == mac2
    assert v6[f"fd42:250:{lab.x}::50"].hostname == "c2"
    assert v6[f"fd42:250:{lab.x}::50"].client_id == "00:03:00:01:" + mac2


@pytest.mark.parametrize("dhcp", [False, True], ids=["ra-only", "ra-stateless"])
def test_router_advertisements_give_the_client_slaac_and_a_default_route(lab: Lab, dhcp: bool) -> None:
    lab.start(lab.config(ipv6_dhcp=dhcp, ipv6_stateful=False, ipv6_ranges=[]))
    lab.client.ip("link", "set", lab.client_if, "down")
    lab.client.ip("link", "set", lab.client_if, "up")  # solicit an RA now
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        addrs = lab.client.ipj("-6", "addr", "show", "dev", lab.client_if, "scope", "global")
        routes = lab.client.ipj("-6", "route", "show", "default")
        if addrs and addrs[0].get("addr_info") and routes:
            break
        time.sleep(0.1)
    else:
        pytest.fail("no SLAAC address or default route from dnsmasq's RA")
    assert addrs[0]["addr_info"][0]["local"].startswith(f"fd42:250:{lab.x}:0:")


# --- process lifecycle ------------------------------------------------------------------------


def test_start_survives_its_caller_and_is_found_again(lab: Lab) -> None:
    cfg = lab.config()
    pid = lab.start(cfg)
    assert dnsmasq_process.find_running(lab.dir) == pid
    assert os.getsid(pid) != os.getsid(0)  # its own session: a daemon restart does not take it down
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[1]) != os.getpid()  # not our child
    assert dnsmasq_process.running_config_digest(lab.dir) == dnsmasq_args.config_digest(cfg)
    assert dnsmasq_args.config_digest(lab.config(ipv4_expiry="2h")) != dnsmasq_args.config_digest(cfg)
    with pytest.raises(HostError, match="already running"):
        dnsmasq_process.start(cfg, netns=lab.host.name)
    assert dnsmasq_processes_for(lab.dir) == [pid]


def test_stop_leaves_no_process_and_no_pid_file(lab: Lab) -> None:
    pid = lab.start()
    t0 = time.perf_counter()
    dnsmasq_process.stop(lab.dir)
    timed("stop", time.perf_counter() - t0)
    assert dnsmasq_processes_for(lab.dir) == []
    assert not (lab.dir / dnsmasq_args.PID_FILE).exists()
    assert dnsmasq_process.find_running(lab.dir) is None
    dnsmasq_process.stop(lab.dir)  # stopping nothing is fine
    with pytest.raises(HostError, match="not running"):
        dnsmasq_process.reload(lab.dir)
    assert not Path(f"/proc/{pid}/cmdline").exists() or Path(f"/proc/{pid}/cmdline").read_bytes() == b""


def test_pid_file_of_another_process_is_not_ours(lab: Lab) -> None:
    lab.dir.mkdir(parents=True)
    (lab.dir / dnsmasq_args.PID_FILE).write_text(f"{os.getpid()}\n")
    assert dnsmasq_process.find_running(lab.dir) is None
    dnsmasq_process.stop(lab.dir)  # must not signal us
    assert not (lab.dir / dnsmasq_args.PID_FILE).exists()


def test_start_on_a_missing_bridge_fails_and_leaves_nothing(lab: Lab) -> None:
    with pytest.raises(HostError, match=r"start dnsmasq on nosuchbr0: .*unknown interface nosuchbr0"):
        dnsmasq_process.start(lab.config(bridge="nosuchbr0"), netns=lab.host.name)
    assert dnsmasq_processes_for(lab.dir) == []
    assert not lab.dir.exists()  # the directories it had made are gone again


def test_start_refuses_a_dir_dnsmasq_could_not_read(lab: Lab) -> None:
    lab.dir.parent.chmod(0o700)
    with pytest.raises(HostError, match=f"directory {lab.dir.parent} .* not searchable by user nobody"):
        dnsmasq_process.start(lab.config(), netns=lab.host.name)
    assert dnsmasq_processes_for(lab.dir) == []


def test_start_in_an_unknown_netns_fails_cleanly(lab: Lab) -> None:
    with pytest.raises(HostError, match="no such file"):
        dnsmasq_process.start(lab.config(), netns=f"{lab.prefix}nope")
    assert dnsmasq_processes_for(lab.dir) == []


# --- scale ----------------------------------------------------------------------------------


def test_500th_allocation_costs_what_the_first_did(lab: Lab) -> None:
    lab.start()
    costs = []
    for i in range(500):
        mac = f"0a:92:a7:01:{i // 256:02x}:{i % 256:02x}"
        ipv4 = f"10.250.{lab.x}.{2 + i}" if i < 250 else None
        ipv6 = f"fd42:250:{lab.x}::{0x2000 + i:x}"
        t0 = time.perf_counter()
        dnsmasq_hosts.write_static_allocation(lab.dir, f"c{i}.eth0", mac, ipv4, ipv6, f"c{i}")
        costs.append(time.perf_counter() - t0)
    first, last = statistics.median(costs[:50]), statistics.median(costs[-50:])
    timed("write allocation #1-50 (of 500)", first)
    timed("write allocation #451-500 (of 500)", last)
    # Flat: one file per NIC. (Creating a file on this ext4 costs ~1 ms whatever the directory
    # holds.) Generous bound: the machine may be busy with parallel tests.
    assert last < 3 * first + 0.002, (first, last)
    assert len(dnsmasq_hosts.static_allocations(lab.dir)) == 500
    # dnsmasq took all 500 by inotify: the last NIC gets its address without a reload.
    lab.set_client_mac("0a:92:a7:01:01:f3")
    assert lab.dhcp6("0a:92:a7:01:01:f3") == f"fd42:250:{lab.x}::21f3"
    t0 = time.perf_counter()
    dnsmasq_process.reload(lab.dir)
    lab.set_client_mac("0a:92:a7:01:00:05")
    assert lab.dhcp4()["ip"] == f"10.250.{lab.x}.7"
    timed("reload with 500 files + lease", time.perf_counter() - t0)


# --- pure functions -------------------------------------------------------------------------


CFG = DnsmasqConfig(bridge="br0", dir=Path("/var/lib/pincus/networks/n1/dnsmasq"))


def test_render_args_for_a_dual_stack_network() -> None:
    args = dnsmasq_args.render_args(
        replace(
            CFG,
            ipv4_address="10.250.1.1/24",
            ipv6_address="fd42:250:1::1/64",
            ipv6_stateful=True,
            dns_mode="managed",
            dns_domain="lan",
        )
    )
    assert args[0] == "/usr/sbin/dnsmasq"
    for flag in ("--conf-file=/dev/null", "--bind-interfaces", "--interface=br0", "--except-interface=lo",
                 "--no-ping", "--pid-file=/var/lib/pincus/networks/n1/dnsmasq/dnsmasq.pid",
                 "--dhcp-hostsdir=/var/lib/pincus/networks/n1/dnsmasq/dnsmasq.hosts",
                 "--dhcp-range=10.250.1.2,10.250.1.254,1h", "--dhcp-option=option:router,10.250.1.1",
                 "--dhcp-range=fd42:250:1::2,fd42:250:1:0:ffff:ffff:ffff:ffff,64,1h", "--enable-ra",
                 "--domain=lan", "--local=/lan/", "--dhcp-ignore-names"):  # fmt: skip
        assert flag in args
    assert "--port=0" not in args


def test_render_args_whole_subnet_skips_the_bridge_address() -> None:
    args = dnsmasq_args.render_args(replace(CFG, ipv4_address="10.250.1.100/24", ipv4_gateway="10.250.1.254"))
    assert [a for a in args if a.startswith("--dhcp-range")] == [
        "--dhcp-range=10.250.1.1,10.250.1.99,1h",
        "--dhcp-range=10.250.1.101,10.250.1.254,1h",
    ]
    assert "--dhcp-option=option:router,10.250.1.254" in args
    assert "--port=0" in args


def test_render_args_ipv6_modes() -> None:
    v6 = replace(CFG, ipv6_address="fd42:250:1::1/64")
    assert "--dhcp-range=fd42:250:1::,ra-stateless,64,1h" in dnsmasq_args.render_args(v6)
    only_ra = dnsmasq_args.render_args(replace(v6, ipv6_dhcp=False))
    assert "--dhcp-range=fd42:250:1::,ra-only,64,1h" in only_ra and "--enable-ra" in only_ra
    nothing = dnsmasq_args.render_args(replace(v6, ipv6_dhcp=False, ipv6_ra=False))
    assert not [a for a in nothing if a.startswith("--dhcp-range") or a == "--enable-ra"]
    with pytest.raises(InvalidError, match="stateless DHCPv6 needs router advertisements"):
        dnsmasq_args.render_args(replace(v6, ipv6_ra=False))


@pytest.mark.parametrize(
    "change",
    [
        {"bridge": "br0,x"},
        {"bridge": "br*"},
        {"bridge": "-br"},
        {"bridge": "a" * 16},
        {"bridge": "br 0"},
        {"bridge": "br\n0"},
        {"dir": Path("relative/dir")},
        {"dir": Path("/tmp/a,b")},
        {"dir": Path("/tmp/a\nb")},
        {"ipv4_address": "10.250.1.1"},
        {"ipv4_address": "10.250.1.1/33"},
        {"ipv4_address": "fd42::1/64"},
        {"ipv4_address": "10.250.1.1/24\n--dhcp-script=/bin/sh"},
        {"ipv4_address": "10.250.1.1/24", "ipv4_ranges": [("10.250.2.1", "10.250.2.9")]},
        {"ipv4_address": "10.250.1.1/24", "ipv4_ranges": [("10.250.1.9", "10.250.1.1")]},
        {"ipv4_address": "10.250.1.1/24", "ipv4_gateway": "10.250.1.1,6"},
        {"ipv4_address": "10.250.1.1/32"},
        {"ipv4_expiry": "1y"},
        {"ipv4_expiry": "1h,ignore"},
        {"ipv6_address": "fd42::1%eth0/64"},
        {"ipv6_address": "fd42::1/64", "ipv6_stateful": True, "ipv6_ranges": [("fd43::1", "fd43::9")]},
        {"dns_mode": "everything"},
        {"dns_domain": "lan,evil"},
        {"dns_domain": "-lan"},
        {"user": "root --dhcp-script"},
        {"log_file": Path("log")},
    ],
)
def test_render_args_refuses_bad_values(change: dict[str, object]) -> None:
    with pytest.raises(InvalidError):
        dnsmasq_args.render_args(replace(CFG, **change))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args",
    [
        ("c1.eth0", "0a:92:a7:00:00:1", None, None, None),
        ("c1.eth0", "0a:92:a7:00:00:01,ignore", None, None, None),
        ("c1.eth0", "0a-92-a7-00-00-01", None, None, None),
        ("c1/eth0", "0a:92:a7:00:00:01", None, None, None),
        (".c1", "0a:92:a7:00:00:01", None, None, None),
        ("..", "0a:92:a7:00:00:01", None, None, None),
        ("c1 eth0", "0a:92:a7:00:00:01", None, None, None),
        ("", "0a:92:a7:00:00:01", None, None, None),
        ("c1.eth0", "0a:92:a7:00:00:01", "10.250.1.300", None, None),
        ("c1.eth0", "0a:92:a7:00:00:01", "10.250.1.3,ignore", None, None),
        ("c1.eth0", "0a:92:a7:00:00:01", "fd42::1", None, None),
        ("c1.eth0", "0a:92:a7:00:00:01", None, "10.250.1.3", None),
        ("c1.eth0", "0a:92:a7:00:00:01", None, "fd42::1]", None),
        ("c1.eth0", "0a:92:a7:00:00:01", None, None, "c1,ignore"),
        ("c1.eth0", "0a:92:a7:00:00:01", None, None, "c1\nx"),
        ("c1.eth0", "0a:92:a7:00:00:01", None, None, "c1.example"),
        ("c1.eth0", "0a:92:a7:00:00:01", None, None, "-c1"),
        ("c1.eth0", "0a:92:a7:00:00:01", None, None, "1234"),
        ("c1.eth0", "0a:92:a7:00:00:01", None, None, "12h"),  # dnsmasq would read a lease time
        ("c1.eth0", "0a:92:a7:00:00:01", None, None, "infinite"),
        ("c1.eth0", "0a:92:a7:00:00:01", None, None, "ignore"),
        ("c1.eth0", "0a:92:a7:00:00:01", None, None, "a" * 64),
    ],
)
def test_write_static_allocation_refuses_bad_values(
    tmp_path: Path, args: tuple[str, str, str | None, str | None, str | None]
) -> None:
    with pytest.raises(InvalidError):
        dnsmasq_hosts.write_static_allocation(tmp_path, *args)
    assert not (tmp_path / dnsmasq_args.HOSTS_DIR).exists() or not os.listdir(
        tmp_path / dnsmasq_args.HOSTS_DIR
    )


def test_static_allocations_round_trip(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)  # a daemon's tight umask must not hide the files from dnsmasq
    try:
        dnsmasq_hosts.write_static_allocation(
            tmp_path, "c1.eth0", "0A:92:A7:00:00:01", "10.250.1.5", "fd42::5", "c1"
        )
    finally:
        os.umask(old_umask)
    dnsmasq_hosts.write_static_allocation(tmp_path, "c2.eth1", "0a:92:a7:00:00:02", None, None, "c2")
    dnsmasq_hosts.write_static_allocation(tmp_path, "c3.eth0", "0a:92:a7:00:00:03", None, "fd42::0:7", None)
    hosts = tmp_path / dnsmasq_args.HOSTS_DIR
    assert (hosts / "c1.eth0").read_text() == "0a:92:a7:00:00:01,10.250.1.5,[fd42::5],c1\n"
    assert oct(hosts.stat().st_mode & 0o777) == "0o755"
    assert oct((hosts / "c1.eth0").stat().st_mode & 0o777) == "0o644"
    (hosts / ".c9.eth0.tmp").write_text("junk")  # an in-flight write: ignored
    (hosts / "broken").write_text("not a dhcp-host line\n")  # skipped with a warning
    assert dnsmasq_hosts.static_allocations(tmp_path) == [
        StaticAllocation("c1.eth0", "0a:92:a7:00:00:01", "10.250.1.5", "fd42::5", "c1"),
        StaticAllocation("c2.eth1", "0a:92:a7:00:00:02", None, None, "c2"),
        StaticAllocation("c3.eth0", "0a:92:a7:00:00:03", None, "fd42::7", None),
    ]
    assert dnsmasq_hosts.static_allocations(tmp_path / "missing") == []


def test_read_leases_parses_ipv4_and_ipv6_lines(tmp_path: Path) -> None:
    (tmp_path / dnsmasq_args.LEASE_FILE).write_text(
        "1795834596 0a:92:a7:0d:b7:d9 10.250.1.178 * 01:0a:92:a7:0d:b7:d9\n"
        "0 0a:92:a7:0d:b7:da 10.250.1.5 c1 *\n"
        "duid 00:01:00:01:2e:c4:3e:5f:22:80:24:6a:9c:8a\n"
        "1795834700 1 fd42:250:1::1234 c2 00:03:00:01:0a:92:a7:00:00:02\n"
        "1795834700 T7 fd42:250:1::99 * 00:01:00:01:2e:c4:3e:5f:0a:92:a7:00:00:03\n"
        "1795834700 9 fd42:250:1::98 * 00:04:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99\n"
        "garbage line\n"
    )
    assert dnsmasq_hosts.read_leases(tmp_path) == [
        Lease(1795834596, "0a:92:a7:0d:b7:d9", "10.250.1.178", "", "01:0a:92:a7:0d:b7:d9"),
        Lease(0, "0a:92:a7:0d:b7:da", "10.250.1.5", "c1", ""),
        Lease(1795834700, "0a:92:a7:00:00:02", "fd42:250:1::1234", "c2", "00:03:00:01:0a:92:a7:00:00:02", 1),
        Lease(
            1795834700,
            "0a:92:a7:00:00:03",
            "fd42:250:1::99",
            "",
            "00:01:00:01:2e:c4:3e:5f:0a:92:a7:00:00:03",
            7,
        ),
        Lease(
            1795834700, "", "fd42:250:1::98", "", "00:04:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99", 9
        ),
    ]
    assert dnsmasq_hosts.read_leases(tmp_path / "missing") == []


def test_retired_allocations_are_listed_matched_by_whole_field_and_forgotten(tmp_path: Path) -> None:
    dnsmasq_hosts.write_static_allocation(
        tmp_path, "c1.eth0", "0a:92:a7:00:00:01", "10.250.3.13", "fd42::13", None
    )
    dnsmasq_hosts.write_static_allocation(tmp_path, "c2.eth0", "0a:92:a7:00:00:02", "10.250.3.14", None, None)
    hosts = tmp_path / dnsmasq_args.HOSTS_DIR

    assert dnsmasq_hosts.retire_static_allocation(tmp_path, "c1.eth0") == dnsmasq_hosts.Retired(1, 2)
    assert not (hosts / "c1.eth0").exists()
    assert dnsmasq_hosts.retire_static_allocation(tmp_path, "c1.eth0") is None  # already gone
    assert dnsmasq_hosts.retired_allocations(tmp_path) == [
        StaticAllocation("c1.eth0", "0a:92:a7:00:00:01", "10.250.3.13", "fd42::13", None)
    ]
    assert dnsmasq_hosts.retired_holds(tmp_path, "0A:92:A7:00:00:01", None, None)
    assert dnsmasq_hosts.retired_holds(tmp_path, "0a:92:a7:00:00:09", "10.250.3.13", None)
    assert dnsmasq_hosts.retired_holds(tmp_path, "0a:92:a7:00:00:09", None, "FD42:0::13")
    assert not dnsmasq_hosts.retired_holds(tmp_path, "0a:92:a7:00:00:09", "10.250.3.1", "fd42::1")

    (hosts / "c3.eth0").write_text("not a dhcp-host line\n")  # dnsmasq may hold anything for it
    retired = dnsmasq_hosts.retire_static_allocation(tmp_path, "c3.eth0")
    assert retired is not None and retired.count > retired.live_at_first // 8  # any share: reload
    dnsmasq_hosts.forget_retired(tmp_path)
    assert dnsmasq_hosts.retired_allocations(tmp_path) == []
    assert not dnsmasq_hosts.retired_holds(tmp_path, "0a:92:a7:00:00:01", None, None)
    dnsmasq_hosts.forget_retired(tmp_path)  # nothing retired: fine
