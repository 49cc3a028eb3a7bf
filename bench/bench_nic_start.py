"""Per-NIC start/stop cost of the bridged NIC driver as NICs accumulate on one managed bridge.

    .venv/bin/python bench/bench_nic_start.py [-n 1000]

The issue (11, item 3): with 1,000 NICs on one bridge, start and stop of NIC #991-1000 within 1.2x
of #1-10 and within 3x of the raw-netlink floor measured in the same run, and dnsmasq's CPU for the
1,000 removals flat (printed per 100 removals, the first block removing from a full hosts dir); the
summary at the end puts these figures side by side.
Every NIC has everything that could grow with the number of its neighbours: IP filtering
(nftables), ingress and egress limits (tc, and an IFB since this kernel has no tc police) and
a static DHCP allocation (a dnsmasq hosts file, the bridge being a managed network with DHCP).

How it runs. The bench re-runs itself inside a throw-away network namespace with
`ip netns exec` (which also gives it a private mount namespace with that namespace's /sys),
and there, in ONE process and without the HTTP layer, does what pincusd does: a State (tmp
dir, Store, EventHub, probed kernel features, tag), the managed bridge created through
`server.networks.Networks.create` (10.250.0.1/16, DHCP on, so dnsmasq runs), and one
container spawned with `host.container.spawn_container`. Then for i in 1..n it starts a
`BridgedNic` (validate_environment + start) for a fake instance whose netns is that
container's, and keeps it running; afterwards it stops them in reverse (stop + post_stop).

One container for all n NICs, not n containers: what may grow per NIC is on the host side
(bridge ports, the nft table, tc objects, the dnsmasq hosts dir), which is the same whoever
the NICs belong to, while spawning 500 inits would add nothing to measure and minutes of
set-up. The container-side growth (n interfaces in one netns) is shared with the floor,
whose peers are born in the same container.

The floor, in the same run and interleaved with the NICs (so both see the same number of
interfaces at every index): the raw netlink work of the same veth, through host/links.py:
`create_veth_into_netns` + `set_master` + `set_up` on a second, plain bridge, and
`delete_link` to stop. After each floor start (untimed) IPv6 is disabled on the floor's host
end, as pincus does on its own: IPv6-enabled links make every later link and IPv6 change in
the namespace dearer, which would charge the floor's side effects to pincus.

Each start and stop is timed twice: wall time (what a user waits for) and the thread's CPU
time (user + system; no sleeping in the kernel's RCU waits, no time lost to other processes,
so steadier on a busy machine).

Before measuring, 10 NICs and 10 floor veths are started and stopped, and the bench waits
2 s, so NIC #1 does not carry one-off costs (libnftables loading, the nft table and sets,
Python's bytecode specialisation, the kernel's and dnsmasq's work on the new bridges).

Each host operation the driver calls is timed as well (wrappers around the public functions
of host/links, nft, tc, sysfs, bridgeport, dnsmasq, tc's netlink requests and the managed
network lookup; each counts its own time without the wrapped calls it makes, ~1 us overhead
per call), so a step that grows shows by name.

Cleanup, whatever happens (failure, Ctrl-C): the inner process stops the container and removes
the network (dnsmasq, nft rules); the outer one then kills whatever still runs
in the namespace or was spawned for it, deletes the namespace (every link goes with it) and
the tmp dir.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PIDS_FILE = "spawned.pids"  # pids the inner process started outside the namespace's process list
INNER_GRACE_S = 60.0  # after Ctrl-C, how long the inner process may take to clean up
SETTLE_S = 2.0  # pause between set-up and measuring
WARMUP = 10  # NICs started and stopped before measuring
REMOVAL_BLOCK = 100  # dnsmasq's CPU is reported per this many removals
DNSMASQ_CATCH_UP_S = 0.2  # dnsmasq handles a SIGHUP or an inotify event within this


# --------------------------------------------------------------------------- measuring


class StepClock:
    """Time spent in each wrapped function, per NIC, exclusive of the wrapped functions it calls:
    wall time under its label, and the thread's CPU time under "<label> cpu" (on a shared machine
    wall time also holds waits for the global rtnl lock and for a core; CPU time does not)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.children: list[tuple[float, float]] = []  # per active call: (wall, cpu) in wrapped callees

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        cpu_label = f"{label} cpu"

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.children.append((0.0, 0.0))
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed, used = time.perf_counter() - start, time.thread_time() - cpu
                inner_wall, inner_cpu = self.children.pop()
                self.current[label] = self.current.get(label, 0.0) + elapsed - inner_wall
                self.current[cpu_label] = self.current.get(cpu_label, 0.0) + used - inner_cpu
                if self.children:
                    w, c = self.children[-1]
                    self.children[-1] = (w + elapsed, c + used)

        return timed

    def wrap_module(self, module: ModuleType, group: str) -> None:
        for name, fn in list(vars(module).items()):
            if name.startswith("_") or not callable(fn) or isinstance(fn, type):
                continue
            if getattr(fn, "__module__", None) != module.__name__:
                continue  # imported names: counted where they are defined
            setattr(module, name, self.wrap(f"{group}.{name}", fn))

    def wrap_methods(self, cls: type, group: str, names: tuple[str, ...]) -> None:
        for name in names:
            setattr(cls, name, self.wrap(f"{group}.{name}", getattr(cls, name)))

    def take(self) -> dict[str, float]:
        out, self.current = self.current, {}
        return out


def windows(n: int) -> list[tuple[str, range]]:
    """The NIC index windows the issue asks about (1-based, clipped to n)."""
    mid = min(100, n)
    spans = [(1, 10), (mid - 4, mid + 5), (n - 9, n)]
    return [(f"{max(a, 1)}-{min(b, n)}", range(max(a, 1), min(b, n) + 1)) for a, b in spans]


def median_ms(samples: dict[int, float], idx: range) -> float:
    return statistics.median(samples[i] for i in idx if i in samples) * 1000


def print_table(title: str, rows: dict[str, dict[int, float]], n: int) -> None:
    """Single samples #1, #100, #n and window medians; ratios of the last window to the first, and
    of the first and last windows to the floor's (the row named with "floor" for "pincus")."""
    mid = min(100, n)
    wins = windows(n)
    print(f"\n{title} (ms)")
    head = f"{'op':<20}{'#1':>8}{f'#{mid}':>8}{f'#{n}':>8}{f'#{n}/#1':>8}"
    head += "".join(f"{'med ' + w:>14}" for w, _ in wins)
    head += f"{'last/first':>11}{'/floor first':>13}{'/floor last':>12}"
    print(head)
    print("-" * len(head))
    for op, samples in rows.items():
        floor = rows[op.replace("pincus", "floor")]
        floor_first, floor_last = median_ms(floor, wins[0][1]), median_ms(floor, wins[-1][1])
        single = [samples[i] * 1000 for i in (1, mid, n)]
        meds = [median_ms(samples, idx) for _, idx in wins]
        line = f"{op:<20}" + "".join(f"{v:8.2f}" for v in single) + f"{single[2] / single[0]:8.2f}"
        line += "".join(f"{v:14.2f}" for v in meds)
        line += f"{meds[-1] / meds[0]:11.2f}{meds[0] / floor_first:13.2f}{meds[-1] / floor_last:12.2f}"
        print(line)


def print_minima(rows: dict[str, dict[int, float]], n: int) -> None:
    """The fastest NIC of each window: on a busy machine noise only ever adds, so the minimum
    shows the trend when a window's median catches a burst of it."""
    wins = windows(n)
    for op, samples in rows.items():
        mins = [min(samples[i] for i in idx) * 1000 for _, idx in wins]
        print(f"  min {op:<20}" + "".join(f"{w:>9} {m:6.2f}" for (w, _), m in zip(wins, mins, strict=True))
              + f"   last/first {mins[-1] / mins[0]:.2f}")  # fmt: skip


def print_steps(title: str, steps: dict[int, dict[str, float]], totals: dict[int, float], n: int,
                cpu: bool = False) -> None:  # fmt: skip
    """Median time per step in each window (exclusive of the steps it calls); 'python (rest)' is
    the driver's own code around them. `cpu`: the thread's CPU time instead of wall time."""
    wins = windows(n)
    suffix = " cpu"
    labels = sorted({lb for s in steps.values() for lb in s if lb.endswith(suffix) == cpu})
    rows: dict[str, dict[int, float]] = {
        lb.removesuffix(suffix): {i: steps[i].get(lb, 0.0) for i in steps} for lb in labels
    }
    rows["python (rest)"] = {i: totals[i] - sum(steps[i].get(lb, 0.0) for lb in labels) for i in steps}
    print(f"\n{title}: where the {'CPU ' if cpu else ''}time goes (median ms per NIC)")
    head = f"{'step':<38}" + "".join(f"{w:>10}" for w, _ in wins) + f"{'last/first':>11}"
    print(head)
    print("-" * len(head))
    for label, samples in sorted(rows.items(), key=lambda kv: -median_ms(kv[1], wins[-1][1])):
        meds = [median_ms(samples, idx) for _, idx in wins]
        if max(meds) < 0.005:
            continue
        ratio = f"{meds[-1] / meds[0]:11.2f}" if meds[0] >= 0.005 else f"{'-':>11}"
        print(f"{label:<38}" + "".join(f"{m:10.3f}" for m in meds) + ratio)


def print_dnsmasq(removal_cpu: list[float], n: int) -> None:
    """dnsmasq's CPU per block of removals, the first block removing from a full hosts dir."""
    print(f"\ndnsmasq CPU per {REMOVAL_BLOCK} removals (ms; first block with {n} files in its hosts dir, "
          "last with the last few):")  # fmt: skip
    print("  " + " ".join(f"{c * 1000:.0f}" for c in removal_cpu))


def print_summary(
    start_rows: dict[str, dict[int, float]],
    stop_rows: dict[str, dict[int, float]],
    removal_cpu: list[float],
    n: int,
) -> None:
    """The issue's figures side by side: last window against the first, and against the floor."""
    first, last = windows(n)[0], windows(n)[-1]
    print(f"\nsummary (window medians, #{first[0]} vs #{last[0]}; targets: last/first <= 1.2, "
          "last/floor <= 3)")  # fmt: skip
    for what, rows, kind in (("start", start_rows, ""), ("stop", stop_rows, ""),
                             ("start", start_rows, " cpu"), ("stop", stop_rows, " cpu")):  # fmt: skip
        mine, floor = rows[f"pincus {what}{kind}"], rows[f"floor {what}{kind}"]
        what += kind
        a, b = median_ms(mine, first[1]), median_ms(mine, last[1])
        fa, fb = median_ms(floor, first[1]), median_ms(floor, last[1])
        print(f"  {what:<10} pincus {a:6.2f} -> {b:6.2f} ms  last/first {b / a:5.2f}   "
              f"floor {fa:6.2f} -> {fb:6.2f} ms  last/floor {b / fb:5.2f}")  # fmt: skip
    if len(removal_cpu) >= 2:
        head, tail = removal_cpu[0], removal_cpu[-1]
        print(f"  dnsmasq CPU per {REMOVAL_BLOCK} removals: first block {head * 1000:.0f} ms, "
              f"last block {tail * 1000:.0f} ms (clock ticks of 10 ms)")  # fmt: skip


# --------------------------------------------------------------------------- inside the namespace


class BenchInstance:
    """The InstanceView the NICs see: a container whose netns is the spawned container's."""

    def __init__(self, name: str, netns: Path) -> None:
        self.name = name
        self.type = "container"
        self.netns: Path | None = netns
        self.running = True
        self.vol: dict[str, str] = {}

    def volatile(self, key: str) -> str | None:
        return self.vol.get(key)

    def set_volatile(self, values: dict[str, str | None]) -> None:
        for k, v in values.items():
            if v is None:
                self.vol.pop(k, None)
            else:
                self.vol[k] = v


def nic_address(i: int) -> str:
    # 10.250.1.2 upwards: inside the bridge's 10.250.0.0/16, never its own 10.250.0.1.
    return f"10.250.{1 + i // 250}.{2 + i % 250}"


def inner(n: int, work: Path, tag: str) -> None:
    sys.path[:0] = [str(REPO / "src"), str(REPO)]
    from pincus.db.store import Store
    from pincus.devices import nic_bridged
    from pincus.devices.nic_bridged import BridgedNic
    from pincus.events import EventHub
    from pincus.host import (
        bridgeport,
        dnsmasq_hosts,
        dnsmasq_process,
        links,
        nft_networks,
        nft_ports,
        nft_runner,
        routes,
        sysctl,
        sysfs,
        taps,
        tc,
    )
    from pincus.host import container as host_container
    from pincus.host.features import probe_kernel_features
    from pincus.server.networks import Networks
    from pincus.state import State
    from tests.rootfslib import build_rootfs

    links.set_up("lo")
    state_dir = work / "pincus"
    state_dir.mkdir(mode=0o711)
    store = Store(state_dir / "pincus.db")
    state = State(dir=state_dir, store=store, events=EventHub(), features=probe_kernel_features(), tag=tag)
    networks = Networks(state)
    bridge, floor_bridge = f"{tag}br", f"{tag}fl"
    cont_dir = state_dir / "instances" / "bench"
    proc = None
    nics: dict[int, Any] = {}
    created_network = False
    try:
        networks.create({
            "name": bridge, "type": "bridge",
            "config": {"ipv4.address": "10.250.0.1/16", "ipv4.dhcp": "true", "ipv4.nat": "false",
                       "ipv6.address": "none"},
        })  # fmt: skip
        created_network = True
        links.create_bridge(floor_bridge)
        links.set_up(floor_bridge)
        cont_dir.mkdir(parents=True)
        # A busybox root of its own (privileged: the NICs' cost is what is measured).
        spec = host_container.RootSpec(build_rootfs(work / "rootfs"), ())
        proc = host_container.spawn_container("bench", "bench", cont_dir, cont_dir / "console.log", spec)
        with open(work / PIDS_FILE, "a") as f:
            f.write(f"{proc.pid}\n")
        handle = host_container.netns_handle(cont_dir)
        instance = BenchInstance("bench", handle)
        ns = str(handle)
        dnsmasq_pid = dnsmasq_process.find_running(state_dir / "networks" / bridge / "dnsmasq")
        print(
            f"features: {', '.join(k for k, v in state.features.items() if v) or 'none'}; "
            f"nft backend: {nft_runner.backend_name()}; dnsmasq pid {dnsmasq_pid}; "
            f"container init pid {proc.pid}"
        )

        def make_nic(i: int, name: str) -> BridgedNic:
            nic = BridgedNic(state, instance, name, {
                "type": "nic", "nictype": "bridged", "parent": bridge, "name": name,
                "ipv4.address": nic_address(i), "security.ipv4_filtering": "true",
                "limits.ingress": "10Mbit", "limits.egress": "10Mbit",
            })  # fmt: skip
            nic.validate_config()  # as the daemon does before a start; not timed
            return nic

        def floor_start(name: str, peer: str) -> None:
            links.create_veth_into_netns(name, peer, ns)
            links.set_master(name, floor_bridge)
            links.set_up(name)

        # Warm-up: one-off costs (libraries, the nft table and sets) must not land on NIC #1, nor
        # Python's own: 3.11 specialises a function's bytecode only after it has run a few times.
        for w in range(WARMUP):
            warm = make_nic(n + 1 + w, f"w{w}")
            warm.validate_environment()
            warm.start()
            warm.stop()
            warm.post_stop()
            warm.remove()
            floor_start(f"{tag}w{w}", f"w{w}")
            links.delete_link(f"{tag}w{w}")
        # New bridges, a new container and a new dnsmasq leave the kernel and dnsmasq busy for a
        # moment (IPv6 timers, start-up): measured without this, NICs #1-#3 cost up to 3x #4.
        time.sleep(SETTLE_S)

        clock = StepClock()
        for module in (links, nft_ports, nft_networks, tc, sysfs, bridgeport, dnsmasq_hosts, dnsmasq_process,
                       sysctl, routes, taps):  # fmt: skip
            clock.wrap_module(module, module.__name__.rsplit(".", 1)[1])
        # tc's netlink steps one by one: which kernel object gets dearer (tc.* is the rest of the call).
        tc_steps = ("qdisc_replace", "qdisc_add",
                    "qdisc_delete", "filter_add")  # fmt: skip
        clock.wrap_methods(tc._Tc, "tc netlink", tc_steps)
        lookup = nic_bridged.load_bridge_network  # type: ignore[attr-defined]
        setattr(nic_bridged, "load_bridge_network", clock.wrap("db: load_bridge_network", lookup))  # noqa: B010

        # Wall time is what a user waits for; the thread's CPU time (user + system, no sleeping in
        # RCU waits, no time lost to other processes) shows the work itself, and is steadier on a
        # busy machine.
        start_rows: dict[str, dict[int, float]] = {
            k: {} for k in ("pincus start", "floor start", "pincus start cpu", "floor start cpu")
        }
        stop_rows: dict[str, dict[int, float]] = {
            k: {} for k in ("pincus stop", "floor stop", "pincus stop cpu", "floor stop cpu")
        }
        start_steps: dict[int, dict[str, float]] = {}
        stop_steps: dict[int, dict[str, float]] = {}
        removes: dict[int, float] = {}  # remove(): the device leaves the config (not part of stop)
        print(f"load average at start: {Path('/proc/loadavg').read_text().strip()} (2 cores)")
        began, dnsmasq_cpu = time.perf_counter(), cpu_seconds(dnsmasq_pid)
        for i in range(1, n + 1):
            t, c = time.perf_counter(), time.thread_time()
            floor_start(f"{tag}f{i}", f"f{i}")
            start_rows["floor start"][i] = time.perf_counter() - t
            start_rows["floor start cpu"][i] = time.thread_time() - c
            # Untimed: like pincus's host ends, the floor's carry no IPv6, which would otherwise
            # make every later IPv6 change in the namespace dearer (the kernel walks the IPv6 FIB).
            sysctl.set_ipv6_disabled(f"{tag}f{i}")
            nic = make_nic(i, f"e{i}")
            clock.take()
            t, c = time.perf_counter(), time.thread_time()
            nic.validate_environment()
            nic.start()
            start_rows["pincus start"][i] = time.perf_counter() - t
            start_rows["pincus start cpu"][i] = time.thread_time() - c
            start_steps[i] = clock.take()
            nics[i] = nic
        print(
            f"started {n} NICs + {n} floor veths in {time.perf_counter() - began:.1f} s "
            f"(dnsmasq used {cpu_seconds(dnsmasq_pid) - dnsmasq_cpu:.2f} s of CPU meanwhile)"
        )
        check_running(links, bridge, nics, state_dir / "networks" / bridge / "dnsmasq", ns)

        began, dnsmasq_cpu = time.perf_counter(), cpu_seconds(dnsmasq_pid)
        # dnsmasq's CPU across each run of REMOVAL_BLOCK removals: flat if a removal costs it the
        # same with n-1 files left in its hosts dir as with none.
        removal_cpu: list[float] = []
        block_cpu = dnsmasq_cpu
        for i in range(n, 0, -1):
            t, c = time.perf_counter(), time.thread_time()
            links.delete_link(f"{tag}f{i}")
            stop_rows["floor stop"][i] = time.perf_counter() - t
            stop_rows["floor stop cpu"][i] = time.thread_time() - c
            nic = nics[i]
            clock.take()
            t, c = time.perf_counter(), time.thread_time()
            nic.stop()
            nic.post_stop()
            stop_rows["pincus stop"][i] = time.perf_counter() - t
            stop_rows["pincus stop cpu"][i] = time.thread_time() - c
            stop_steps[i] = clock.take()
            t = time.perf_counter()
            nic.remove()
            removes[i] = time.perf_counter() - t
            del nics[i]
            if (n - i + 1) % REMOVAL_BLOCK == 0 or i == 1:
                time.sleep(DNSMASQ_CATCH_UP_S)  # its reloads of this block land in this block
                now = cpu_seconds(dnsmasq_pid)
                removal_cpu.append(now - block_cpu)
                block_cpu = now
        print(
            f"stopped them in {time.perf_counter() - began:.1f} s "
            f"(dnsmasq used {cpu_seconds(dnsmasq_pid) - dnsmasq_cpu:.2f} s of CPU meanwhile)"
        )

        print(f"load average at the end: {Path('/proc/loadavg').read_text().strip()}")
        print_table(
            "start: validate_environment()+start() vs create_veth_into_netns+set_master+set_up", start_rows, n
        )
        print_minima(start_rows, n)
        print_table("stop: stop()+post_stop() vs delete_link (stopped in reverse, #n first)", stop_rows, n)
        print_minima(stop_rows, n)
        print(
            "\nremove() after stop (retires the hosts file; dnsmasq reloaded per batch), median ms: "
            + ", ".join(f"{w} {median_ms(removes, idx):.2f}" for w, idx in windows(n))
        )
        print_steps("start", start_steps, start_rows["pincus start"], n)
        print_steps("start", start_steps, start_rows["pincus start cpu"], n, cpu=True)
        print_steps("stop", stop_steps, stop_rows["pincus stop"], n)
        print_steps("stop", stop_steps, stop_rows["pincus stop cpu"], n, cpu=True)
        print_dnsmasq(removal_cpu, n)
        print_summary(start_rows, stop_rows, removal_cpu, n)
    finally:
        cleanup_inner(networks, bridge, floor_bridge, proc, cont_dir, created_network)
        store.close()


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of pid so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_running(links: Any, bridge: str, nics: dict[int, Any], hosts_dir: Path, ns: str) -> None:
    """Proof the NICs really are all there at once (the kernel's view, not pincus's)."""
    ports = [link for link in links.list_links() if link.master == bridge]
    ifbs = [link for link in links.list_links() if link.kind == "ifb"]
    inside = len(links.list_links(ns))
    files = len([p for p in hosts_dir.rglob("*") if p.is_file() and not p.name.startswith(".")])
    print(f"while all ran: {len(ports)} ports on {bridge}, {len(ifbs)} IFBs, {inside} links in the "
          f"container, {files} files under the dnsmasq dir")  # fmt: skip
    if len(ports) != len(nics):
        raise RuntimeError(f"expected {len(nics)} ports on {bridge}, found {len(ports)}")


def cleanup_inner(networks: Any, bridge: str, floor_bridge: str, proc: Any, cont_dir: Path,
                  created_network: bool) -> None:  # fmt: skip
    """Stop what outlives the namespace, each step on its own: a failing one must not keep the
    others from running."""
    from pincus.host import container as host_container
    from pincus.host import links

    def attempt(what: str, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception as e:
            print(f"cleanup: {what}: {e}", file=sys.stderr)

    # NICs still running are left to the namespace's deletion, which takes every link and nft
    # table in it at once (stopping 500 one by one would take 20 s); processes are not.
    if proc is not None:
        attempt("stop container", host_container.stop_container, proc, 0.0, True, cont_dir)
    if created_network:
        attempt(f"delete network {bridge}", networks.delete, bridge)
    if links.get_link(floor_bridge) is not None:
        attempt(f"delete {floor_bridge}", links.delete_link, floor_bridge)


# --------------------------------------------------------------------------- outside


def kill_leftovers(ns: str, work: Path) -> None:
    """Whatever the inner process left running: processes in the namespace, and the container init."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    with contextlib.suppress(FileNotFoundError):
        pids += [int(p) for p in (work / PIDS_FILE).read_text().split()]
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        # Only what this bench started: a reused pid must not be killed.
        if str(work).encode() in cmdline or b"container_init" in cmdline or b"dnsmasq" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000, help="NICs on the bridge (default 1000)")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    ap.add_argument("--tag", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.n < 10:
        ap.error("-n must be at least 10")
    if args.inner:
        try:
            inner(args.n, Path(args.inner), args.tag)
        except KeyboardInterrupt:
            sys.exit(130)  # cleaned up in inner's finally
        return
    tag = "b" + secrets.token_hex(2)  # 5 chars: bridge names and IFBs stay within 15 bytes
    ns = f"{tag}nic"
    work = Path(tempfile.mkdtemp(prefix=f"pincus-bench-{tag}-"))
    work.chmod(0o711)  # dnsmasq runs as nobody and must reach its hosts dir below
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        child = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, __file__, "-n", str(args.n), "--inner", str(work),
             "--tag", tag]
        )  # fmt: skip
        try:
            rc = child.wait()
        except KeyboardInterrupt:
            # The inner process got the same SIGINT and is cleaning up: give it time.
            try:
                child.wait(INNER_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            print("interrupted; cleaning up", file=sys.stderr)
            rc = 130
        if rc == 130:
            raise SystemExit(130)
        if rc != 0:
            raise SystemExit(f"benchmark failed (exit {rc})")
    finally:
        kill_leftovers(ns, work)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
