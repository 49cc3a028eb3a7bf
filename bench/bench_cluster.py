"""A three-member pincus cluster with an OVN network across it, against real pincusd, dqlite and
OVN/OVS daemons (userspace datapath here), each member in its own network namespace:

- `network create` of an OVN network on three members (the first starts the central and every
  chassis from nothing; the second finds them running);
- `launch` to first ping of a container on the OVN network: a peer on the same member, and a peer
  on another member (over the geneve tunnel);
- the floor, measured in the same run: `launch` to first ping on the bridged path (a physical
  network on the member's own Linux bridge, pinging the uplink gateway), as on a single host;
- fail-over: SIGKILL the member that is the database leader; seconds until a write (a profile
  create) succeeds through a survivor; when that was m1, its embedded OVN central is killed too,
  and the run says whether containers on m2 and m3 still ping and whether a new one can launch.

    .venv/bin/python bench/bench_cluster.py [-n 3] [--short]

Addresses come from 10.250.0.0/16 only, inside the run's own namespaces; everything is deleted
whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)

from tests.integration.helpers import ping  # noqa: E402
from tests.integration.test_ovn_cluster import OvnCluster  # noqa: E402
from tests.pincus_testlib import Daemon, cleanup_dir, kill_leftovers, unique_prefix  # noqa: E402

PING_TIMEOUT = 30.0


def _timed(fn: Callable[[], object]) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def _launch_to_ping(d: Daemon, member: str, name: str, network: str, address: str, peer: str) -> float:
    """`launch` on MEMBER (D, which runs its exec), the address set by hand (no DHCP wait in the
    figure), then pings until PEER answers."""
    t = time.monotonic()
    d.cli("launch", "busybox", name, "--target", member, "-n", network)
    d.cli("exec", name, "--", "busybox", "ip", "addr", "add", address, "dev", "eth0")
    while not ping(d, name, peer):
        if time.monotonic() - t > PING_TIMEOUT:
            raise RuntimeError(f"{name} never reached {peer}")
    return time.monotonic() - t


def _leader(d: Daemon) -> str:
    members = json.loads(d.cli("cluster", "list", "-f", "json").stdout)
    return next(m["server_name"] for m in members if "database-leader" in m["roles"])


def _failover(c: OvnCluster) -> tuple[str, float]:
    """SIGKILL the leader's pincusd; seconds until a profile create through a survivor succeeds."""
    leader = _leader(c.members[0])
    index = int(leader[1:]) - 1
    survivor = c.members[(index + 1) % 3]
    killed = c.members[index]
    assert killed.proc is not None
    t = time.monotonic()
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait()
    while True:
        r = survivor.cli("profile", "create", "failover", check=False, timeout=30)
        if r.returncode == 0 or "already exists" in r.stderr:  # an answer lost to the change may be applied
            return leader, time.monotonic() - t
        if time.monotonic() - t > 60:
            raise RuntimeError(f"no write succeeded within 60 s: {r.stderr}")
        time.sleep(0.05)


def _central_gone(c: OvnCluster, d2: Daemon, across: str) -> None:
    """m1 (pincusd already SIGKILLed) loses its embedded central too: what still works on m2/m3."""
    for pid_file in (c.members[0].dir / "ovn" / "central").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
    time.sleep(1)
    still = "yes" if ping(d2, "c2x0", across) else "no"
    print(f"central gone: a running container on m2 still pings one on m3 over the tunnel: {still}")
    r = d2.cli("launch", "busybox", "late", "--target", "m2", "-n", "o1", check=False, timeout=120)
    outcome = "refused" if r.returncode else "accepted"
    print(f"central gone: launch of a new container on the OVN network {outcome}: {r.stderr.strip()[-160:]}")


def _stats(label: str, times: list[float], floor: float | None = None) -> float:
    median = statistics.median(times) * 1000
    ratio = f"  {median / floor:4.2f}x floor" if floor else ""
    least = min(times) * 1000
    count = len(times)
    print(f"launch to first ping  {label:15} median {median:5.0f} ms  min {least:5.0f} ms  n={count}{ratio}")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3, help="containers per path")
    parser.add_argument("--short", action="store_true", help="one container per path (a smoke run)")
    args = parser.parse_args()
    n = 1 if args.short else args.n
    c = OvnCluster(unique_prefix())
    try:
        d1, d2, d3 = c.form()
        for i, d in enumerate((d1, d2, d3)):
            d.cli("network", "create", "up", "--type=physical", f"--target=m{i + 1}", f"parent=ul{i}")
        d1.cli(
            "network", "create", "up", "--type=physical", f"ipv4.gateway={c.uplink}.1/24",
            f"ipv4.ovn.ranges={c.uplink}.100-{c.uplink}.109",
        )  # fmt: skip
        create = ("network", "create", "--type=ovn", "network=up", "ipv4.nat=true")
        first = _timed(lambda: d3.cli(*create[:2], "o1", *create[2:], f"ipv4.address={c.inside}.1/24"))
        second = _timed(lambda: d3.cli(*create[:2], "o2", *create[2:], "ipv4.address=10.250.99.1/24"))
        print(f"network create on 3 members  first (central+chassis from nothing) {first * 1000:5.0f} ms"
              f"  second {second * 1000:5.0f} ms")  # fmt: skip
        d1.image()
        for d in c.members:
            d._image_imported = True
        # Peers: one on m2 (same member as the measured containers), one on m3 (across).
        for name, member, last in (("p2", "m2", 2), ("p3", "m3", 3)):
            d = c.members[last - 1]
            d.cli("launch", "busybox", name, "--target", member, "-n", "o1")
            d.cli("exec", name, "--", "busybox", "ip", "addr", "add", f"{c.inside}.{last}/24", "dev", "eth0")
        # Interleaved, so that a slow spell of the machine hits every path alike.
        paths = {
            "bridged floor": ("up", c.uplink, 20, f"{c.uplink}.1"),
            "ovn same member": ("o1", c.inside, 20, f"{c.inside}.2"),
            "ovn across": ("o1", c.inside, 40, f"{c.inside}.3"),
        }
        times: dict[str, list[float]] = {label: [] for label in paths}
        for i in range(n):
            for k, (label, (network, subnet, base, peer)) in enumerate(paths.items()):
                address = f"{subnet}.{base + i}/24"
                times[label].append(_launch_to_ping(d2, "m2", f"c{k}x{i}", network, address, peer))
        floor = _stats("bridged floor", times["bridged floor"])
        _stats("ovn same member", times["ovn same member"], floor)
        _stats("ovn across", times["ovn across"], floor)
        leader, seconds = _failover(c)
        print(f"fail-over (SIGKILL database leader {leader}) to a write through a survivor  {seconds:5.2f} s")
        if leader == "m1":
            _central_gone(c, d2, f"{c.inside}.3")
        else:
            print("central gone: not measured (the database leader was not the central's member m1)")
    finally:
        for d in c.members:
            if d.proc is not None:
                d.stop(signal.SIGKILL)
            kill_leftovers(d.dir)
            d.ns.delete()
            cleanup_dir(d.dir)
        c.switch.delete()


if __name__ == "__main__":
    main()
