"""OVN networks on one member, against a real pincusd and real OVN/OVS daemons (userspace datapath
here): `network create` of the first OVN network (the daemons start from nothing) and of a second;
container start to first ping of a peer on the OVN network, and the same on the bridged path of the
uplink bridge in the same run; the RSS of every OVN/OVS daemon.

    .venv/bin/python bench/bench_ovn.py [-n 5]

pincusd runs in a throw-away network namespace on its own PINCUS_DIR; addresses come from
10.250.0.0/16 only; everything is deleted whatever happens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)

from tests.integration.helpers import ping  # noqa: E402
from tests.pincus_testlib import Daemon, NetNS, cleanup_dir, kill_leftovers, unique_prefix  # noqa: E402


def _timed(fn: object) -> float:
    t = time.monotonic()
    fn()  # type: ignore[operator]
    return time.monotonic() - t


def _start_to_ping(d: Daemon, name: str, network: str, address: str, peer: str) -> float:
    d.cli("init", "busybox", name, "-n", network)
    t = time.monotonic()
    d.cli("start", name)
    d.cli("exec", name, "--", "busybox", "ip", "addr", "add", f"{address}/24", "dev", "eth0")
    while not ping(d, name, peer):
        if time.monotonic() - t > 30:
            raise RuntimeError(f"{name} never reached {peer}")
    return time.monotonic() - t


def _rss_kib(d: Daemon) -> dict[str, int]:
    out = {}
    for pid_file in sorted((d.dir / "ovn").glob("*/*.pid")):
        pid = pid_file.read_text().strip()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out[pid_file.stem] = int(line.split()[1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5, help="containers per path")
    n = parser.parse_args().n
    prefix = unique_prefix()
    ns = NetNS(f"{prefix}ns")
    d = Daemon(ns, Path(tempfile.mkdtemp(prefix=f"pincus-bench-{prefix}-")))
    try:
        d.start()
        lan = f"{prefix}lan"
        ns.add_bridge(lan)
        ns.ip("addr", "add", "10.250.97.1/24", "dev", lan)
        d.cli(
            "network", "create", "up", "--type=physical", f"parent={lan}", "ipv4.gateway=10.250.97.1/24",
            "ipv4.ovn.ranges=10.250.97.100-10.250.97.120",
        )  # fmt: skip
        create = ("network", "create", "--type=ovn", "network=up", "ipv4.nat=true")
        first = _timed(lambda: d.cli(*create[:2], "o1", *create[2:], "ipv4.address=10.250.98.1/24"))
        second = _timed(lambda: d.cli(*create[:2], "o2", *create[2:], "ipv4.address=10.250.99.1/24"))
        first_ms, second_ms = first * 1000, second * 1000
        print(f"network create  first (daemons from nothing) {first_ms:5.0f} ms  second {second_ms:5.0f} ms")
        d.cli("init", "busybox", "peer", "-n", "o1")
        d.cli("start", "peer")
        d.cli("exec", "peer", "--", "busybox", "ip", "addr", "add", "10.250.98.2/24", "dev", "eth0")
        for label, network, subnet, peer in (
            ("ovn", "o1", "10.250.98", "10.250.98.2"),
            ("bridged", "up", "10.250.97", "10.250.97.1"),
        ):
            times = [
                _start_to_ping(d, f"{label[0]}{i}", network, f"{subnet}.{10 + i}", peer) for i in range(n)
            ]
            median, least = statistics.median(times) * 1000, min(times) * 1000
            print(f"start to first ping  {label:8} median {median:5.0f} ms  min {least:5.0f} ms  n={n}")
        rss = _rss_kib(d)
        print("RSS MiB  " + "  ".join(f"{k} {v / 1024:.1f}" for k, v in rss.items()))
    finally:
        if d.proc is not None:
            d.cli("admin", "shutdown", "--timeout", "2", check=False, timeout=60)
        d.stop()
        kill_leftovers(d.dir)
        cleanup_dir(d.dir)
        ns.delete()


if __name__ == "__main__":
    main()
