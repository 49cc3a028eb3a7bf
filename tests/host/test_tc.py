"""Traffic limits with tc on a real kernel, inside private namespaces.

Topology: namespace "host" holds the host end `<prefix>h` (10.250.7.1/24) of a veth whose other
end `<prefix>i` (10.250.7.2/24) sits in namespace "inst", standing in for the instance.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pincus.errors import HostError, InvalidError
from pincus.host import links, tc
from pincus.host.tc import Limits
from tests.pincus_testlib import NSEXEC, NetNS

MBIT = 1_000_000
HOST_IP = "10.250.7.1"
INST_IP = "10.250.7.2"
PORT = 5201


@dataclass
class Nic:
    host: NetNS  # where the host end and the IFB live
    inst: NetNS  # the "instance"
    dev: str
    ifb: str

    def apply(self, limits: Limits, use_police: bool = False) -> None:
        tc.apply_limits(self.dev, limits, self.ifb, use_police, netns=self.host.path)

    def clear(self) -> None:
        tc.clear_limits(self.dev, self.ifb, netns=self.host.path)

    def tcj(self, *args: str) -> list[dict[str, Any]]:
        proc = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.host.name}", "tc", "-j", *args],
            capture_output=True,
            text=True,
        )
        return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else []

    def qdiscs(self, dev: str | None = None) -> list[dict[str, Any]]:
        return self.tcj("qdisc", "show", "dev", dev or self.dev)

    def pincus_qdiscs(self, dev: str | None = None) -> list[dict[str, Any]]:
        """Everything but the kernel's default root qdisc (handle 0:)."""
        return [q for q in self.qdiscs(dev) if q.get("handle") != "0:"]

    def ingress_filters(self) -> list[dict[str, Any]]:
        # tc also lists a header per filter and u32's hash table; keep the filters proper.
        return [
            f
            for f in self.tcj("filter", "show", "dev", self.dev, "ingress")
            if {"actions", "prog"} & set(f.get("options", {}))
        ]

    def ifb_link(self) -> dict[str, Any] | None:
        for link in self.host.ipj("-d", "link", "show"):
            if link["ifname"] == self.ifb:
                return dict(link)
        return None


@pytest.fixture
def nic(prefix: str) -> Iterator[Nic]:
    host = NetNS(f"{prefix}h")
    inst = NetNS(f"{prefix}i")
    try:
        dev, peer = f"{prefix}h", f"{prefix}i"
        host.ip("link", "add", dev, "type", "veth", "peer", "name", peer, "netns", inst.name)
        host.ip("addr", "add", f"{HOST_IP}/24", "dev", dev)
        host.ip("link", "set", dev, "up")
        inst.ip("addr", "add", f"{INST_IP}/24", "dev", peer)
        inst.ip("link", "set", peer, "up")
        # "pif" + the prefix's hex: unique per test, and never the host's own ifb*.
        yield Nic(host, inst, dev, f"pif{prefix[1:]}")
    finally:
        inst.delete()
        host.delete()


def tbf_rate(q: dict[str, Any]) -> int:
    """tc -j reports rates in bytes per second."""
    return int(q["options"]["rate"]) * 8


# --- what the kernel shows ------------------------------------------------------------------


def test_ingress_limit_puts_a_tbf_with_the_rate_on_the_host_end(nic: Nic) -> None:
    nic.apply(Limits(ingress_bps=10 * MBIT, egress_bps=None, priority=None))

    [root] = nic.pincus_qdiscs()
    assert root["kind"] == "tbf" and root["root"] and root["handle"] == "1:"
    assert tbf_rate(root) == 10 * MBIT
    # tc stores the bucket as time, so a byte may be lost on the way back.
    assert root["options"]["burst"] == pytest.approx(tc.burst_bytes(10 * MBIT), abs=2)
    assert root["options"]["burst"] >= 16384 + 18
    assert nic.ifb_link() is None  # nothing to redirect


def test_egress_limit_redirects_host_end_ingress_to_an_ifb_shaped_with_tbf(nic: Nic) -> None:
    nic.apply(Limits(ingress_bps=None, egress_bps=10 * MBIT, priority=None))

    [ingress] = nic.pincus_qdiscs()
    assert ingress["kind"] == "ingress" and ingress["handle"] == "ffff:"
    [redirect] = nic.ingress_filters()
    assert redirect["kind"] == "u32" and redirect["protocol"] == "all"
    [action] = redirect["options"]["actions"]
    assert action["kind"] == "mirred"
    assert (action["mirred_action"], action["direction"], action["to_dev"]) == ("redirect", "egress", nic.ifb)

    link = nic.ifb_link()
    assert link is not None and link["linkinfo"]["info_kind"] == "ifb" and "UP" in link["flags"]
    [shaper] = nic.pincus_qdiscs(nic.ifb)
    assert shaper["kind"] == "tbf" and shaper["root"] and tbf_rate(shaper) == 10 * MBIT


def test_priority_is_a_bpf_filter_that_runs_before_the_redirect(nic: Nic) -> None:
    nic.apply(Limits(ingress_bps=None, egress_bps=10 * MBIT, priority=5))

    prio, redirect = sorted(nic.ingress_filters(), key=lambda f: f["pref"])
    assert prio["kind"] == "bpf" and prio["pref"] == 1
    assert prio["options"]["bpf_name"] == "pincus-priority-5"
    assert redirect["kind"] == "u32" and redirect["pref"] == 2


@pytest.mark.parametrize(
    ("limits", "with_priority_7"),
    [
        (Limits(ingress_bps=None, egress_bps=10 * MBIT, priority=7), 5),  # through the IFB
        (Limits(ingress_bps=None, egress_bps=None, priority=7), 5),  # priority alone
        (Limits(ingress_bps=None, egress_bps=10 * MBIT, priority=None), 0),  # the check can fail
    ],
    ids=["with-egress-limit", "alone", "control-without-priority"],
)
def test_priority_reaches_packets_from_the_instance(nic: Nic, limits: Limits, with_priority_7: int) -> None:
    nic.apply(limits)
    # Count, where the host delivers them, the packets whose skb->priority is 7 (nft: 0:7).
    ruleset = """table inet pt {
        chain input {
            type filter hook input priority 0
            ip saddr 10.250.7.2 udp dport 9 meta priority 0:7 counter
            ip saddr 10.250.7.2 udp dport 9 counter
        }
    }"""
    subprocess.run([*NSEXEC, nic.host.name, "nft", "-f", "-"], input=ruleset, text=True, check=True)
    send = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for _ in range(5): s.sendto(b'x', ('{HOST_IP}', 9))"
    )
    nic.inst.run(sys.executable, "-c", send)
    time.sleep(0.2)

    rules = [
        r["rule"]
        for r in json.loads(nic.host.run("nft", "-j", "list", "ruleset").stdout)["nftables"]
        if "rule" in r
    ]
    counts = [next(e["counter"]["packets"] for e in r["expr"] if "counter" in e) for r in rules]
    assert counts == [with_priority_7, 5]


def test_has_police_matches_the_kernel_config() -> None:
    config = Path("/proc/config.gz")
    if not config.exists():
        pytest.skip("no /proc/config.gz to compare with")
    text = gzip.decompress(config.read_bytes()).decode()
    expected = "CONFIG_NET_ACT_POLICE=y" in text or "CONFIG_NET_ACT_POLICE=m" in text
    assert tc.has_police() is expected
    started = time.perf_counter()
    assert tc.has_police() is expected
    assert time.perf_counter() - started < 0.001  # cached


# --- throughput -------------------------------------------------------------------------------

RECEIVER = """
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port)); srv.listen(1); srv.settimeout(10)
print("ready", flush=True)
conn, _ = srv.accept(); conn.settimeout(5)
got, start = 0, None
while True:
    data = conn.recv(1 << 16)
    if not data:
        break
    now = time.monotonic()
    start = start or now
    if now - start > seconds:
        break
    got += len(data)
print(json.dumps({"bytes": got, "seconds": seconds}))
"""

SENDER = """
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port), timeout=5)
chunk, end = b"x" * 65536, time.monotonic() + seconds
try:
    while time.monotonic() < end:
        s.sendall(chunk)
except (BrokenPipeError, ConnectionResetError):
    pass  # the receiver has its window and hung up
s.close()
"""


def throughput_bps(sender: NetNS, receiver: NetNS, dest: str, seconds: float) -> float:
    """TCP goodput from sender to receiver, measured by the receiver from its first byte."""
    rx = subprocess.Popen(
        [*NSEXEC, receiver.name, sys.executable, "-c", RECEIVER, str(PORT), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        # The sender keeps going a little past the window so the receiver never runs dry.
        sender.run(sys.executable, "-c", SENDER, dest, str(PORT), str(seconds + 0.5), timeout=seconds + 15)
        out, _ = rx.communicate(timeout=15)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    result = json.loads(out)
    return float(result["bytes"]) * 8 / float(result["seconds"])


@pytest.mark.slow
def test_a_10mbit_limit_holds_both_ways_and_unlimited_is_faster(nic: Nic) -> None:
    nic.apply(Limits(ingress_bps=10 * MBIT, egress_bps=10 * MBIT, priority=None))
    into_instance = throughput_bps(nic.host, nic.inst, INST_IP, 2.0)  # the host end's tbf
    out_of_instance = throughput_bps(nic.inst, nic.host, HOST_IP, 2.0)  # through the IFB
    nic.clear()
    free_in = throughput_bps(nic.host, nic.inst, INST_IP, 0.5)
    free_out = throughput_bps(nic.inst, nic.host, HOST_IP, 0.5)
    print(
        f"limited 10 Mbit: into instance {into_instance / MBIT:.2f} Mbit/s, "
        f"out of instance {out_of_instance / MBIT:.2f} Mbit/s; unlimited: "
        f"{free_in / MBIT:.0f} / {free_out / MBIT:.0f} Mbit/s"
    )

    assert 8 * MBIT <= into_instance <= 12 * MBIT
    assert 8 * MBIT <= out_of_instance <= 12 * MBIT
    assert free_in > 30 * MBIT and free_out > 30 * MBIT


# --- lifecycle --------------------------------------------------------------------------------


def test_clear_removes_qdiscs_filters_and_the_ifb(nic: Nic) -> None:
    nic.apply(Limits(ingress_bps=10 * MBIT, egress_bps=20 * MBIT, priority=3))
    assert nic.ifb_link() is not None

    nic.clear()

    assert nic.pincus_qdiscs() == []
    assert nic.ingress_filters() == []
    assert nic.ifb_link() is None
    nic.clear()  # nothing left to clear: fine
    nic.host.ip("link", "del", nic.dev)
    nic.clear()  # the device itself gone: fine


def test_applying_again_updates_in_place_leaving_one_set(nic: Nic) -> None:
    nic.apply(Limits(ingress_bps=10 * MBIT, egress_bps=10 * MBIT, priority=3))
    ifindex = nic.host.link(nic.ifb)["ifindex"]  # type: ignore[index]
    nic.apply(Limits(ingress_bps=20 * MBIT, egress_bps=5 * MBIT, priority=4))

    root, ingress = sorted(nic.pincus_qdiscs(), key=lambda q: q["kind"] == "ingress")
    assert root["kind"] == "tbf" and tbf_rate(root) == 20 * MBIT and ingress["kind"] == "ingress"
    prio, redirect = sorted(nic.ingress_filters(), key=lambda f: f["pref"])
    assert prio["options"]["bpf_name"] == "pincus-priority-4" and redirect["kind"] == "u32"
    [shaper] = nic.pincus_qdiscs(nic.ifb)
    assert tbf_rate(shaper) == 5 * MBIT
    assert nic.host.link(nic.ifb)["ifindex"] == ifindex  # type: ignore[index]  # IFB kept

    nic.apply(Limits(ingress_bps=1 * MBIT, egress_bps=None, priority=None))
    [root] = nic.pincus_qdiscs()
    assert root["kind"] == "tbf" and tbf_rate(root) == 1 * MBIT
    assert nic.ingress_filters() == []
    assert nic.ifb_link() is None  # no egress limit: IFB deleted

    nic.apply(Limits(ingress_bps=None, egress_bps=None, priority=None))
    assert nic.pincus_qdiscs() == []


def test_a_fresh_port_gets_the_same_set_without_the_deletes(nic: Nic) -> None:
    # fresh=True (a port just made, as a NIC start's) skips dropping qdiscs it cannot have yet.
    limits = Limits(ingress_bps=10 * MBIT, egress_bps=5 * MBIT, priority=None)
    tc.apply_limits(nic.dev, limits, nic.ifb, False, netns=nic.host.path, fresh=True)
    root, ingress = sorted(nic.pincus_qdiscs(), key=lambda q: q["kind"] == "ingress")
    assert root["kind"] == "tbf" and tbf_rate(root) == 10 * MBIT and ingress["kind"] == "ingress"
    [redirect] = nic.ingress_filters()
    assert redirect["options"]["actions"][0]["to_dev"] == nic.ifb
    [shaper] = nic.pincus_qdiscs(nic.ifb)
    assert tbf_rate(shaper) == 5 * MBIT
    nic.clear()
    assert nic.pincus_qdiscs() == [] and nic.ifb_link() is None


def kernel_group(link: dict[str, Any] | None) -> int:
    assert link is not None
    return int(link["group"]) & 0xFFFFFFFF  # ip prints a link group as a signed 32-bit number


def test_the_ifb_joins_the_link_group_its_port_leads_and_leaves_with_the_port(nic: Nic) -> None:
    nic.apply(Limits(ingress_bps=None, egress_bps=10 * MBIT, priority=None))
    port = nic.host.link(nic.dev)
    assert port is not None
    assert kernel_group(port) == kernel_group(nic.host.link(nic.ifb)) == 0x80000000 | port["ifindex"]

    links.delete_link(nic.dev, nic.host.path)  # one RTM_DELLINK for the whole group

    assert nic.host.link_names() == {"lo"}
    assert nic.inst.link_names() == {"lo"}  # the veth's peer went with it


def test_deleting_by_name_takes_only_the_group_that_link_leads(nic: Nic, prefix: str) -> None:
    nic.apply(Limits(ingress_bps=None, egress_bps=10 * MBIT, priority=None))
    # A second NIC with its own IFB, and an admin's links sharing a group of their own.
    other, other_ifb = f"{prefix}o", f"pif{prefix[1:]}o"
    nic.host.ip("link", "add", other, "type", "veth", "peer", "name", f"{prefix}q")
    tc.apply_limits(other, Limits(None, 10 * MBIT, None), other_ifb, False, nic.host.path)
    for name in ("adm0", "adm2"):
        nic.host.ip("link", "add", name, "type", "veth", "peer", "name", name[:-1] + str(int(name[-1]) + 1))
    for name in ("adm0", "adm1", "adm2", "adm3"):
        nic.host.ip("link", "set", name, "group", "7")
    before = nic.host.link_names()

    links.delete_link(nic.ifb, nic.host.path)  # an IFB is a member, not a leader: it goes alone
    assert nic.host.link_names() == before - {nic.ifb}
    links.delete_link("adm0", nic.host.path)  # a group that is not pincus's: only the link (and its peer)
    assert nic.host.link_names() == before - {nic.ifb, "adm0", "adm1"}
    links.delete_link(nic.dev, nic.host.path)
    assert nic.host.link_names() == before - {nic.ifb, "adm0", "adm1", nic.dev}
    assert {other, other_ifb, "adm2", "adm3"} <= nic.host.link_names()


def test_an_ifb_left_by_a_port_that_is_gone_joins_the_group_of_the_new_port(nic: Nic) -> None:
    nic.host.ip("link", "add", nic.ifb, "type", "ifb")
    nic.host.ip("link", "set", nic.ifb, "group", "9")

    nic.apply(Limits(ingress_bps=None, egress_bps=10 * MBIT, priority=None))

    port = nic.host.link(nic.dev)
    assert port is not None and kernel_group(nic.host.link(nic.ifb)) == 0x80000000 | port["ifindex"]
    links.delete_link(nic.dev, nic.host.path)
    assert nic.host.link_names() == {"lo"}


# --- failures leave nothing behind ----------------------------------------------------------


def assert_nothing_applied(nic: Nic) -> None:
    assert nic.pincus_qdiscs() == []
    assert nic.ingress_filters() == []
    assert nic.ifb_link() is None


def test_missing_device_raises_host_error_and_creates_no_ifb(nic: Nic) -> None:
    with pytest.raises(HostError, match="apply limits on nosuchdev0: no such device"):
        tc.apply_limits("nosuchdev0", Limits(10 * MBIT, 10 * MBIT, 1), nic.ifb, False, nic.host.path)
    assert nic.ifb_link() is None


def test_invalid_ifb_name_raises_host_error_and_leaves_nothing(nic: Nic) -> None:
    with pytest.raises(HostError, match=f"apply limits on {nic.dev}: add IFB pif/bad"):
        tc.apply_limits(nic.dev, Limits(10 * MBIT, 10 * MBIT, None), "pif/bad", False, nic.host.path)
    assert_nothing_applied(nic)


def test_failure_half_way_in_tc_undoes_the_earlier_steps(nic: Nic) -> None:
    if tc.has_police():
        pytest.skip("this kernel has tc police, so the police step cannot be made to fail")
    # The root tbf and the ingress qdisc go in before the police filter fails.
    with pytest.raises(HostError, match=f"apply limits on {nic.dev}: add police filter"):
        nic.apply(Limits(10 * MBIT, 10 * MBIT, None), use_police=True)
    assert_nothing_applied(nic)


def test_failure_at_the_last_step_undoes_everything_including_the_ifb(
    nic: Nic, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(nl: object, op: str, *args: object) -> None:
        raise HostError(f"{op}: add priority filter: injected")

    monkeypatch.setattr(tc, "_add_priority_filter", fail)
    with pytest.raises(HostError, match="injected"):
        nic.apply(Limits(10 * MBIT, 10 * MBIT, 2))
    assert_nothing_applied(nic)


def test_an_existing_non_ifb_device_of_the_ifb_name_is_never_touched(nic: Nic) -> None:
    nic.host.ip("link", "add", nic.ifb, "type", "veth", "peer", "name", nic.ifb + "p")

    with pytest.raises(HostError, match="exists and is not an IFB"):
        nic.apply(Limits(10 * MBIT, 10 * MBIT, None))
    nic.clear()

    assert nic.pincus_qdiscs() == []
    link = nic.ifb_link()
    assert link is not None and link["linkinfo"]["info_kind"] == "veth"


def test_host_ifb_names_and_untenable_rates_are_refused_before_any_change(nic: Nic) -> None:
    with pytest.raises(InvalidError, match="reserved"):
        tc.apply_limits(nic.dev, Limits(10 * MBIT, 10 * MBIT, None), "ifb0", False, nic.host.path)
    with pytest.raises(InvalidError, match="reserved"):
        tc.clear_limits(nic.dev, "ifb0", nic.host.path)
    with pytest.raises(InvalidError, match="outside what tc can shape"):
        nic.apply(Limits(10 * MBIT, 1, None))
    with pytest.raises(InvalidError, match="priority"):
        nic.apply(Limits(None, None, 2**32))
    assert_nothing_applied(nic)


def test_limits_at_the_edges_of_the_accepted_range_are_taken_by_the_kernel(nic: Nic) -> None:
    nic.apply(Limits(tc.MIN_RATE_BPS, tc.MAX_RATE_BPS, tc.MAX_PRIORITY))
    [root, _] = sorted(nic.pincus_qdiscs(), key=lambda q: q["kind"] == "ingress")
    assert tbf_rate(root) == tc.MIN_RATE_BPS and root["options"]["burst"] >= 16384 + 18
    [shaper] = nic.pincus_qdiscs(nic.ifb)
    assert tbf_rate(shaper) == tc.MAX_RATE_BPS // 8 * 8  # the 64-bit rate, in whole bytes
    prio, _ = sorted(nic.ingress_filters(), key=lambda f: f["pref"])
    assert prio["options"]["bpf_name"] == f"pincus-priority-{tc.MAX_PRIORITY}"


def test_burst_is_10ms_of_traffic_but_at_least_one_largest_frame() -> None:
    assert tc.burst_bytes(100 * MBIT) == 125_000
    assert tc.burst_bytes(1 * MBIT) == tc.burst_bytes(10 * MBIT) > 16384 + 18
    assert tc.burst_bytes(tc.MAX_RATE_BPS) == 256 * 2**20
    assert tc.police_burst_bytes(100 * MBIT) == 625_000  # no queue behind a policer: 50 ms
    # Whole GSO packets reach a policer: its bucket holds four (tests/guestkernel measures why).
    assert tc.police_burst_bytes(10 * MBIT) == tc.police_burst_bytes(1 * MBIT) == 256 * 1024


def test_a_namespace_that_cannot_be_entered_is_a_host_error() -> None:
    with pytest.raises(HostError, match="cannot enter the network namespace"):
        tc.apply_limits("nosuchdev0", Limits(10 * MBIT, None, None), "pifnone", False, "/nonexistent/ns")


def test_the_caller_namespace_is_left_as_it_was(nic: Nic) -> None:
    before = os.readlink("/proc/thread-self/ns/net")
    nic.apply(Limits(10 * MBIT, 10 * MBIT, 1))
    nic.clear()
    assert os.readlink("/proc/thread-self/ns/net") == before
