"""Many instances on one pincusd: memory, threads, `pincus list`, and starts all at once.

    .venv/bin/python bench/bench_scale.py [-n 100] [--nics 10]   # 100 containers x 10 NICs
    .venv/bin/python bench/bench_scale.py --short                 # 5 containers x 2 NICs, seconds

One pincusd on its own PINCUS_DIR, in a throw-away network namespace, with one managed bridge
(10.250.0.0/16, DHCPv4 on, so dnsmasq runs and gets a hosts entry per NIC). Then:
- N containers made through the API, each with K NICs on that bridge (`network=<bridge>`);
- all N started through the API at once (one thread per request, each waiting on its
  operation): wall time, throughput, per-start latency median/p99, errors; the kernel's view
  checked afterwards (N*K ports on the bridge, N init processes);
- pincusd's memory and threads with everything running (/proc/<pid>/status: VmRSS, VmHWM,
  Threads) against the budget, and its CPU while idle (the crash monitor walks every instance);
- `pincus list` (which asks for recursion=2: every instance's state) against a bare
  `python3 -c pass` in the same run, interleaved, and the API request alone;
- all N stopped at once, the same figures; then deleted.

Cleanup runs whatever happens (failure, Ctrl-C, SIGTERM): containers deleted through the
daemon, pincusd stopped, anything left of ours killed, the namespace and tmp dir deleted.
`--fail-after STEP` raises on purpose after a step, to show that.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_device_add import Pincus, discard, run_benchmark
from lxdlib import load

RSS_BUDGET_MB = 100  # issue 11: 1,000 NICs on 100 running containers
LIST_AIM = 2.0  # `pincus list` / python3 -c pass
STEPS = ("create", "start", "measure", "stop")


class DeliberateFailure(RuntimeError):
    """--fail-after: a failure midway, to check that cleanup leaves nothing behind."""


def pct(samples: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of samples in seconds, in ms."""
    ms = sorted(s * 1000 for s in samples)
    return ms[max(0, -(-len(ms) * int(p) // 100) - 1)]


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_names(pid: int) -> dict[str, int]:
    names: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            names[name] = names.get(name, 0) + 1
    return names


def all_at_once(p: Pincus, names: list[str], action: str) -> tuple[float, list[float], list[str]]:
    """PUT state ACTION for every name at once; (wall seconds, latencies, errors)."""
    barrier = threading.Barrier(len(names))

    def one(name: str) -> tuple[float, str | None]:
        barrier.wait()
        t = time.perf_counter()
        try:
            body: dict[str, Any] = {"action": action, "timeout": 10}
            if action == "stop":
                body["force"] = False
            p.api("PUT", f"/1.0/instances/{name}/state", body)
        except Exception as e:  # every failure is counted and shown, none stops the others
            return time.perf_counter() - t, f"{name}: {e}"
        return time.perf_counter() - t, None

    t = time.perf_counter()
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(one, names))
    wall = time.perf_counter() - t
    return wall, [r[0] for r in results], [r[1] for r in results if r[1]]


def report_burst(what: str, n: int, wall: float, lat: list[float], errors: list[str]) -> None:
    print(f"{n} {what} at once through the API: {wall:.2f} s, {n / wall:.1f}/s; per request median "
          f"{statistics.median(lat) * 1000:.0f} ms, p99 {pct(lat, 99):.0f} ms, max {max(lat) * 1000:.0f} ms; "
          f"errors: {len(errors)}")  # fmt: skip
    for e in errors[:10]:
        print(f"  error: {e}")


def ports_on(ns: str, bridge: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show", "master", bridge],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return len(out.splitlines())


def time_list(p: Pincus, rounds: int) -> dict[str, list[float]]:
    """`pincus list`, bare python, and the request it makes, interleaved."""
    out: dict[str, list[float]] = {"pincus list": [], "python3 -c pass": [], "API GET recursion=2": []}
    for _ in range(rounds):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out["python3 -c pass"].append(time.perf_counter() - t)
        t = time.perf_counter()
        p.cli("list")
        out["pincus list"].append(time.perf_counter() - t)
        t = time.perf_counter()
        p.api("GET", "/1.0/instances?recursion=2")
        out["API GET recursion=2"].append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100, help="containers (default 100)")
    ap.add_argument("--nics", type=int, default=10, help="NICs per container (default 10)")
    ap.add_argument("--short", action="store_true", help="5 containers x 2 NICs (seconds)")
    ap.add_argument("--fail-after", choices=STEPS, help="fail on purpose after this step (tests cleanup)")
    args = ap.parse_args()
    n, k = (5, 2) if args.short else (args.n, args.nics)
    if n < 1 or k < 0:
        ap.error("-n must be at least 1 and --nics at least 0")

    tag = "s" + secrets.token_hex(2)
    ns, br = f"{tag}ns", f"{tag}br"
    work = Path(tempfile.mkdtemp(prefix=f"pincus-bench-{tag}-"))
    work.chmod(0o711)
    print(f"tag {tag}; load average at start: {load()}", flush=True)
    p = Pincus(ns, work)
    names = [f"{tag}c{i}" for i in range(n)]

    def step_done(step: str) -> None:
        if args.fail_after == step:
            raise DeliberateFailure(f"--fail-after {step}")

    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        p.start()
        assert p.proc is not None
        pid = p.proc.pid
        p.cli("network", "create", br, "ipv4.address=10.250.0.1/16", "ipv4.nat=false", "ipv6.address=none")
        rss_empty = int(proc_status(pid)["VmRSS"].split()[0]) / 1024
        source = p.image_source()  # imported untimed: the creates below unpack the cached image

        t = time.perf_counter()
        for name in names:
            devices = {f"eth{j}": {"type": "nic", "network": br, "name": f"eth{j}"} for j in range(k)}
            p.api("POST", "/1.0/instances", {"name": name, "devices": devices, "source": source})
        print(f"created {n} containers with {k} NICs each on {br} in {time.perf_counter() - t:.1f} s")
        step_done("create")

        wall, lat, errors = all_at_once(p, names, "start")
        report_burst("starts", n, wall, lat, errors)
        running = sum(
            1 for name in names if p.api("GET", f"/1.0/instances/{name}/state")["status"] == "Running"
        )
        ports = ports_on(ns, br)
        print(f"kernel: {ports} ports on {br} (expected {n * k}); {running}/{n} running")
        step_done("start")

        time.sleep(1)  # let the start burst's garbage go
        st = proc_status(pid)
        rss = int(st["VmRSS"].split()[0]) / 1024
        hwm = int(st["VmHWM"].split()[0]) / 1024
        threads = thread_names(pid)
        c0 = cpu_seconds(pid)
        time.sleep(5)
        idle = (cpu_seconds(pid) - c0) / 5 * 100
        print(f"pincusd pid {pid}: VmRSS {rss:.1f} MB with {n} running containers x {k} NICs "
              f"(budget {RSS_BUDGET_MB} MB: {'met' if rss <= RSS_BUDGET_MB else 'NOT met'}); "
              f"{rss_empty:.1f} MB before any; peak VmHWM {hwm:.1f} MB")  # fmt: skip
        named = ", ".join(f"{c} {t}" for t, c in sorted(threads.items()))
        print(f"pincusd threads: {st['Threads']} ({named}); CPU while idle: {idle:.1f} % of a core")

        lists = time_list(p, 3 if args.short else 15)
        floor = statistics.median(lists["python3 -c pass"])
        print(f"\n{'with ' + str(n) + ' instances (ms)':<32}{'median':>9}{'p90':>9}{'/ python':>10}")
        for label, samples in lists.items():
            med = statistics.median(samples)
            print(f"{label:<32}{med * 1000:9.1f}{pct(samples, 90):9.1f}{med / floor:9.2f}x")
        ratio = statistics.median(lists["pincus list"]) / floor
        print(f"pincus list / python3 -c pass: {ratio:.2f}x (aim at most {LIST_AIM}x: "
              f"{'met' if ratio <= LIST_AIM else 'NOT met'})\n")  # fmt: skip
        step_done("measure")

        wall, lat, stop_errors = all_at_once(p, names, "stop")
        report_burst("stops", n, wall, lat, stop_errors)
        left = ports_on(ns, br)
        print(f"kernel: {left} ports left on {br}")
        step_done("stop")
        for name in names:
            p.api("DELETE", f"/1.0/instances/{name}")
        print(f"load average at end: {load()}")
        return 1 if errors or stop_errors or ports != n * k or left else 0
    finally:
        sys.stdout.flush()
        if p.proc is not None and p.proc.poll() is None:
            with contextlib.suppress(Exception):
                present = {i["name"] for i in p.api("GET", "/1.0/instances?recursion=1")}
                for name in names:
                    if name in present:
                        p.cli("delete", name, "-f", check=False)
                p.cli("network", "delete", br, check=False)
        discard(p, ns, work)


if __name__ == "__main__":
    run_benchmark(main, RuntimeError, subprocess.SubprocessError)
