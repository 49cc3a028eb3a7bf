"""The kernel's own cost of the k-th NIC of one container: is NIC #500 dearer than NIC #1 below pincus?

    .venv/bin/python bench/bench_nic_floor.py [-n 10] [--nics 500] [--no-ipv6-inside]

The same netlink requests pincusd makes for a bridged NIC of a running container, through
host/links.py and nothing else (no daemon, no database): a veth whose peer is born in the
container's network namespace, its host end enslaved to a bridge and up, its inside end up; then
its deletion. Timed n times with the container holding k-1 such NICs already, for k = 1, 50 and
--nics; what grows here grows for any implementation (it is the floor under bench_lxd.py's
section 4). The host end gets IPv6 disabled, as pincus does; the container's side keeps it
unless --no-ipv6-inside.

Runs in a throw-away mount + network namespace of its own (unshare), with a second network
namespace for the "container"; both vanish with the process, so nothing is left on the host.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def inner(n: int, nics: int, ipv6_inside: bool) -> None:
    sys.path.insert(0, str(REPO / "src"))
    from pincus.host import links, sysctl

    subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
    # The "container"'s handle lives on a tmpfs of this mount namespace: no file left on the host.
    Path("/run/netns").mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "flnetns", "/run/netns"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "link", "add", "flbr", "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", "flbr", "up"], check=True)
    subprocess.run(["ip", "netns", "add", "flc"], check=True)
    netns = "/run/netns/flc"
    if not ipv6_inside:
        sysctl_argv = ["ip", "netns", "exec", "flc", "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]
        subprocess.run(sysctl_argv, check=True)

    steps: dict[str, list[float]] = {}

    def add(host: str, inside: str) -> None:
        work: list[tuple[str, Callable[[], None]]] = [
            ("veth", lambda: links.create_veth_into_netns(host, inside, netns)),
            ("no ipv6 on host end", lambda: sysctl.set_ipv6_disabled(host)),
            ("master", lambda: links.set_master(host, "flbr")),
            ("up", lambda: links.set_up(host)),
            ("up inside", lambda: links.set_up(inside, netns=netns)),
        ]
        for label, fn in work:
            t = time.perf_counter()
            fn()
            steps.setdefault(label, []).append((time.perf_counter() - t) * 1000)

    have = 0
    for k in sorted({1, min(50, nics), nics}):
        while have < k - 1:
            have += 1
            add(f"flh{have}", f"f{have}")
        adds: list[float] = []
        removes: list[float] = []
        steps.clear()
        for _ in range(n + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            add("flprobe", "probe")
            t1 = time.perf_counter()
            links.delete_link("flprobe")
            t2 = time.perf_counter()
            adds.append((t1 - t0) * 1000)
            removes.append((t2 - t1) * 1000)
        parts = ", ".join(f"{label} {statistics.median(t[1:]):.2f}" for label, t in steps.items())
        add_ms, remove_ms = statistics.median(adds[1:]), statistics.median(removes[1:])
        print(
            f"NIC #{k}: add {add_ms:.2f} ms ({parts}), remove {remove_ms:.2f} ms (median of {n})", flush=True
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10, help="samples per k (default 10)")
    ap.add_argument("--nics", type=int, default=500, help="the last k (default 500)")
    ap.add_argument(
        "--no-ipv6-inside",
        action="store_true",
        help="IPv6 off in the container's namespace (shows what of the growth is IPv6's)",
    )
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.n < 1 or args.nics < 1:
        ap.error("-n and --nics must be at least 1")
    if args.inner:
        inner(args.n, args.nics, not args.no_ipv6_inside)
        return 0
    print(f"/proc/loadavg: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    argv = [sys.executable, __file__, "--inner", "-n", str(args.n), "--nics", str(args.nics)]
    argv += ["--no-ipv6-inside"] if args.no_ipv6_inside else []
    rc = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private", *argv], env=os.environ
    ).returncode
    print(f"/proc/loadavg: {Path('/proc/loadavg').read_text().strip()}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
