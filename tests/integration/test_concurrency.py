"""Many clients at once: parallel launches, hot-plug loops on one instance, concurrent edits of one
network and one instance's devices. Each test is bounded (pytest-timeout and joins with a timeout),
so a deadlock fails the test instead of holding CI, and each checks the kernel's own view."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.pincus_testlib import Daemon, image_source

pytestmark = pytest.mark.timeout(240)

# A join that takes longer than this is a deadlock, not a slow machine.
JOIN_TIMEOUT = 150.0


def run_all(work: list[Callable[[], Any]], workers: int | None = None) -> list[Any]:
    """Run every callable at once; their results in order. A worker's exception fails the test."""
    with ThreadPoolExecutor(max_workers=workers or len(work)) as pool:
        futures = [pool.submit(w) for w in work]
        deadline = time.monotonic() + JOIN_TIMEOUT
        return [f.result(timeout=max(0.0, deadline - time.monotonic())) for f in futures]


def op(daemon: Daemon, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """A background request run to its end: the finished operation."""
    code, doc = daemon.api(method, path, body)
    assert code == 202, (method, path, code, doc)
    return daemon.wait_op(doc, timeout=120)


def instance(daemon: Daemon, name: str) -> dict[str, Any]:
    code, doc = daemon.api("GET", f"/1.0/instances/{name}")
    assert code == 200, doc
    return dict(doc["metadata"])


def init_pid(daemon: Daemon, name: str) -> int:
    code, doc = daemon.api("GET", f"/1.0/instances/{name}/state")
    assert code == 200, doc
    return int(doc["metadata"]["pid"])


def links_in(pid: int) -> list[dict[str, Any]]:
    """`ip -j link` inside the network namespace of process pid (a container's init)."""
    out = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-j", "link", "show"],
        check=True, text=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip
    return list(json.loads(out))


def bridge_ports(daemon: Daemon) -> dict[str, str]:
    """host interface -> the bridge it is enslaved to, as the kernel's bridge layer says."""
    out = daemon.ns.run("bridge", "-j", "link", "show").stdout
    return {p["ifname"]: p["master"] for p in json.loads(out or "[]") if "master" in p}


def hosts_files(daemon: Daemon, network: str) -> list[str]:
    """The lines of the managed bridge's dnsmasq hosts files (one NIC a file)."""
    hosts = daemon.dir / "networks" / network / "dnsmasq" / "dnsmasq.hosts"
    return [p.read_text().strip() for p in sorted(hosts.iterdir()) if not p.name.startswith(".")]


def udhcpc(daemon: Daemon, name: str, ifname: str) -> None:
    """Ask the managed bridge's dnsmasq for a lease from inside (no address set: only the lease counts)."""
    daemon.cli(
        "exec", name, "--", "busybox", "udhcpc", "-q", "-n", "-t", "5", "-T", "1", "-i", ifname,
        "-s", "/bin/true", timeout=60,
    )  # fmt: skip


def test_fifty_instances_launched_at_once_get_distinct_macs_names_ports_and_addresses(
    daemon: Daemon, prefix: str
) -> None:
    lan, net = f"{prefix}lan", f"{prefix}br"
    daemon.ns.add_bridge(lan)
    daemon.cli("network", "create", "phys", "--type=physical", f"parent={lan}")
    daemon.cli("network", "create", net, "ipv4.address=10.250.60.1/24", "ipv6.address=none",
               "ipv4.dhcp.ranges=10.250.60.100-10.250.60.200")  # fmt: skip
    names = [f"c{i:02d}" for i in range(50)]
    daemon.image()

    def devices(i: int) -> dict[str, dict[str, str]]:
        eth0 = {"type": "nic", "network": net, "name": "eth0"}
        if i % 2 == 0:  # half static, half dynamic: both kinds of dnsmasq entry race
            eth0["ipv4.address"] = f"10.250.60.{10 + i}"
        eth1 = {"type": "nic", "network": "phys", "name": "eth1"}
        if i % 5 == 0:  # a filtered static address on the unmanaged bridge: nft under concurrency too
            eth1 |= {"ipv4.address": f"10.250.62.{10 + i}", "security.ipv4_filtering": "true"}
        return {"eth0": eth0, "eth1": eth1}

    def launch(i: int) -> tuple[str, str]:
        name = names[i]
        body = {"name": name, "profiles": [], "devices": devices(i), "source": image_source()}
        created = op(daemon, "POST", "/1.0/instances", body)
        started = op(daemon, "PUT", f"/1.0/instances/{name}/state", {"action": "start", "timeout": 30})
        return created["status"] + ("" if created["err"] == "" else created["err"]), started["err"]

    began = time.monotonic()
    results = run_all([lambda i=i: launch(i) for i in range(len(names))])  # type: ignore[misc]
    took = time.monotonic() - began
    print(f"\n50 instances created and started at once in {took:.1f} s")
    assert results == [("Success", "")] * len(names), [r for r in results if r != ("Success", "")]

    ports = bridge_ports(daemon)
    host_names: list[str] = []
    macs: list[str] = []
    for name in names:
        meta = instance(daemon, name)
        assert meta["status"] == "Running", (name, meta["status"])
        config = meta["config"]
        inside = {link["ifname"]: link for link in links_in(init_pid(daemon, name))}
        for dev, bridge in (("eth0", net), ("eth1", lan)):
            host = config[f"volatile.{dev}.host_name"]
            mac = config[f"volatile.{dev}.hwaddr"]
            assert ports.get(host) == bridge, (name, dev, host, ports.get(host))
            assert inside[dev]["address"] == mac, (name, dev)
            assert inside[dev]["operstate"] in ("UP", "UNKNOWN", "LOWERLAYERDOWN"), inside[dev]
            host_names.append(host)
            macs.append(inside[dev]["address"])
    assert len(host_names) == 100 and not [n for n, c in Counter(host_names).items() if c > 1]
    assert not [m for m, c in Counter(macs).items() if c > 1]
    # Every host end is a port of one of the two bridges, none elsewhere.
    assert {n for n, b in ports.items() if b in (lan, net)} >= set(host_names)

    # Each filtered NIC's port is in the kernel's filter sets with its own address, and only those.
    ruleset = json.loads(daemon.ns.run("nft", "-j", "list", "ruleset").stdout)["nftables"]
    sets = {x["set"]["name"]: x["set"].get("elem", []) for x in ruleset if "set" in x}
    allowed = {tuple(e["concat"]) for e in sets["allowed_v4"]}
    filtered = {instance(daemon, names[i])["config"]["volatile.eth1.host_name"]: i for i in range(0, 50, 5)}
    assert set(sets["v4_filtered"]) == set(filtered), sets["v4_filtered"]
    assert allowed == {(host, f"10.250.62.{10 + i}") for host, i in filtered.items()}, allowed

    lines = hosts_files(daemon, net)
    assert len(lines) == 25, lines  # one static allocation for each even instance
    hosts_macs = [line.split(",")[0] for line in lines]
    hosts_ips = [line.split(",")[1] for line in lines]
    assert len(set(hosts_macs)) == 25 and len(set(hosts_ips)) == 25, lines
    assert sorted(hosts_ips) == sorted(f"10.250.60.{10 + i}" for i in range(0, 50, 2))

    # Ten clients, static and dynamic, ask for leases at once: none shares a MAC or an address.
    askers = names[:10]
    run_all([lambda n=n: udhcpc(daemon, n, "eth0") for n in askers])  # type: ignore[misc]
    leases = daemon.dir / "networks" / net / "dnsmasq" / "dnsmasq.leases"
    rows = [line.split() for line in leases.read_text().splitlines() if line and not line.startswith("duid")]
    assert len(rows) == 10, rows
    assert len({r[1] for r in rows}) == 10 and len({r[2] for r in rows}) == 10, rows
    for i, name in enumerate(askers):
        mac = instance(daemon, name)["config"]["volatile.eth0.hwaddr"]
        ip = next(r[2] for r in rows if r[1] == mac)
        if i % 2 == 0:
            assert ip == f"10.250.60.{10 + i}"
        else:
            assert 100 <= int(ip.split(".")[-1]) <= 200, ip
    print(f"checked in {time.monotonic() - began - took:.1f} s more")


def links_by_kind(daemon: Daemon) -> dict[str, set[str]]:
    """The namespace's interfaces by kind (veth, ifb, bridge...), from `ip -d -j link`."""
    kinds: dict[str, set[str]] = {}
    for link in daemon.ns.ipj("-d", "link", "show"):
        kind = link.get("linkinfo", {}).get("info_kind", "")
        kinds.setdefault(kind, set()).add(link["ifname"])
    return kinds


STALE = "ETag doesn't match"


def remove_device(daemon: Daemon, name: str, dev: str) -> int:
    """Take DEV off as a careful client does: read, write everything else back with If-Match, and
    read again on 412. Returns how many times the write was refused as stale."""
    for stale in range(500):
        code, headers, doc = daemon.api_full("GET", f"/1.0/instances/{name}")
        assert code == 200, doc
        meta = doc["metadata"]
        devices = {k: v for k, v in meta["devices"].items() if k != dev}
        body = {"config": meta["config"], "devices": devices, "profiles": meta["profiles"]}
        code, _, doc = daemon.api_full("PUT", f"/1.0/instances/{name}", body, {"If-Match": headers["etag"]})
        if code == 202:
            done = daemon.wait_op(doc, timeout=120)
            if done["status"] == "Success":
                return stale
            assert STALE in done["err"], done  # refused under the lock: stale too, nothing else
        else:
            assert code == 412, (code, doc)
    raise AssertionError(f"{dev}: 500 stale writes in a row")


def test_twenty_hotplug_loops_on_one_instance_end_as_the_kernel_says(daemon: Daemon, prefix: str) -> None:
    lan, net = f"{prefix}lan", f"{prefix}br"
    daemon.ns.add_bridge(lan)
    daemon.cli("network", "create", net, "ipv4.address=10.250.63.1/24", "ipv6.address=none")
    daemon.image()
    op(daemon, "POST", "/1.0/instances", {"name": "c1", "profiles": [], "source": image_source()})
    assert op(daemon, "PUT", "/1.0/instances/c1/state", {"action": "start"})["err"] == ""
    before = links_by_kind(daemon)
    rounds = 3
    loops = 20

    def nic(i: int) -> dict[str, str]:
        if i % 2 == 0:  # on the managed bridge with a static address: a dnsmasq hosts file each
            return {"type": "nic", "network": net, "name": f"e{i}", "ipv4.address": f"10.250.63.{10 + i}"}
        # limits.egress: an IFB on this kernel, so a leaked one shows too.
        return {
            "type": "nic", "nictype": "bridged", "parent": lan, "name": f"e{i}", "limits.egress": "50Mbit"
        }  # fmt: skip

    def kept_after_loop(i: int) -> bool:
        return i % 4 in (1, 2)  # both kinds stay plugged in some loops

    def loop(i: int) -> tuple[int, int]:
        dev, stale, added = f"d{i}", 0, 0
        for r in range(rounds):
            done = op(daemon, "PATCH", "/1.0/instances/c1", {"devices": {dev: nic(i)}})
            assert done["status"] == "Success", done  # PATCH merges one device: nothing to go stale
            added += 1
            if kept_after_loop(i) and r == rounds - 1:
                break
            stale += remove_device(daemon, "c1", dev)
        return added, stale

    began = time.monotonic()
    results = run_all([lambda i=i: loop(i) for i in range(loops)])  # type: ignore[misc]
    took = time.monotonic() - began
    print(f"\n{loops} hot-plug loops, {rounds} rounds each: {took:.1f} s, "
          f"{sum(s for _, s in results)} stale writes retried")  # fmt: skip
    assert [a for a, _ in results] == [rounds] * loops

    # The API, the container and the host agree on what is plugged.
    meta = instance(daemon, "c1")
    kept = {f"d{i}" for i in range(loops) if kept_after_loop(i)}
    assert set(meta["devices"]) == kept
    inside = {link["ifname"]: link["address"] for link in links_in(init_pid(daemon, "c1"))}
    assert set(inside) == {"lo"} | {f"e{d[1:]}" for d in kept}, sorted(inside)
    ports = bridge_ports(daemon)
    hosts = set()
    for dev in kept:
        i = int(dev[1:])
        assert inside[f"e{i}"] == meta["config"][f"volatile.{dev}.hwaddr"]
        host = meta["config"][f"volatile.{dev}.host_name"]
        assert ports.get(host) == (net if i % 2 == 0 else lan), (dev, host)
        hosts.add(host)
    # dnsmasq's hosts files: exactly the managed NICs still plugged, each with its own address.
    allocations = sorted(hosts_files(daemon, net))
    expected = sorted(
        f"{meta['config'][f'volatile.d{i}.hwaddr']},10.250.63.{10 + i},c1"
        for i in range(0, loops, 2) if f"d{i}" in kept
    )  # fmt: skip
    assert allocations == expected
    # No volatile record of a removed device stays either.
    assert not [k for k in meta["config"] if k.startswith("volatile.d") and k.split(".")[1] not in kept]
    now = links_by_kind(daemon)
    assert now.get("veth", set()) - before.get("veth", set()) == hosts
    limited = [d for d in kept if int(d[1:]) % 2 == 1]
    assert len(now.get("ifb", set()) - before.get("ifb", set())) == len(limited), now.get("ifb")

    # Unplugging the rest at once leaves the host as before the loops.
    run_all([lambda d=d: remove_device(daemon, "c1", d) for d in sorted(kept)])  # type: ignore[misc]
    assert links_by_kind(daemon) == before
    assert {link["ifname"] for link in links_in(init_pid(daemon, "c1"))} == {"lo"}
    assert hosts_files(daemon, net) == []


def test_concurrent_edits_of_one_network_are_serialized_and_none_is_lost(daemon: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=10.250.61.1/24", "ipv6.address=none")
    rounds, writers = 5, 8

    def patcher(i: int) -> None:
        # PATCH merges: each writer's own key, with and without a matching If-Match.
        for r in range(rounds):
            code, headers, _ = daemon.api_full("GET", f"/1.0/networks/{net}")
            tag = {"If-Match": headers["etag"]} if r % 2 else {}
            body = {"config": {f"user.p{i}": str(r)}}
            code, _, doc = daemon.api_full("PATCH", f"/1.0/networks/{net}", body, tag)
            if code == 412:  # someone wrote since our read: read again and retry once more
                code, _, doc = daemon.api_full("PATCH", f"/1.0/networks/{net}", body)
            assert code == 200, doc

    def putter(i: int) -> int:
        """Read-modify-write of the whole config with If-Match, again on 412: the careful client."""
        stale = 0
        for r in range(rounds):
            while True:
                code, headers, doc = daemon.api_full("GET", f"/1.0/networks/{net}")
                config = {**doc["metadata"]["config"], f"user.w{i}": str(r)}
                body = {"config": config, "description": doc["metadata"]["description"]}
                code, _, doc = daemon.api_full(
                    "PUT", f"/1.0/networks/{net}", body, {"If-Match": headers["etag"]}
                )
                if code == 200:
                    break
                assert code == 412, doc
                stale += 1
        return stale

    def mtu_changer() -> None:
        # A key the kernel sees, changed while the rest is written.
        for r in range(rounds):
            code, _, doc = daemon.api_full(
                "PATCH", f"/1.0/networks/{net}", {"config": {"bridge.mtu": str(1400 + r)}}
            )
            assert code == 200, doc

    began = time.monotonic()
    work: list[Callable[[], Any]] = [lambda i=i: patcher(i) for i in range(writers)]  # type: ignore[misc]
    work += [lambda i=i: putter(i) for i in range(writers)]  # type: ignore[misc]
    work.append(mtu_changer)
    stale = sum(x for x in run_all(work) if isinstance(x, int))
    print(f"\n{len(work)} writers x {rounds} rounds on one network: {time.monotonic() - began:.1f} s, "
          f"{stale} stale PUTs retried")  # fmt: skip

    config = daemon.api("GET", f"/1.0/networks/{net}")[1]["metadata"]["config"]
    for i in range(writers):
        assert config.get(f"user.p{i}") == str(rounds - 1), (i, config)
        assert config.get(f"user.w{i}") == str(rounds - 1), (i, config)
    assert config["bridge.mtu"] == str(1400 + rounds - 1)
    assert daemon.ns.link(net)["mtu"] == 1400 + rounds - 1  # type: ignore[index]
    assert config["ipv4.address"] == "10.250.61.1/24"


def test_concurrent_device_adds_through_the_cli_all_stay(daemon: Daemon, prefix: str) -> None:
    # Issue 9's lost update: ten `config device add` at once on one instance printed success and
    # left four devices. Each add reads, then writes with If-Match; a stale one must fail, not win.
    lan = f"{prefix}lan"
    daemon.ns.add_bridge(lan)
    daemon.cli("init", "busybox", "c1", "--no-profiles")
    daemon.cli("start", "c1")

    def add(i: int) -> tuple[int, str]:
        r = daemon.cli(
            "config", "device", "add", "c1", f"d{i}", "nic", "nictype=bridged", f"parent={lan}", f"name=e{i}",
            check=False,
        )  # fmt: skip
        return r.returncode, r.stderr

    results = run_all([lambda i=i: add(i) for i in range(10)])  # type: ignore[misc]
    added = {f"d{i}" for i, (code, _) in enumerate(results) if code == 0}
    refused = [err for code, err in results if code != 0]
    # A refused add says why; every add that said success is there, in the API and in the kernel.
    assert all(err.startswith("Error: ") for err in refused), refused
    meta = instance(daemon, "c1")
    assert set(meta["devices"]) == added, (sorted(meta["devices"]), sorted(added), refused)
    inside = {link["ifname"] for link in links_in(init_pid(daemon, "c1"))}
    assert inside == {"lo"} | {f"e{d[1:]}" for d in added}
    ports = bridge_ports(daemon)
    hosts = {meta["config"][f"volatile.{d}.host_name"] for d in added}
    assert {h for h, b in ports.items() if b == lan} == hosts
    print(f"\n10 concurrent device adds: {len(added)} added, {len(refused)} refused: {refused[:1]}")
    daemon.cli("stop", "-f", "c1")
