"""pincus and LXD 5.0.2 side by side, the same work on the same machine in one run; each as pincus/LXD.

    .venv/bin/python bench/bench_lxd.py [--install-lxd] [-n 20] [--nics 500]
    .venv/bin/python bench/bench_lxd.py --short        # pincus side only, a few iterations: seconds
    .venv/bin/python bench/bench_lxd.py --pincus-only [-n 10] [--nics 500]   # every figure, no LXD
    ... [--no-ipv6-in-container]   # section 4 without the kernel's IPv6 growth (bench_nic_floor.py)

1. NIC hot-plug through each project's own CLI: `pincus config device add C eth1 nic network=phys0`
   + `remove` against `lxc config device add C eth1 nic nictype=bridged parent=BR` + `remove`.
2. The same through the same Go client: Debian's `lxc` (LXD 5.0.2) against pincusd's socket. LXD's
   own CLI is that client, so its figure is section 1's.
3. Container start + stop with one NIC on the bridge, through each CLI (`start`, then `stop`).
4. NIC #1 vs #50 vs #500 on one bridge: the hot-plug (add, and add + remove) of the k-th NIC of a
   running container through the same `lxc`, the k-1 before it put there in one PUT (untimed).

Both make the same kernel object for a NIC: a veth whose peer is in the container, its host end
enslaved to a Linux bridge (pincus: a physical network whose parent is the bridge, in pincusd's
own network namespace; LXD: `nictype=bridged`, in the host's, where LXD lives). Both now run a
container on its own root from an image on a `dir` pool, as the output repeats: pincus the busybox
test image (scripts/build-image.sh, imported once into the bench's pincusd; its /sbin/init is
busybox's init), LXD a 1 MB busybox image whose /sbin/init only sleeps (lxdlib.build_image), so a
timed stop still differs by what each init does on its way down.

Pairs are interleaved (a pincus one, then an LXD one) so both see the same load. Cleanup runs
whatever happens (failure, Ctrl-C, SIGTERM): LXD's instances, image and bridge, LXD itself and
its mount namespace (lxdlib.Lxd.cleanup), pincus's containers, pincusd, its namespace, the tmp dir.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_device_add import Pincus, discard, run_benchmark
from lxdlib import LxcFailed, Lxd, links_in, load, lxc_env, lxc_version, run_lxc

NOTE = (
    "both run an image rootfs on a dir pool: pincus the busybox test image (busybox init), "
    "LXD a busybox image whose init sleeps"
)

CLI_AIM = 0.4  # hot-plug through each CLI, pincus / LXD (issue 11)


def med_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Table:
    """Rows of (label, pincus samples, LXD samples or None) printed with medians and the ratio."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, list[float], list[float] | None, str]] = []

    def add(self, label: str, pincus: list[float], lxd: list[float] | None, note: str = "") -> None:
        self.rows.append((label, pincus, lxd, note))

    def print(self) -> None:
        head = f"{'(ms, median of n)':<46}{'pincus':>9}{'LXD':>9}{'pincus/LXD':>12}"
        print(head)
        print("-" * len(head))
        for label, p, x, note in self.rows:
            if x:
                print(f"{label:<46}{med_ms(p):9.1f}{med_ms(x):9.1f}{med_ms(p) / med_ms(x):11.2f}x {note}")
            else:
                print(f"{label:<46}{med_ms(p):9.1f}{'-':>9}{'-':>12} {note}")


def put_devices(api: Callable[[str, str, Any], Any], name: str, devices: dict[str, Any]) -> None:
    """GET the instance and PUT it back with DEVICES (what a user's `config edit` does)."""
    inst = api("GET", f"/1.0/instances/{name}", None)
    # Config as read, volatile keys included: LXD refuses a PUT that drops its volatile.idmap keys.
    body = {"config": inst.get("config") or {}, "devices": devices, "profiles": inst.get("profiles", []),
            "description": inst.get("description", "")}  # fmt: skip
    api("PUT", f"/1.0/instances/{name}", body)


def lxc_query(env: dict[str, str], daemon: str) -> Callable[[str, str, Any], Any]:
    """A raw request through `lxc query --wait` (without --wait it returns once the operation is made)."""

    def api(method: str, path: str, body: Any) -> Any:
        args = ["query", "--wait", "-X", method, path] + (
            ["--data", json.dumps(body)] if body is not None else []
        )
        r = subprocess.run(["lxc", *args], env=env, text=True, capture_output=True, timeout=900)
        if r.returncode != 0:
            raise LxcFailed(f"lxc query against {daemon} failed: {method} {path}: {r.stderr.strip()}")
        return json.loads(r.stdout) if r.stdout.strip() else None

    return api


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="samples per figure (default 20)")
    ap.add_argument("--nics", type=int, default=500, help="the last NIC of section 4 (default 500)")
    ap.add_argument("--short", action="store_true", help="pincus side only, 2 samples, NIC #1 and #5")
    ap.add_argument("--pincus-only", action="store_true", help="every section and NIC #k, without LXD")
    ap.add_argument(
        "--no-ipv6-in-container",
        action="store_true",
        help="section 4 with IPv6 off in the containers' namespaces (the kernel's own growth removed)",
    )
    ap.add_argument("--install-lxd", action="store_true", help="apt-get install Debian's lxd package first")
    args = ap.parse_args()
    n = 2 if args.short else args.n
    checkpoints = [1, 5] if args.short else sorted({1, min(50, args.nics), args.nics})
    if n < 1 or args.nics < 1:
        ap.error("-n and --nics must be at least 1")
    if shutil.which("lxc") is None:
        print("no lxc: install Debian's lxd-client (the LXD 5.0.2 Go client)", file=sys.stderr)
        return 2
    with_lxd = not (args.short or args.pincus_only)
    if with_lxd:
        if args.install_lxd:
            Lxd.install()
        if shutil.which("lxd") is None:
            print("no lxd: run with --install-lxd (apt-get install lxd), or use --short", file=sys.stderr)
            return 2

    print(f"load average at start: {load()}; /proc/loadavg: {Path('/proc/loadavg').read_text().strip()}")
    tag = "bl" + secrets.token_hex(2)
    ns, br, name, sname = f"{tag}ns", f"{tag}br", tag, f"{tag}s"
    work = Path(tempfile.mkdtemp(prefix=f"pincus-bench-{tag}-"))
    work.chmod(0o711)
    p = Pincus(ns, work)
    lxd: Lxd | None = None
    pincus_names: list[str] = []
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        for cmd in (
            ["link", "set", "lo", "up"],
            ["link", "add", br, "type", "bridge"],
            ["link", "set", br, "up"],
        ):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        p.start()
        p.cli("network", "create", "phys0", "--type=physical", f"parent={br}")
        pincus_names.append(name)
        p.cli("init", "busybox", name)
        p.cli("start", name)
        pincus_names.append(sname)
        p.cli("init", "busybox", sname, "-n", "phys0")
        p_pid = int(p.api("GET", f"/1.0/instances/{name}/state")["pid"])
        p_lxc = lxc_env(p.dir / "unix.socket", work / "lxc-conf-pincus")
        p_nic = ["nic", "network=phys0"]

        x_nic = ["nic", "nictype=bridged", f"parent={br}"]
        if with_lxd:
            lxd = Lxd(work, tag)
            lxd.start()
            lxd.add_bridge(br)
            lxd.make_container()
            lxd.init(sname, ["eth0", *x_nic, "name=eth0"])
            print(f"lxc {lxc_version()}; lxd {lxd.version()} on {lxd.dir}")
        print(f"note: {NOTE}\n", flush=True)
        x_pid = lxd.init_pid() if lxd else 0

        def pincus_cli_pair(out: dict[str, list[float]]) -> None:
            add = timed(lambda: p.cli("config", "device", "add", name, "eth1", *p_nic))
            remove = timed(lambda: p.cli("config", "device", "remove", name, "eth1"))
            out["add"].append(add)
            out["remove"].append(remove)
            out["pair"].append(add + remove)

        def lxc_pair(daemon: str, env: dict[str, str], nic: list[str], out: dict[str, list[float]],
                     dev: str = "eth1", pid: int = 0) -> None:  # fmt: skip
            before = links_in(pid) if pid else []
            add = run_lxc(daemon, env, "config", "device", "add", name, dev, *nic)
            if pid and len(links_in(pid)) != len(before) + 1:
                raise LxcFailed(
                    f"{daemon}: device add {dev} succeeded but the container has no new link "
                    f"({len(before)} before, {len(links_in(pid))} after)"
                )
            remove = run_lxc(daemon, env, "config", "device", "remove", name, dev)
            if pid and links_in(pid) != before:
                raise LxcFailed(f"{daemon}: device remove succeeded but the link is still there")
            out["add"].append(add)
            out["remove"].append(remove)
            out["pair"].append(add + remove)

        def fresh() -> dict[str, list[float]]:
            return {"add": [], "remove": [], "pair": []}

        # Warm-up, checked against the kernel.
        lxc_pair("pincusd", p_lxc, p_nic, fresh(), pid=p_pid)
        pincus_cli_pair(fresh())
        if lxd:
            lxc_pair("LXD", lxd.lxc, x_nic, fresh(), pid=x_pid)

        t0 = time.perf_counter()
        own, go, lx = fresh(), fresh(), fresh()
        for _ in range(n):
            pincus_cli_pair(own)
            lxc_pair("pincusd", p_lxc, p_nic, go)
            if lxd:
                lxc_pair("LXD", lxd.lxc, x_nic, lx)
        table = Table()
        for op in ("pair", "add", "remove"):
            table.add(f"1. own CLI: config device {op if op != 'pair' else 'add+remove'}", own[op],
                      lx[op] if lxd else None, "(pincus vs lxc)")  # fmt: skip
        for op in ("pair", "add", "remove"):
            table.add(f"2. same lxc: config device {op if op != 'pair' else 'add+remove'}", go[op],
                      lx[op] if lxd else None, "(lxc vs lxc)")  # fmt: skip

        # 3. start + stop with one NIC.
        ps: dict[str, list[float]] = {"start": [], "stop": [], "pair": []}
        xs: dict[str, list[float]] = {"start": [], "stop": [], "pair": []}
        for i in range(n + 1):
            a = timed(lambda: p.cli("start", sname))
            b = timed(lambda: p.cli("stop", sname))
            if i:
                ps["start"].append(a)
                ps["stop"].append(b)
                ps["pair"].append(a + b)
            if lxd:
                a = timed(lambda: run_lxc("LXD", lxd.lxc, "start", sname))
                lxd.wait_stoppable(sname)  # untimed: pincus's start returns once its init is ready
                b = timed(lambda: run_lxc("LXD", lxd.lxc, "stop", sname))
                if i:
                    xs["start"].append(a)
                    xs["stop"].append(b)
                    xs["pair"].append(a + b)
        for op in ("pair", "start", "stop"):
            table.add(f"3. own CLI: container {op if op != 'pair' else 'start+stop'}, one NIC", ps[op],
                      xs[op] if lxd else None)  # fmt: skip

        # 4. the k-th NIC on one bridge: fill to k-1 in one PUT, then time #k through lxc.
        if args.no_ipv6_in_container:
            # New interfaces in these namespaces get no IPv6: what is left of the growth is not the
            # kernel's IPv6 bookkeeping (bench_nic_floor.py measures that alone).
            for pid in (p_pid, x_pid):
                if pid:
                    argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "sysctl", "-qw"]
                    subprocess.run([*argv, "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        p_api = lxc_query(p_lxc, "pincusd")
        x_api = lxc_query(lxd.lxc, "LXD") if lxd else None
        per_k: dict[int, tuple[dict[str, list[float]], dict[str, list[float]]]] = {}
        for k in checkpoints:
            fill = {f"f{i}": {"type": "nic", "network": "phys0", "name": f"f{i}"} for i in range(1, k)}
            put_devices(p_api, name, fill)
            if x_api:
                xfill = {f"f{i}": {"type": "nic", "nictype": "bridged", "parent": br, "name": f"f{i}"}
                         for i in range(1, k)}  # fmt: skip
                put_devices(x_api, name, xfill)
            pk, xk = fresh(), fresh()
            reps = max(3, n // 4)
            for j in range(reps):
                lxc_pair(
                    "pincusd", p_lxc, [*p_nic, "name=probe"], pk, dev="probe", pid=p_pid if j == 0 else 0
                )
                if lxd:
                    lxc_pair(
                        "LXD", lxd.lxc, [*x_nic, "name=probe"], xk, dev="probe", pid=x_pid if j == 0 else 0
                    )
            per_k[k] = (pk, xk)
            got = len(links_in(p_pid)) - 1  # lo
            if got != k - 1:
                raise RuntimeError(f"pincus container has {got} NICs, expected {k - 1}")
        for k, (pk, xk) in per_k.items():
            table.add(f"4. same lxc: NIC #{k} add", pk["add"], xk["add"] if lxd else None)
            table.add(f"4. same lxc: NIC #{k} add+remove", pk["pair"], xk["pair"] if lxd else None)
        first, last = checkpoints[0], checkpoints[-1]
        put_devices(p_api, name, {})
        if x_api:
            put_devices(x_api, name, {})

        print(f"{n} samples per figure (section 4: {max(3, n // 4)}), in {time.perf_counter() - t0:.0f} s; "
              f"load average now {load()}\n")  # fmt: skip
        table.print()
        print()
        for who, idx in (("pincus", 0), ("LXD", 1)):
            if who == "LXD" and not lxd:
                continue
            a, b = med_ms(per_k[first][idx]["add"]), med_ms(per_k[last][idx]["add"])
            print(f"{who}: NIC #{last} add / NIC #{first} add = {b / a:.2f}x")
        if lxd:
            ratio = med_ms(own["pair"]) / med_ms(lx["pair"])
            print(f"hot-plug through each CLI, pincus / LXD: {ratio:.2f}x "
                  f"(aim at most {CLI_AIM}x: {'met' if ratio <= CLI_AIM else 'NOT met'})")  # fmt: skip
        print(f"note: {NOTE}")
        return 0
    finally:
        sys.stdout.flush()
        if lxd is not None:
            lxd.cleanup()  # its instances, image, bridge, daemon, mount namespace
        if p.proc is not None and p.proc.poll() is None:
            for inst in pincus_names:
                p.cli("delete", inst, "-f", check=False)
        discard(p, ns, work)


if __name__ == "__main__":
    run_benchmark(main, LxcFailed, RuntimeError, subprocess.SubprocessError)
