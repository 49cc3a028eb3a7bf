#!/usr/bin/env python3
"""dqlite against etcd as pincus's cluster database: three members of each on 127.0.0.1 (free
ports, a throw-away directory), each member its own process. Measures (a) write latency: one
transaction inserting an instance with 5 config rows (dqlite: pincus's own schema and
db/instances.py through DqliteStore; etcd: one txn putting the instance key and 5 config keys if
absent), (b) read latency of that instance, (c) fail-over: SIGKILL the leader, time until a write
succeeds through a survivor, (d) code and dependency size. Everything is killed and removed on exit,
failure included.

    bench_clusterdb.py [--short] [-n WRITES] [--failovers N] [--dqlite-latency-ms MS]
    bench_clusterdb.py --commit-breakdown
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pincus.db import dqlite_client, instances  # noqa: E402
from pincus.db.dqlite_store import DqliteStore  # noqa: E402

# Election timeouts matched to etcd's default (heartbeat 100 ms, election 1000 ms): dqlite's
# "network latency" L sets heartbeat 1.5 L and election 15 L. Its own default is 500/3000 ms.
DQLITE_LATENCY_MS = 67


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class Procs:
    """Every process this run started, killed (and waited for) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"member exited early:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"member did not listen on {port} within {timeout} s")


# ---------------------------------------------------------------------------------------------
# dqlite


def dqlite_member(node_id: int, address: str, data_dir: str, latency_ms: int) -> None:
    """One member: a dqlite node in this process until killed."""
    from pincus.host.dqlite_node import DqliteNode

    node = DqliteNode(node_id, address, Path(data_dir), network_latency_ms=latency_ms or None)
    signal.signal(signal.SIGTERM, lambda *_: (node.stop(), os._exit(0)))
    print("ready", flush=True)
    while True:
        signal.pause()


class DqliteCluster:
    name = "dqlite"

    def __init__(self, root: Path, procs: Procs, latency_ms: int) -> None:
        self.root, self.procs = root, procs
        ports = free_ports(3)
        self.addresses = [f"127.0.0.1:{p}" for p in ports]
        self.members: dict[str, subprocess.Popen[bytes]] = {}
        for i, (addr, port) in enumerate(zip(self.addresses, ports, strict=True), start=1):
            log = root / f"dqlite{i}.log"
            p = procs.start(
                [sys.executable, __file__, "--dqlite-member", str(i), addr, str(root / f"dqlite{i}"),
                 str(latency_ms)], log,
            )  # fmt: skip
            wait_port(port, p, log)
            self.members[addr] = p
        leader = dqlite_client.connect_leader(self.addresses[:1], None)
        for i, addr in enumerate(self.addresses[1:], start=2):
            leader.add(i, addr, dqlite_client.VOTER)
        leader.close()
        self.store = DqliteStore(self.addresses)

    def write(self, i: int) -> None:
        instances.create(self.store, instances.InstanceRecord(
            name=f"c{i}", type="container",
            config={f"limits.key{k}": f"value-{i}-{k}" for k in range(5)},
        ))  # fmt: skip

    def read(self, i: int) -> None:
        rec = instances.get(self.store, f"c{i}")
        assert rec is not None and len(rec.config) == 5, rec

    def leader(self) -> str:
        conn = dqlite_client.connect_leader(self.addresses, None)
        addr = conn.address
        conn.close()
        return addr

    def survivor_store(self, survivors: list[str]) -> Callable[[int], None]:
        self.store.close()
        self.store.addresses = survivors
        self.store.timeout = 0.5
        return self.write

    def rss(self) -> float:
        return sum(rss_mb(p.pid) for p in self.members.values() if p.poll() is None)


# ---------------------------------------------------------------------------------------------
# etcd


class EtcdCluster:
    """The etcd mapping of the same write: instance and config rows become keys."""

    name = "etcd"

    def __init__(self, root: Path, procs: Procs) -> None:
        import pyetcd

        self.pyetcd = pyetcd
        ports = free_ports(6)
        peers = [f"http://127.0.0.1:{p}" for p in ports[:3]]
        self.client_ports = ports[3:]
        initial = ",".join(f"m{i}={u}" for i, u in enumerate(peers, start=1))
        self.members: dict[str, subprocess.Popen[bytes]] = {}
        for i in range(3):
            url = f"http://127.0.0.1:{self.client_ports[i]}"
            log = root / f"etcd{i + 1}.log"
            p = procs.start(
                ["etcd", "--name", f"m{i + 1}", "--data-dir", str(root / f"etcd{i + 1}"),
                 "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
                 "--listen-client-urls", url, "--advertise-client-urls", url,
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", root.name, "--log-level", "warn"], log,
            )  # fmt: skip
            self.members[url] = p
        for i, url in enumerate(self.members):
            wait_port(self.client_ports[i], self.members[url], root / f"etcd{i + 1}.log")
        self.client = self._client(list(self.members))
        deadline = time.monotonic() + 15
        while True:
            try:
                self.client.put("/pincus/ready", "1")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _client(self, urls: list[str], timeout: float = 5) -> Any:
        eps = [self.pyetcd.Endpoint("127.0.0.1", int(u.rsplit(":", 1)[1]), secure=False) for u in urls]
        return self.pyetcd.MultiEndpointEtcd3Client(eps, timeout=timeout, failover=True)

    def write(self, i: int) -> None:
        key = f"/pincus/instances/c{i}"
        body = json.dumps({"type": "container", "description": "", "created_at": time.time()})
        puts = [self.client.transactions.put(key, body)]
        tx = self.client.transactions
        puts += [tx.put(f"{key}/config/limits.key{k}", f"value-{i}-{k}") for k in range(5)]
        ok, _ = self.client.transaction(
            compare=[self.client.transactions.version(key) == 0], success=puts, failure=[],
        )  # fmt: skip
        if not ok:
            raise RuntimeError(f"instance c{i} exists")

    def read(self, i: int) -> None:
        # One round trip, as dqlite's: the instance key and its config range in one txn.
        key = f"/pincus/instances/c{i}"
        end = self.pyetcd.utils.prefix_range_end(f"{key}/".encode())
        ops = [self.pyetcd.transactions.Get(key), self.pyetcd.transactions.Get(f"{key}/", range_end=end)]
        _, (head, config) = self.client.transaction(compare=[], success=ops, failure=[])
        assert len(head) == 1 and len(config) == 5, (head, config)

    def leader(self) -> str:
        status = self.client.status()
        return str(status.leader.client_urls[0])

    def survivor_store(self, survivors: list[str]) -> Callable[[int], None]:
        """Each try is a new client on the next survivor: pyetcd's clients shelve an endpoint that
        failed once for 5 minutes (``time_retry``), even a single-endpoint client."""
        self.client.close()
        ports = [int(u.rsplit(":", 1)[1]) for u in survivors]
        tries = [0]

        def write(i: int) -> None:
            self.client.close()
            self.client = self.pyetcd.client("127.0.0.1", ports[tries[0] % len(ports)], timeout=0.5)
            tries[0] += 1
            self.write(i)

        return write

    def rss(self) -> float:
        return sum(rss_mb(p.pid) for p in self.members.values() if p.poll() is None)


# ---------------------------------------------------------------------------------------------


def measure(cluster: DqliteCluster | EtcdCluster, n: int, base: int) -> dict[str, float]:
    writes, reads = [], []
    for i in range(base, base + n):
        t = time.perf_counter()
        cluster.write(i)
        writes.append((time.perf_counter() - t) * 1000)
    for i in range(base, base + n):
        t = time.perf_counter()
        cluster.read(i)
        reads.append((time.perf_counter() - t) * 1000)
    return {
        "write_median_ms": statistics.median(writes), "write_p99_ms": pct(writes, 99),
        "read_median_ms": statistics.median(reads), "read_p99_ms": pct(reads, 99),
        "rss_mb": cluster.rss(),
    }  # fmt: skip


def failover(cluster: DqliteCluster | EtcdCluster, base: int) -> float:
    """SIGKILL the leader; seconds until a write through the survivors succeeds."""
    leader = cluster.leader()
    proc = cluster.members[leader]
    survivors = [a for a in cluster.members if a != leader]
    write = cluster.survivor_store(survivors)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    while True:
        try:
            write(base)
            return time.monotonic() - t0
        except Exception:
            if time.monotonic() - t0 > 30:
                raise
            time.sleep(0.01)


def commit_breakdown(n: int) -> None:
    """Where a dqlite write's time goes: the steps of the same transaction on the leader."""
    root = Path(tempfile.mkdtemp(prefix="pincus-clusterdb-"))
    procs = Procs()
    try:
        cluster = DqliteCluster(root, procs, DQLITE_LATENCY_MS)
        cluster.store.close()
        conn = dqlite_client.connect_leader(cluster.addresses, cluster.store.database)
        steps: dict[str, list[float]] = {"BEGIN": [], "INSERT (each)": [], "COMMIT": [], "SELECT 1": []}
        for i in range(n):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            t1 = time.perf_counter()
            iid, _ = conn.execute(
                "INSERT INTO instances (name, type, description, created_at) VALUES (?, ?, ?, ?)",
                [f"b{i}", "container", "", "2026-01-01T00:00:00Z"],
            )
            for k in range(5):
                conn.execute(
                    "INSERT INTO instances_config (instance_id, key, value) VALUES (?, ?, ?)",
                    [iid, f"k{k}", "v"],
                )
            t2 = time.perf_counter()
            conn.execute("COMMIT")
            t3 = time.perf_counter()
            conn.query("SELECT 1")
            t4 = time.perf_counter()
            steps["BEGIN"].append(t1 - t0)
            steps["INSERT (each)"].append((t2 - t1) / 6)
            steps["COMMIT"].append(t3 - t2)
            steps["SELECT 1"].append(t4 - t3)
        conn.close()
        for name, values in steps.items():
            ms = [v * 1000 for v in values]
            med, p90, p99 = statistics.median(ms), pct(ms, 90), pct(ms, 99)
            print(f"{name:14} median {med:6.2f} ms  p90 {p90:6.2f}  p99 {p99:6.2f}")
    finally:
        procs.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def code_lines(paths: list[Path]) -> int:
    n = 0
    for path in paths:
        for line in path.read_text().splitlines():
            s = line.strip()
            if s and not s.startswith("#"):
                n += 1
    return n


def deb_size_kb(packages: list[str]) -> int:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Installed-Size}\n", *packages],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return sum(int(x) for x in out.split())


def pip_size_kb(modules: list[str]) -> int:
    import importlib.util

    total = 0
    for m in modules:
        spec = importlib.util.find_spec(m)
        assert spec is not None and spec.submodule_search_locations, m
        for loc in spec.submodule_search_locations:
            for dirpath, _, files in os.walk(loc):
                total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total // 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_true", help="30 writes, 1 fail-over per engine")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--failovers", type=int, default=3)
    ap.add_argument("--dqlite-latency-ms", type=int, default=DQLITE_LATENCY_MS,
                    help="0: dqlite's own default timeouts")  # fmt: skip
    ap.add_argument("--commit-breakdown", action="store_true", help="dqlite only: time each step of a write")
    ap.add_argument("--dqlite-member", nargs=4, metavar=("ID", "ADDR", "DIR", "LATENCY_MS"))
    args = ap.parse_args()
    if args.dqlite_member:
        node_id, addr, data_dir, latency = args.dqlite_member
        dqlite_member(int(node_id), addr, data_dir, int(latency))
        return 0
    if args.short:
        args.n, args.failovers = 30, 1
    if args.commit_breakdown:
        print(f"loadavg before: {Path('/proc/loadavg').read_text().strip()}")
        commit_breakdown(300)
        print(f"loadavg after: {Path('/proc/loadavg').read_text().strip()}")
        return 0

    print(f"loadavg before: {Path('/proc/loadavg').read_text().strip()}")
    results: dict[str, dict[str, Any]] = {}
    for engine in ("dqlite", "etcd"):
        fails: list[float] = []
        res: dict[str, Any] = {}
        for run in range(args.failovers):
            root = Path(tempfile.mkdtemp(prefix="pincus-clusterdb-"))
            procs = Procs()
            try:
                cluster: DqliteCluster | EtcdCluster = (
                    DqliteCluster(root, procs, args.dqlite_latency_ms) if engine == "dqlite"
                    else EtcdCluster(root, procs)
                )  # fmt: skip
                t = time.monotonic()
                if run == 0:
                    res = measure(cluster, args.n, 0)
                fails.append(failover(cluster, 10**6))
                took = time.monotonic() - t
                print(f"{engine} run {run}: fail-over {fails[-1]:.2f} s, run {took:.1f} s", flush=True)
            finally:
                procs.kill_all()
                shutil.rmtree(root, ignore_errors=True)
        res["failover_median_s"] = statistics.median(fails)
        res["failover_max_s"] = max(fails)
        results[engine] = res

    src = REPO / "src" / "pincus"
    results["dqlite"]["adapter_lines"] = code_lines(
        [src / "host" / "dqlite_node.py", src / "db" / "dqlite_client.py", src / "db" / "dqlite_store.py"]
    )
    results["dqlite"]["deps_kb"] = deb_size_kb(["libdqlite0", "libraft2", "libuv1"])
    # etcd keeps no SQL: every repository function of db/ must be rewritten as key operations.
    results["etcd"]["adapter_lines"] = code_lines(
        [p for p in (src / "db").glob("*.py") if not p.name.startswith("dqlite_")]
    )
    etcd_python = pip_size_kb(["pyetcd", "grpc", "google.protobuf"])
    results["etcd"]["deps_kb"] = deb_size_kb(["etcd-server"]) + etcd_python

    rows = [
        ("write median ms", "write_median_ms", "{:.2f}"),
        ("write p99 ms", "write_p99_ms", "{:.2f}"),
        ("read median ms", "read_median_ms", "{:.2f}"),
        ("read p99 ms", "read_p99_ms", "{:.2f}"),
        ("fail-over median s", "failover_median_s", "{:.2f}"),
        ("fail-over max s", "failover_max_s", "{:.2f}"),
        ("RSS of 3 members MB", "rss_mb", "{:.0f}"),
        ("code lines (see README)", "adapter_lines", "{}"),
        ("dependencies kB", "deps_kb", "{}"),
    ]  # fmt: skip
    print(f"writes={args.n} fail-overs={args.failovers} dqlite latency setting={args.dqlite_latency_ms} ms")
    print(f"{'':24}{'dqlite':>10}{'etcd':>10}{'etcd/dqlite':>13}")
    for label, key, fmt in rows:
        d, e = results["dqlite"][key], results["etcd"][key]
        ratio = f"{e / d:.2f}x" if d else "-"
        print(f"{label:24}{fmt.format(d):>10}{fmt.format(e):>10}{ratio:>13}")
    print(f"loadavg after: {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
