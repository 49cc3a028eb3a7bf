"""The same Go client, Debian's LXD 5.0.2 `lxc`, against pincusd and against LXD 5.0.2 itself.

    .venv/bin/python bench/bench_go_client.py [-n 20] [--install-lxd]   # both daemons, ratio
    .venv/bin/python bench/bench_go_client.py --short                   # pincusd only, 2 pairs

Times, n times each and interleaved (a pincusd pair, then an LXD pair), the pair

    lxc config device add C eth1 nic ...
    lxc config device remove C eth1

on a running container, with the same `lxc` binary and a throw-away LXD_CONF; only the daemon
behind LXD_SOCKET differs. On pincusd the NIC is `network=phys0`, a physical network whose
parent is a Linux bridge; on LXD it is `nictype=bridged parent=BR` on a bridge of the same
kind. Both end as the same kernel work: a veth born in the container, enslaved to the bridge.

pincusd runs as in bench_device_add.py: its own PINCUS_DIR, in a throw-away network namespace
with the bridge in it; its container is made with pincus's own CLI. LXD is started by hand
(there is no systemd) on its own LXD_DIR in the same tmp dir, in the host's network namespace
and a mount namespace of its own; it is set up with `lxd init --preseed` (a `dir` pool, no
network), an image built here offline (busybox-static, an /sbin/init that sleeps) and a
bridge named bgc<hex>br in the host namespace. `--install-lxd` first installs Debian's `lxd`
package (a manual benchmark: never from setup.sh).

Cleanup runs whatever happens (failure, Ctrl-C, SIGTERM): both containers deleted, the image
deleted, LXD shut down (then killed; its mount namespace and new empty cgroups removed),
pincusd stopped, leftover processes killed, the bridge, the namespace and the tmp dir deleted.
Exits non-zero, with the failing lxc command and the tail of its --debug output, if lxc fails
against pincusd.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_device_add import Pincus, discard, ms_stats, run_benchmark
from lxdlib import LxcFailed, Lxd, links_in, load, lxc_env, lxc_version, run_lxc

AIM = 0.5  # pincusd pair / LXD pair


def time_pair(daemon: str, env: dict[str, str], name: str, nic: list[str], out: dict[str, list[float]],
              debug: bool = False, check_pid: int = 0) -> None:  # fmt: skip
    """One add + remove; with CHECK_PID (the container's init), also that the kernel agrees: one
    more link in the container's network namespace after the add, none left after the remove (the
    name inside may differ: LXD names it as the kernel would, eth0 in a container with no NIC)."""
    before = links_in(check_pid) if check_pid else []
    add = run_lxc(daemon, env, "config", "device", "add", name, "eth1", "nic", *nic, debug=debug)
    if check_pid and len(links_in(check_pid)) != len(before) + 1:
        raise LxcFailed(f"lxc config device add on {daemon} succeeded but container {name} has no new link")
    remove = run_lxc(daemon, env, "config", "device", "remove", name, "eth1", debug=debug)
    if check_pid and links_in(check_pid) != before:
        raise LxcFailed(f"lxc config device remove on {daemon} succeeded but container {name} has "
                        f"{links_in(check_pid)}, not {before}")  # fmt: skip
    out["add"].append(add)
    out["remove"].append(remove)
    out["pair"].append(add + remove)


# --------------------------------------------------------------------------- report


def report_rows(label: str, data: dict[str, list[float]]) -> None:
    for op in ("pair", "add", "remove"):
        med, p90 = ms_stats(data[op])
        print(f"{label + ' ' + op:<44}{med:9.1f}{p90:9.1f}")


def time_lxc_startup(env: dict[str, str], n: int) -> list[float]:
    """`lxc --version`: the Go client's process start-up, no request."""
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["lxc", "--version"], env=env, check=True, capture_output=True)
        samples.append(time.perf_counter() - t)
    return samples


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="add+remove pairs per daemon (default 20)")
    ap.add_argument("--short", action="store_true", help="2 pairs, pincusd only, no LXD (seconds)")
    ap.add_argument("--install-lxd", action="store_true",
                    help="apt-get install Debian's lxd package first (no recommends)")  # fmt: skip
    args = ap.parse_args()
    n = 2 if args.short else args.n
    if n < 1:
        ap.error("-n must be at least 1")
    if shutil.which("lxc") is None:
        print("no lxc: install Debian's lxd-client (the LXD 5.0.2 Go client)", file=sys.stderr)
        return 2
    if not args.short:
        if args.install_lxd:
            Lxd.install()
        if shutil.which("lxd") is None:
            print("no lxd: run with --install-lxd (apt-get install lxd), or use --short", file=sys.stderr)
            return 2

    print(f"load average at start: {load()}")
    hexa = secrets.token_hex(2)
    tag = f"bgc{hexa}"  # bridges, namespace, containers, image alias: all bgc<hex>...
    ns, bridge, name = f"{tag}ns", f"{tag}br", tag
    work = Path(tempfile.mkdtemp(prefix=f"pincus-bench-{tag}-"))
    work.chmod(0o711)
    p = Pincus(ns, work)
    lxd: Lxd | None = None
    init_pid = 0
    try:
        # pincusd: private namespace with a bridge, a physical network on it, a running container.
        subprocess.run(["ip", "netns", "add", ns], check=True)
        for cmd in (["link", "set", "lo", "up"], ["link", "add", bridge, "type", "bridge"],
                    ["link", "set", bridge, "up"]):  # fmt: skip
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        p.start()
        p.cli("network", "create", "phys0", "--type=physical", f"parent={bridge}")
        p.cli("init", "busybox", name)
        p.cli("start", name)
        init_pid = int(p.api("GET", f"/1.0/instances/{name}/state")["pid"])
        pincus_env = lxc_env(p.dir / "unix.socket", work / "lxc-conf-pincus")
        pincus_nic = ["network=phys0"]

        # LXD: its own LXD_DIR, a bridge in the host namespace, a running container.
        if not args.short:
            lxd = Lxd(work, tag)
            lxd.start()
            lxd.add_bridge(bridge)
            lxd.make_container()
            lxd_nic = ["nictype=bridged", f"parent={bridge}"]
            print(f"lxc {lxc_version()} ({shutil.which('lxc')}); lxd {lxd.version()} on {lxd.dir}")

        results: dict[str, dict[str, list[float]]] = {}
        pincus_error: LxcFailed | None = None
        keys = ("add", "remove", "pair")
        # Warm-up pair on each (with --debug on pincusd: the failing request, if any, is in the output).
        try:
            time_pair("pincusd", pincus_env, name, pincus_nic, {k: [] for k in keys}, debug=True,
                      check_pid=init_pid)  # fmt: skip
        except LxcFailed as e:
            pincus_error = e
        if lxd is not None:
            time_pair("LXD", lxd.lxc, name, lxd_nic, {k: [] for k in keys}, check_pid=lxd.init_pid())

        t = time.perf_counter()
        for daemon in ("pincusd", "LXD"):
            results[daemon] = {k: [] for k in keys}
        for _ in range(n):
            if pincus_error is None:
                try:
                    time_pair("pincusd", pincus_env, name, pincus_nic, results["pincusd"])
                except LxcFailed as e:
                    pincus_error = e
            if lxd is not None:
                time_pair("LXD", lxd.lxc, name, lxd_nic, results["LXD"])
        startup = time_lxc_startup(pincus_env, n)
        elapsed = time.perf_counter() - t

        which = "per daemon, interleaved" if lxd is not None else "on pincusd only"
        print(f"{n} add+remove pairs {which}, in {elapsed:.1f} s; "
              f"load average now {load()}\n")  # fmt: skip
        head = f"{'lxc config device add/remove (ms)':<44}{'median':>9}{'p90':>9}"
        print(head)
        print("-" * len(head))
        if pincus_error is None:
            report_rows("pincusd", results["pincusd"])
        else:
            print(f"{'pincusd':<44}{'(lxc failed: see below)':>18}")
        if lxd is not None:
            report_rows("LXD 5.0.2", results["LXD"])
        med, p90 = ms_stats(startup)
        print(f"{'lxc --version (client start-up, no request)':<44}{med:9.1f}{p90:9.1f}")
        if pincus_error is None and lxd is not None:
            ratio = ms_stats(results["pincusd"]["pair"])[0] / ms_stats(results["LXD"]["pair"])[0]
            verdict = "met" if ratio <= AIM else "NOT met"
            print(f"\npair median pincusd / LXD 5.0.2: {ratio:.2f}x (aim: at most {AIM}x, {verdict})")
        if pincus_error is not None:
            print(f"\nFAILED: {pincus_error}", file=sys.stderr)
            return 1
        return 0
    finally:
        sys.stdout.flush()
        if lxd is not None:
            lxd.cleanup()  # its container, image, daemon and the bridge
        if p.proc is not None and p.proc.poll() is None:
            if not init_pid:  # interrupted between start and reading the pid
                with contextlib.suppress(Exception):
                    init_pid = int(p.api("GET", f"/1.0/instances/{name}/state")["pid"])
            p.cli("delete", name, "-f", check=False)
        discard(p, ns, work, init_pid)


if __name__ == "__main__":
    run_benchmark(main, LxcFailed, RuntimeError, subprocess.SubprocessError)
