"""host/links.py against the real kernel, checked through `ip -j`, `/sys` and `/proc`.

Functions with a `netns` argument work inside a private namespace (`netns` fixture).
Those that act only on the daemon's namespace (bridges, TAPs, masters, carrier, IPv6
sysctl) use links named `<prefix>...` in the test process's namespace; the `host`
fixture deletes every such link afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pincus.errors import HostError, InvalidError
from pincus.host import addresses, links, routes, sysctl, taps
from tests.pincus_testlib import NetNS


def ipj(*args: str, ns: NetNS | None = None) -> Any:
    argv = [*(["nsenter", f"--net=/run/netns/{ns.name}"] if ns else []), "ip", "-j", *args]
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def link(name: str, ns: NetNS | None = None, details: bool = False) -> dict[str, Any] | None:
    found = ipj(*(["-d"] if details else []), "link", "show", "dev", name, ns=ns)
    return found[0] if found else None


def sys_net(name: str, attr: str) -> str:
    return Path(f"/sys/class/net/{name}/{attr}").read_text().strip()


@pytest.fixture
def host(prefix: str) -> Iterator[str]:
    """The prefix for links in the test process's own namespace; all are deleted afterwards."""
    try:
        yield prefix
    finally:
        for entry in ipj("link", "show"):
            if entry["ifname"].startswith(prefix):
                subprocess.run(["ip", "link", "del", entry["ifname"]], capture_output=True)


# --------------------------------------------------------------------------- veth


def test_veth_peer_is_born_in_the_namespace_with_its_settings(host: str, netns: NetNS) -> None:
    links.create_veth_into_netns(
        f"{host}h", "eth0", netns.path, peer_mac="02:fa:00:00:00:05", mtu=1400, txqlen=321
    )
    outside = link(f"{host}h", details=True)
    inside = link("eth0", netns, details=True)
    assert outside is not None and inside is not None
    assert outside["linkinfo"]["info_kind"] == "veth" == inside["linkinfo"]["info_kind"]
    assert inside["address"] == "02:fa:00:00:00:05"
    assert outside["mtu"] == inside["mtu"] == 1400
    assert outside["txqlen"] == inside["txqlen"] == 321


def test_veth_with_a_taken_name_fails_naming_the_veth(host: str, netns: NetNS) -> None:
    links.create_veth_into_netns(f"{host}h", "eth0", netns.path)
    with pytest.raises(HostError, match=rf'Failed to create veth "{host}h": File exists'):
        links.create_veth_into_netns(f"{host}h", "eth1", netns.path)
    assert link("eth1", netns) is None


def test_veth_into_a_missing_namespace_fails_naming_it(host: str) -> None:
    with pytest.raises(HostError, match=r"/run/netns/pincus-missing.*No such file"):
        links.create_veth_into_netns(f"{host}h", "eth0", "/run/netns/pincus-missing")
    assert link(f"{host}h") is None


def test_veth_born_on_a_bridge_and_a_refused_master_leaves_no_link(host: str, netns: NetNS) -> None:
    links.create_bridge(f"{host}br")
    links.create_veth_into_netns(f"{host}h", "eth0", netns.path, master=f"{host}br")
    assert os.path.basename(os.readlink(f"/sys/class/net/{host}h/master")) == f"{host}br"
    assert os.path.isdir(f"/sys/class/net/{host}br/brif/{host}h")
    inside = link("eth0", netns)
    assert inside is not None and "master" not in inside
    with pytest.raises(HostError, match=rf'Failed to create veth "{host}h2" on bridge "{host}nobr"'):
        links.create_veth_into_netns(f"{host}h2", "eth1", netns.path, master=f"{host}nobr")
    # A master that is no bridge (a veth cannot take ports): the kernel unregisters the new pair.
    with pytest.raises(HostError, match=rf'Failed to create veth "{host}h3" on bridge "{host}h"'):
        links.create_veth_into_netns(f"{host}h3", "eth3", netns.path, master=f"{host}h")
    assert link(f"{host}h2") is None and link(f"{host}h3") is None
    assert link("eth1", netns) is None and link("eth3", netns) is None


def test_veth_with_both_ends_in_the_daemon_namespace(host: str) -> None:
    links.create_veth(f"{host}a", f"{host}b", peer_mac="02:fa:00:00:00:06", mtu=1300)
    a, b = link(f"{host}a", details=True), link(f"{host}b")
    assert a is not None and b is not None
    assert a["linkinfo"]["info_kind"] == "veth"
    assert b["address"] == "02:fa:00:00:00:06"
    assert a["mtu"] == b["mtu"] == 1300


# --------------------------------------------------------------------------- bridge, TAP, master


def test_bridge_has_stp_off_forward_delay_0_and_the_asked_mtu_and_mac(host: str) -> None:
    links.create_bridge(f"{host}br", mtu=1450, hwaddr="02:fa:00:00:00:01")
    assert sys_net(f"{host}br", "bridge/stp_state") == "0"
    assert sys_net(f"{host}br", "bridge/forward_delay") == "0"
    assert sys_net(f"{host}br", "mtu") == "1450"
    assert sys_net(f"{host}br", "address") == "02:fa:00:00:00:01"
    with pytest.raises(HostError, match=rf'Failed to create bridge "{host}br": File exists'):
        links.create_bridge(f"{host}br")


def test_tap_is_persistent_single_queue_and_refuses_a_taken_name(host: str) -> None:
    taps.create_tap(f"{host}t", mtu=1400)
    found = link(f"{host}t", details=True)
    assert found is not None
    assert found["mtu"] == 1400
    data = found["linkinfo"]["info_data"]
    assert found["linkinfo"]["info_kind"] == "tun"
    assert (data["type"], data["persist"], data["multi_queue"], data["pi"]) == ("tap", True, False, False)
    with pytest.raises(HostError, match=rf'Failed to create TAP "{host}t": File exists'):
        taps.create_tap(f"{host}t")


def test_tap_with_a_bad_mtu_leaves_nothing_behind(host: str) -> None:
    with pytest.raises(HostError, match=rf'Failed to create TAP "{host}t"'):
        taps.create_tap(f"{host}t", mtu=20)
    assert link(f"{host}t") is None


def test_set_master_and_nomaster(host: str) -> None:
    links.create_bridge(f"{host}br")
    links.create_veth(f"{host}a", f"{host}b")
    links.set_master(f"{host}a", f"{host}br")
    assert os.path.basename(os.readlink(f"/sys/class/net/{host}a/master")) == f"{host}br"
    info = links.get_link(f"{host}a")
    assert info is not None and info.master == f"{host}br"
    links.set_nomaster(f"{host}a")
    assert not os.path.lexists(f"/sys/class/net/{host}a/master")
    with pytest.raises(HostError, match=rf'Failed to attach "{host}a" to bridge "{host}nobr"'):
        links.set_master(f"{host}a", f"{host}nobr")


def test_ipv6_can_be_disabled_and_enabled(host: str) -> None:
    links.create_veth(f"{host}a", f"{host}b")
    proc = Path(f"/proc/sys/net/ipv6/conf/{host}a/disable_ipv6")
    sysctl.set_ipv6_disabled(f"{host}a")
    assert proc.read_text().strip() == "1"
    sysctl.set_ipv6_disabled(f"{host}a", False)
    assert proc.read_text().strip() == "0"
    with pytest.raises(HostError, match=rf'Failed to disable IPv6 on "{host}zz"'):
        sysctl.set_ipv6_disabled(f"{host}zz")


# --------------------------------------------------------------------------- inside a namespace


@pytest.fixture
def pair(netns: NetNS) -> NetNS:
    """veth `va`/`vb` inside the private namespace."""
    netns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    return netns


def test_up_and_down(pair: NetNS) -> None:
    links.set_up("va", pair.path)
    assert "UP" in link("va", pair)["flags"]  # type: ignore[index]
    links.set_down("va", pair.path)
    assert "UP" not in link("va", pair)["flags"]  # type: ignore[index]


def test_mtu_mac_and_txqlen(pair: NetNS) -> None:
    links.set_mtu("va", 1280, pair.path)
    links.set_mac("va", "02:FA:00:00:00:09", pair.path)
    links.set_txqlen("va", 77, pair.path)
    found = link("va", pair)
    assert found is not None
    assert (found["mtu"], found["address"], found["txqlen"]) == (1280, "02:fa:00:00:00:09", 77)
    with pytest.raises(HostError, match=r'Failed to set MTU 10 on "va" in network namespace .*Invalid'):
        links.set_mtu("va", 10, pair.path)


def test_rename(pair: NetNS) -> None:
    links.rename_link("va", "eth0", pair.path)
    assert link("eth0", pair) is not None and link("va", pair) is None
    with pytest.raises(HostError, match=r'Failed to rename "va" to "eth1".*No such device'):
        links.rename_link("va", "eth1", pair.path)


def test_move_into_a_namespace_renamed_and_back_out(host: str, netns: NetNS) -> None:
    links.create_veth(f"{host}a", f"{host}b", peer_mac="02:fa:00:00:00:07")
    links.move_link_to_netns(f"{host}b", netns.path, new_name="eth0")
    assert link(f"{host}b") is None
    inside = link("eth0", netns)
    assert inside is not None and inside["address"] == "02:fa:00:00:00:07"
    links.move_link_to_netns("eth0", None, new_name=f"{host}c", from_netns=netns.path)
    assert link("eth0", netns) is None
    back = link(f"{host}c")
    assert back is not None and back["address"] == "02:fa:00:00:00:07"
    links.move_link_to_netns(f"{host}c", netns.path)
    assert link(f"{host}c", netns) is not None


def test_delete_link_and_deleting_a_missing_one_is_fine(pair: NetNS) -> None:
    links.delete_link("va", pair.path)
    assert pair.link_names() == {"lo"}
    links.delete_link("va", pair.path)
    links.delete_link("va", "/run/netns/pincus-missing")


def test_addresses_added_listed_and_flushed(pair: NetNS) -> None:
    links.set_up("va", pair.path)
    addresses.add_address("va", "10.250.1.5/24", pair.path)
    addresses.add_address("va", "10.250.1.6/24", pair.path)
    addresses.add_address("va", "fd42:250::5/64", pair.path)
    kernel = {
        f"{a['local']}/{a['prefixlen']}"
        for entry in ipj("addr", "show", "dev", "va", ns=pair)
        for a in entry["addr_info"]
    }
    assert {"10.250.1.5/24", "10.250.1.6/24", "fd42:250::5/64"} <= kernel
    assert set(addresses.link_addresses("va", pair.path)) == kernel
    with pytest.raises(HostError, match=r'Failed to add address 10.250.1.5/24 to "va".*File exists'):
        addresses.add_address("va", "10.250.1.5/24", pair.path)
    pair.ip("addr", "flush", "dev", "va")
    assert addresses.link_addresses("va", pair.path) == []


def test_one_address_deleted_and_all_listed(pair: NetNS) -> None:
    links.set_up("va", pair.path)
    addresses.add_address("va", "10.250.1.5/24", pair.path)
    addresses.add_address("va", "fd42:250::5/64", pair.path)
    kernel = {
        f"{a['local']}/{a['prefixlen']}" for entry in ipj("addr", "show", ns=pair) for a in entry["addr_info"]
    }
    assert set(addresses.all_addresses(pair.path)) == kernel
    assert {"10.250.1.5/24", "fd42:250::5/64", "127.0.0.1/8"} <= kernel
    addresses.delete_address("va", "10.250.1.5/24", pair.path)
    left = {
        f"{a['local']}/{a['prefixlen']}" for a in ipj("addr", "show", "dev", "va", ns=pair)[0]["addr_info"]
    }
    assert "10.250.1.5/24" not in left and "fd42:250::5/64" in left
    # Already gone, or no such link: nothing to do.
    addresses.delete_address("va", "10.250.1.5/24", pair.path)
    addresses.delete_address("nosuch", "10.250.1.5/24", pair.path)
    with pytest.raises(InvalidError):
        addresses.delete_address("va", "10.250.1.5/33", pair.path)


def test_routes_added_and_deleted(pair: NetNS) -> None:
    links.set_up("va", pair.path)
    addresses.add_address("va", "10.250.2.1/24", pair.path)
    routes.add_route("10.250.3.0/24", "va", netns=pair.path)
    routes.add_route("10.250.4.0/24", "va", via="10.250.2.9", netns=pair.path)
    routes.add_route("fd42:250:3::/64", "va", netns=pair.path)
    v4 = {r["dst"]: r for r in ipj("route", "show", ns=pair)}
    assert v4["10.250.3.0/24"]["dev"] == "va" and v4["10.250.3.0/24"]["scope"] == "link"
    assert v4["10.250.4.0/24"]["gateway"] == "10.250.2.9"
    assert "fd42:250:3::/64" in {r["dst"] for r in ipj("-6", "route", "show", ns=pair)}
    with pytest.raises(HostError, match=r'Failed to add route 10.250.3.0/24 dev "va".*File exists'):
        routes.add_route("10.250.3.0/24", "va", netns=pair.path)
    for dst in ("10.250.3.0/24", "10.250.4.0/24", "fd42:250:3::/64"):
        routes.delete_route(dst, "va", pair.path)
    routes.delete_route("10.250.3.0/24", "va", pair.path)  # gone already: fine
    left = {r["dst"] for r in ipj("route", "show", ns=pair) + ipj("-6", "route", "show", ns=pair)}
    assert not left & {"10.250.3.0/24", "10.250.4.0/24", "fd42:250:3::/64"}


def _cidr(dst: str, version: int) -> str:
    if dst == "default":
        return "0.0.0.0/0" if version == 4 else "::/0"
    return dst if "/" in dst else f"{dst}/{32 if version == 4 else 128}"


def test_route_list_has_every_table_of_both_families_as_the_kernel_shows_it(pair: NetNS) -> None:
    links.set_up("va", pair.path)
    addresses.add_address("va", "10.250.5.1/24", pair.path)
    pair.ip("route", "add", "default", "via", "10.250.5.9")
    pair.ip("route", "add", "10.250.6.0/24", "dev", "va", "table", "100")
    pair.ip("-6", "route", "add", "fd42:250:6::/64", "dev", "va", "table", "100")
    kernel = sorted(
        _cidr(r["dst"], version)
        for version in (4, 6)
        for r in ipj(f"-{version}", "route", "show", "table", "all", ns=pair)
    )
    assert sorted(routes.list_routes(pair.path)) == kernel
    assert {"0.0.0.0/0", "10.250.5.0/24", "10.250.6.0/24", "fd42:250:6::/64"} <= set(kernel)


def test_vlan_interface_on_a_kernel_without_8021q_fails_naming_it(host: str) -> None:
    # The guest kernel creates them for real (tests/guestkernel/test_vlans.py).
    links.create_veth(f"{host}a", f"{host}b")
    with pytest.raises(HostError, match=rf'Failed to create VLAN 10 interface "{host}v" on "{host}a": '):
        links.create_vlan(f"{host}v", f"{host}a", 10, gvrp=True)
    with pytest.raises(InvalidError, match="outside 0-4094"):
        links.create_vlan(f"{host}v", f"{host}a", 4095)
    assert link(f"{host}v") is None


def test_get_link_matches_the_kernel_view(pair: NetNS) -> None:
    pair.ip("link", "add", "br0", "type", "bridge")
    pair.ip("link", "set", "va", "master", "br0", "mtu", "1400", "txqlen", "55", "up")
    pair.ip("link", "set", "vb", "up")
    kernel = link("va", pair, details=True)
    info = links.get_link("va", pair.path)
    assert kernel is not None and info is not None
    assert info.index == kernel["ifindex"]
    assert info.name == "va" and info.kind == "veth" and info.master == "br0"
    assert (info.mac, info.mtu, info.txqlen) == (kernel["address"], 1400, 55)
    assert info.up is True
    assert info.operstate == kernel["operstate"]
    assert info.carrier == ("NO-CARRIER" not in kernel["flags"])
    assert links.get_link("nosuch", pair.path) is None
    lo = links.get_link("lo", pair.path)
    assert lo is not None and lo.kind is None


def test_list_links_matches_the_kernel_view(pair: NetNS) -> None:
    kernel = {(e["ifindex"], e["ifname"]) for e in ipj("link", "show", ns=pair)}
    listed = links.list_links(pair.path)
    assert {(li.index, li.name) for li in listed} == kernel
    assert [li.index for li in listed] == sorted(li.index for li in listed)


def test_stats_count_real_traffic(netns: NetNS, prefix: str) -> None:
    other = NetNS(f"{prefix}o")
    try:
        netns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", other.name)
        netns.ip("addr", "add", "10.250.5.1/24", "dev", "va")
        other.ip("addr", "add", "10.250.5.2/24", "dev", "vb")
        netns.ip("link", "set", "va", "up")
        other.ip("link", "set", "vb", "up")
        netns.run("busybox", "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.250.5.2")
        # IPv6 router solicitations may add a packet at any time: read the kernel on both sides.
        before = ipj("-s", "link", "show", "dev", "va", ns=netns)[0]["stats64"]
        stats = links.link_stats("va", netns.path)
        after = ipj("-s", "link", "show", "dev", "va", ns=netns)[0]["stats64"]
    finally:
        other.delete()
    assert stats.tx_packets >= 3 and stats.rx_packets >= 3
    for direction, prefix_ in (("tx", "tx_"), ("rx", "rx_")):
        for counter in ("packets", "bytes", "errors", "dropped"):
            ours = getattr(stats, prefix_ + counter)
            assert before[direction][counter] <= ours <= after[direction][counter], (direction, counter)
    with pytest.raises(HostError, match=r'Failed to read statistics of "nosuch"'):
        links.link_stats("nosuch", netns.path)


# --------------------------------------------------------------------------- robustness


def test_a_missing_namespace_is_a_host_error_naming_it() -> None:
    with pytest.raises(HostError, match=r'"eth0" in network namespace "/run/netns/pincus-missing"'):
        links.set_up("eth0", "/run/netns/pincus-missing")


def test_bad_input_is_an_invalid_error() -> None:
    calls: list[Callable[[], object]] = [
        lambda: links.get_link("a/b"),
        lambda: links.get_link("x" * 16),
        lambda: links.set_mac("nosuchlink", "zz:00:00:00:00:00"),
        lambda: addresses.add_address("nosuchlink", "10.250.0.1/99"),
        lambda: routes.add_route("10.250.0.0/16", "nosuchlink", via="fd42:250::1"),
    ]
    for call in calls:
        with pytest.raises(InvalidError):
            call()


def test_concurrent_callers_from_many_threads(host: str, netns: NetNS) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(3):
                links.create_veth_into_netns(f"{host}{i}{j}", f"p{i}{j}", netns.path)
                links.set_up(f"p{i}{j}", netns.path)
                links.set_up(f"{host}{i}{j}")
                assert links.get_link(f"p{i}{j}", netns.path) is not None
                assert f"p{i}{j}" in {li.name for li in links.list_links(netns.path)}
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    inside = {e["ifname"]: e for e in ipj("link", "show", ns=netns)}
    assert {f"p{i}{j}" for i in range(6) for j in range(3)} <= set(inside)
    assert all("UP" in inside[f"p{i}{j}"]["flags"] for i in range(6) for j in range(3))


def test_repeated_calls_leak_no_descriptors_or_threads(pair: NetNS) -> None:
    links.get_link("lo")  # warm the pool and the helper thread
    links.set_up("va", pair.path)
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    for _ in range(200):
        links.set_up("va", pair.path)
        links.get_link("va", pair.path)
        links.get_link("lo")
        with pytest.raises(HostError):
            links.set_mtu("va", 1, pair.path)
    assert len(os.listdir("/proc/self/fd")) <= fds + 1
    assert threading.active_count() == threads


def test_a_namespace_used_by_links_is_not_kept_alive(host: str, prefix: str) -> None:
    """After `ip netns del`, nothing of ours may pin it: its veth peers die, so do the host ends."""
    ns = NetNS(f"{prefix}gone")
    try:
        links.create_veth_into_netns(f"{host}h", "eth0", ns.path)
        links.set_up("eth0", ns.path)
        assert links.get_link("eth0", ns.path) is not None
    finally:
        ns.delete()
    deadline = time.monotonic() + 5
    while link(f"{host}h") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert link(f"{host}h") is None
