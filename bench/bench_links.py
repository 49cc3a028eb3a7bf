"""Per-NIC cost of host/links.py, and the alternatives it was chosen over.

    .venv/bin/python bench/bench_links.py [-n 500]

Everything runs in two throw-away namespaces: "daemon" (the bench re-runs itself inside
it with `ip netns exec`) and "container" (where veth peers are born). Both are deleted
at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

INNER = "PINCUS_BENCH_INNER"


def timed(label: str, n: int, op: Callable[[int], object]) -> None:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        op(i)
        samples.append(time.perf_counter() - start)
    ms = sorted(s * 1000 for s in samples)
    print(
        f"{label:<48} n={n:<4} median {statistics.median(ms):7.3f} ms"
        f"   p90 {ms[int(len(ms) * 0.9) - 1]:7.3f}   max {ms[-1]:7.3f}   total {sum(ms):8.1f} ms"
    )


def inner(n: int, container: str) -> None:
    from pincus.host import addresses, links, netlink

    ns = f"/run/netns/{container}"
    timed(
        "create_veth_into_netns (peer born inside)",
        n,
        lambda i: links.create_veth_into_netns(f"bh{i}", f"p{i}", ns),
    )
    timed("get_link (daemon netns)", n, lambda i: links.get_link(f"bh{i}"))
    timed("get_link (container netns)", n, lambda i: links.get_link(f"p{i}", ns))
    timed("set_up (daemon netns)", n, lambda i: links.set_up(f"bh{i}"))
    timed("set_up (container netns)", n, lambda i: links.set_up(f"p{i}", ns))
    timed("rename_link (container netns)", n, lambda i: links.rename_link(f"p{i}", f"e{i}", ns))
    timed(
        "add_address (container netns)",
        n,
        lambda i: addresses.add_address(f"e{i}", f"10.250.{i // 250}.{i % 250 + 1}/16", ns),
    )
    start = time.perf_counter()
    count = len(links.list_links(ns))
    print(
        f"{'list_links (container netns)':<48} {count} links in {(time.perf_counter() - start) * 1000:.1f} ms"
    )
    timed("delete_link (host end; kernel RCU wait)", n, lambda i: links.delete_link(f"bh{i}"))

    def create_then_move(i: int) -> None:
        links.create_veth(f"mh{i}", f"mp{i}")
        links.move_link_to_netns(f"mp{i}", ns)

    m = max(10, n // 10)
    timed("create_veth + move_link_to_netns (old way)", m, create_then_move)
    for i in range(m):
        links.delete_link(f"mh{i}")

    # The ways to get a netlink socket inside another namespace.
    fd = os.open(ns, os.O_RDONLY)
    timed("socket in netns via netlink's helper thread", n, lambda i: netlink._netns_sockets.open(fd).close())

    def thread_per_call(_: int) -> None:
        out: list[socket.socket] = []

        def run() -> None:
            netlink.setns(fd)
            out.append(netlink.new_socket())

        t = threading.Thread(target=run)
        t.start()
        t.join()
        out[0].close()

    timed("socket in netns via a new thread per call", n, thread_per_call)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)

    def in_caller(_: int) -> None:
        netlink.setns(fd)
        try:
            s = netlink.new_socket()
        finally:
            netlink.setns(home)
        s.close()

    timed("socket in netns via setns in the caller", n, in_caller)
    try:
        from pyroute2 import IPRoute

        def pyroute2_netns(_: int) -> None:
            IPRoute(netns=ns, flags=0, groups=0).close()

        timed("pyroute2 IPRoute(netns=...) (forks a child)", min(n, 30), pyroute2_netns)
        ipr = IPRoute(groups=0)

        def pyroute2_veth(i: int) -> None:
            ipr.link("add", ifname=f"rh{i}", kind="veth", peer={"ifname": f"rp{i}", "net_ns_fd": fd})

        timed("pyroute2 IPRoute.link('add', veth, peer in netns)", min(n, 100), pyroute2_veth)
        timed("pyroute2 IPRoute.link('get')", min(n, 100), lambda i: ipr.link("get", ifname=f"rh{i}"))
        ipr.close()
    finally:
        os.close(fd)
        os.close(home)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=500)
    args = parser.parse_args()
    if os.environ.get(INNER):
        inner(args.n, os.environ[INNER])
        return
    tag = "pb" + secrets.token_hex(2)
    daemon, container = f"{tag}d", f"{tag}c"
    try:
        for name in (daemon, container):
            subprocess.run(["ip", "netns", "add", name], check=True)
        argv = ["ip", "netns", "exec", daemon, sys.executable, __file__, "-n", str(args.n)]
        subprocess.run(argv, check=True, env={**os.environ, INNER: container})
    finally:
        for name in (daemon, container):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


if __name__ == "__main__":
    main()
