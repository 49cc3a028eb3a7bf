"""The client's common commands against the interpreter's floor, measured in one run.

    .venv/bin/python bench/bench_client.py [-n 20] [--short]

A real pincusd (own PINCUS_DIR, in a throw-away network namespace) with a managed bridge and a
running container c1 on it. Each round runs, interleaved so that all see the same load:
- the floor: the venv's `python -c pass` and `python -I -S -c pass`;
- every common command through each client entry: `pincus` as installed in the venv (pip's
  wrapper, or the launcher once scripts/setup.sh wrote it) and the launcher that
  scripts/write_launcher.py writes for this checkout (into the bench's tmp dir);
- the requests of `stop` and `start` as raw HTTP (their daemon work is most of them).
Each line: median and p90 over the rounds, and the median's ratio to `python -c pass`.
Cleanup runs whatever happens: c1 deleted, pincusd stopped, namespace and tmp dir removed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_device_add import BIN, REPO, Pincus, kill_leftovers, ms_stats, put_body

PYTHON = str(BIN / "python")  # the venv's, as the commands' own


def commands(br: str) -> list[tuple[str, list[str]]]:
    """(label, argv) of each common command, in the order a round runs them (remove undoes add,
    start undoes stop)."""
    return [
        ("list", ["list"]),
        ("info c1", ["info", "c1"]),
        ("config device add", ["config", "device", "add", "c1", "eth1", "nic", f"network={br}"]),
        ("config device remove", ["config", "device", "remove", "c1", "eth1"]),
        ("network list", ["network", "list"]),
        ("network show", ["network", "show", br]),
        ("stop c1", ["stop", "c1", "--force"]),
        ("start c1", ["start", "c1"]),
        ("exec c1 -- true", ["exec", "c1", "--", "true"]),
    ]


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr}{r.stdout}")
    return elapsed


def run(p: Pincus, entries: dict[str, str], br: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}

    def add(label: str, seconds: float) -> None:
        out.setdefault(label, []).append(seconds)

    for _ in range(n):
        add("python -c pass", timed([PYTHON, "-c", "pass"], p.env))
        add("python -I -S -c pass", timed([PYTHON, "-I", "-S", "-c", "pass"], p.env))
        for entry, exe in entries.items():
            for label, argv in commands(br):
                add(f"{entry}: {label}", timed([exe, *argv], p.env))
        for label, requests in api_requests(p, br):
            t = time.perf_counter()
            requests()
            add(f"API: {label}", time.perf_counter() - t)
    return out


def api_requests(p: Pincus, br: str) -> list[tuple[str, Callable[[], object]]]:
    """The requests each command makes, as raw HTTP: what the daemon and the socket cost of it."""
    inst = "/1.0/instances/c1"

    def device(add: bool) -> None:
        doc = p.api("GET", inst)
        devices = {k: v for k, v in doc["devices"].items() if k != "eth1"}
        if add:
            devices["eth1"] = {"type": "nic", "network": br}
        p.api("PUT", inst, put_body(doc, devices))

    return [
        ("list", lambda: p.api("GET", "/1.0/instances?recursion=2")),
        ("info c1", lambda: (p.api("GET", inst), p.api("GET", f"{inst}/state"))),
        ("config device add", lambda: device(True)),
        ("config device remove", lambda: device(False)),
        ("network list", lambda: p.api("GET", "/1.0/networks?recursion=1")),
        ("network show", lambda: p.api("GET", f"/1.0/networks/{br}")),
        ("stop c1", lambda: p.api("PUT", f"{inst}/state", {"action": "stop", "force": True, "timeout": 30})),
        ("start c1", lambda: p.api("PUT", f"{inst}/state", {"action": "start"})),
    ]


def report(samples: dict[str, list[float]]) -> None:
    """Each line's median, p90 and ratio to the floor; for a command, also its median minus the
    median of its raw requests (the client's own part) and that part's ratio to the floor."""
    floor = ms_stats(samples["python -c pass"])[0]
    print(f"{'(ms)':<40}{'median':>9}{'p90':>9}{'/floor':>9}{'-API':>9}{'/floor':>9}")
    print("-" * 85)
    for label, values in samples.items():
        med, p90 = ms_stats(values)
        line = f"{label:<40}{med:9.1f}{p90:9.1f}{med / floor:8.2f}x"
        command = label.partition(": ")[2]
        if not label.startswith("API") and f"API: {command}" in samples:
            own = med - ms_stats(samples[f"API: {command}"])[0]
            line += f"{own:9.1f}{own / floor:8.2f}x"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="rounds (default 20)")
    ap.add_argument("--short", action="store_true", help="2 rounds: proof that it runs")
    args = ap.parse_args()
    n = 2 if args.short else args.n
    tag = "c" + secrets.token_hex(2)
    ns, br = f"{tag}cli", f"{tag}br"
    work = Path(tempfile.mkdtemp(prefix=f"pincus-bench-{tag}-"))
    work.chmod(0o711)
    p = Pincus(ns, work)
    # As scripts/setup.sh does: byte code written once, not compiled by every process.
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(REPO / "src")], check=True, stdout=subprocess.DEVNULL)
    launcher = work / "pincus-launcher"
    subprocess.run([PYTHON, str(REPO / "scripts" / "write_launcher.py"), str(launcher), str(REPO / "src")],
                   check=True)  # fmt: skip
    # What the venv's `pincus` imports is whatever its PYTHONPATH says: this checkout's src.
    p.env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if x)
    init_pid = 0
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        p.start()
        p.cli("network", "create", br, "ipv4.address=10.250.99.1/24", "ipv6.address=none")
        p.cli("launch", "c1", "-n", br)
        init_pid = int(p.api("GET", "/1.0/instances/c1/state")["pid"])
        entries = {"venv pincus": str(BIN / "pincus"), "launcher": str(launcher)}
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        print(f"load average at start: {' '.join(load)} ({os.cpu_count()} cores); {n} rounds")
        run(p, entries, br, 1)  # warm-up: byte-code written, daemon caches filled
        t = time.perf_counter()
        samples = run(p, entries, br, n)
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        print(f"{n} rounds in {time.perf_counter() - t:.1f} s; load average now {' '.join(load)}\n")
        report(samples)
    finally:
        if p.proc is not None and p.proc.poll() is None:
            p.cli("delete", "c1", "-f", check=False)
            p.cli("network", "delete", br, check=False)
        p.stop()
        kill_leftovers(ns, work, init_pid)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
