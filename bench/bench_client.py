"""The client's common commands against the interpreter's floor, measured in one run.

    .venv/bin/python bench/bench_client.py [-n 20] [--short]

A real pincusd (own PINCUS_DIR, in a throw-away network namespace) with a managed bridge and a
running container c1 on it. Each round runs, interleaved so that all see the same load:
- the floor: the venv's `python -c pass` (before each command or add+remove, stop+start pair, for
  each entry) and `python -I -S -c pass`, and the launcher's own
  (`python -SP -c "import _socket, _json"`);
- every common command through each client entry: `pincus` as installed in the venv (pip's
  wrapper, or the launcher once scripts/setup.sh wrote it) and the launcher that
  scripts/write_launcher.py writes for this checkout (into the bench's tmp dir);
- each command's requests as raw HTTP (the daemon's and the socket's part of it).
Each line: median and p90 of the wall time over the rounds and the median's ratio to
`python -c pass`; the median CPU time (user + system) of the process and its ratio to the
floor's (it moves much less with the machine's load); and the wall median minus the
median of the command's raw requests (the client's own part) with its ratio to the floor.
Cleanup runs whatever happens: c1 deleted, pincusd stopped, namespace and tmp dir removed.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_device_add import BIN, REPO, Pincus, kill_leftovers, ms_stats, put_body

PYTHON = str(BIN / "python")  # the venv's, as the commands' own
SETTLE = 0.3  # seconds of quiet after a start or stop


def commands(br: str) -> list[list[tuple[str, list[str]]]]:
    """(label, argv) of each common command, in groups that leave c1 as they found it (remove
    undoes add, start undoes stop), in the order a round runs them."""
    return [
        [("list", ["list"])],
        [("info c1", ["info", "c1"])],
        [
            ("config device add", ["config", "device", "add", "c1", "eth1", "nic", f"network={br}"]),
            ("config device remove", ["config", "device", "remove", "c1", "eth1"]),
        ],
        [("network list", ["network", "list"])],
        [("network show", ["network", "show", br])],
        [("stop c1", ["stop", "c1", "--force"]), ("start c1", ["start", "c1"])],
        [("exec c1 -- true", ["exec", "c1", "--", "true"])],
    ]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time of ARGV's process, and the CPU time (user + system) it used: the CPU time moves
    much less with the machine's load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr}{r.stdout}")
    return elapsed, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def settle(label: str) -> None:
    """After a start or stop, let the container and the daemon's work after the answer (the
    container's own start-up, dnsmasq) finish before timing anything else: without it the next
    commands, floor included, share the CPUs with it."""
    if label in ("start c1", "stop c1"):
        time.sleep(SETTLE)


def run(p: Pincus, entries: dict[str, tuple[str, dict[str, str]]], br: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}

    def add(label: str, seconds: float, cpu: float | None = None) -> None:
        out.setdefault(label, []).append(seconds)
        if cpu is not None:
            out.setdefault(f"cpu {label}", []).append(cpu)

    for _ in range(n):
        add("python -I -S -c pass", *timed([PYTHON, "-I", "-S", "-c", "pass"], p.env))
        # The launcher's own floor: its interpreter flags and the two C modules it needs.
        add(
            "python -SP -c 'import _socket, _json'",
            *timed([PYTHON, "-SP", "-c", "import _socket, _json"], p.env),
        )
        # Each group right after a floor sample: what a hot-plug or a stop leaves the kernel to
        # finish (namespaces, RCU) weighs on the floor as on the commands.
        for group in commands(br):
            for entry, (exe, env) in entries.items():
                add("python -c pass", *timed([PYTHON, "-c", "pass"], p.env))
                for label, argv in group:
                    add(f"{entry}: {label}", *timed([exe, *argv], env))
                    settle(label)
        for label, requests in api_requests(p, br):
            t = time.perf_counter()
            requests()
            add(f"API: {label}", time.perf_counter() - t)
            settle(label)
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
    cpu_floor = ms_stats(samples["cpu python -c pass"])[0]
    head = ("median", "p90", "/floor", "cpu", "/floor", "-API", "/floor")
    print(f"{'(ms)':<38}" + "".join(f"{h:>8}" for h in head))
    print("-" * 94)
    for label, values in samples.items():
        if label.startswith("cpu "):
            continue
        med, p90 = ms_stats(values)
        line = f"{label:<38}{med:8.1f}{p90:8.1f}{med / floor:7.2f}x"
        if f"cpu {label}" in samples:
            cpu = ms_stats(samples[f"cpu {label}"])[0]
            line += f"{cpu:8.1f}{cpu / cpu_floor:7.2f}x"
        command = label.partition(": ")[2]
        if not label.startswith("API") and f"API: {command}" in samples:
            own = med - ms_stats(samples[f"API: {command}"])[0]
            line += f"{own:8.1f}{own / floor:7.2f}x"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="rounds (default 20)")
    ap.add_argument("--short", action="store_true", help="2 rounds: proof that it runs")
    ap.add_argument(
        "--src",
        type=Path,
        default=REPO / "src",
        help="the pincus source the commands run (default: this checkout's); another checkout's for a "
        "before/after (not compiled here: its setup.sh does that)",
    )
    ap.add_argument(
        "--before", type=Path, help="also run pip's wrapper on this pincus source (e.g. main's src)"
    )
    args = ap.parse_args()
    src = args.src.resolve()
    n = 2 if args.short else args.n
    tag = "c" + secrets.token_hex(2)
    ns, br = f"{tag}cli", f"{tag}br"
    work = Path(tempfile.mkdtemp(prefix=f"pincus-bench-{tag}-"))
    work.chmod(0o711)
    p = Pincus(ns, work)
    # As scripts/setup.sh does: byte code written once, not compiled by every process.
    if src == (REPO / "src").resolve():
        compileall = [PYTHON, "-m", "compileall", "-q", str(src)]
        subprocess.run(compileall, check=True, stdout=subprocess.DEVNULL)
    launcher = work / "pincus-launcher"
    subprocess.run([PYTHON, str(REPO / "scripts" / "write_launcher.py"), str(launcher), str(src)], check=True)
    # What the venv's `pincus` imports is whatever its PYTHONPATH says: SRC.
    p.env["PYTHONPATH"] = os.pathsep.join(x for x in (str(src), os.environ.get("PYTHONPATH")) if x)
    init_pid = 0
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        p.start()
        p.cli("network", "create", br, "ipv4.address=10.250.99.1/24", "ipv6.address=none")
        p.cli("launch", "busybox", "c1", "-n", br)
        init_pid = int(p.api("GET", "/1.0/instances/c1/state")["pid"])
        entries = {"venv pincus": (str(BIN / "pincus"), p.env), "launcher": (str(launcher), p.env)}
        if args.before:
            before = {**p.env, "PYTHONPATH": str(args.before.resolve())}
            entries = {"before": (str(BIN / "pincus"), before), **entries}
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        print(
            f"load average at start: {' '.join(load)} ({os.cpu_count()} cores); {n} rounds; pincus from {src}"
        )
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
