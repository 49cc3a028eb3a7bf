"""Hot-plugging a NIC on a bridge-parent physical network, as a user does it, against a real pincusd.

    .venv/bin/python bench/bench_device_add.py [-n 20]

Times, n times each, the pair

    pincus config device add c1 eth1 nic network=phys0
    pincus config device remove c1 eth1

where phys0 is a physical network whose parent is a Linux bridge and c1 a running container
(so the NIC takes the bridged path: a veth born in c1, enslaved to the bridge). The same work
against LXD 5.0.2, measured in the same run, is bench/bench_go_client.py.

Three layers, measured in the same run so they can be subtracted:
- CLI: the real `.venv/bin/pincus` commands, wall time as a shell sees it (process start-up,
  imports, GET + PUT of the instance, printing).
- API: the same requests as raw HTTP over the unix socket (GET the instance, PUT it back
  with eth1 added/removed, as the CLI does), so CLI minus API is the client's own cost.
- Floor: the raw netlink work of the same veth in the daemon's namespace, through
  host/links.py: create_veth_into_netns (peer born in c1) + set_master + set_up, and
  delete_link; what no implementation can avoid.

Everything runs in a throw-away network namespace (pincusd runs in it with `ip netns exec`, on
its own PINCUS_DIR in a tmp dir); addresses come from 10.250.0.0/16 only. Cleanup runs
whatever happens (failure, Ctrl-C): the container is deleted, pincusd stopped, leftover
processes killed, the namespace and the tmp dir deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
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
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PIDS_FILE = "spawned.pids"  # container inits started by --profile's in-process daemon
IMAGE = "busybox"  # the test image's alias (scripts/build-image.sh): every container runs its own root


# --------------------------------------------------------------------------- numbers


def ms_stats(samples: list[float]) -> tuple[float, float]:
    """(median, p90) in ms of samples in seconds."""
    ms = sorted(s * 1000 for s in samples)
    return statistics.median(ms), ms[max(0, -(-len(ms) * 9 // 10) - 1)]


def row(label: str, samples: list[float], floor: float | None = None) -> str:
    med, p90 = ms_stats(samples)
    tail = f"{med / floor:10.1f}x" if floor else f"{'':>11}"
    return f"{label:<40}{med:9.1f}{p90:9.1f}{tail}"


# --------------------------------------------------------------------------- the daemon


class Pincus:
    """pincusd on its own PINCUS_DIR inside a namespace; the CLI and raw API requests to it."""

    def __init__(self, ns: str, work: Path) -> None:
        self.ns = ns
        self.dir = work / "pincus"
        self.proc: subprocess.Popen[bytes] | None = None
        self._image_imported = False
        self.env = {
            **os.environ,
            "PINCUS_DIR": str(self.dir),
            "PINCUS_AUTO_IPV4_POOL": "10.250.0.0/16",
            "PINCUS_AUTO_IPV6_POOL": "fd42:250::/32",
        }

    def start(self, timeout: float = 30) -> None:
        self.dir.mkdir(parents=True)
        with open(self.dir.parent / "pincusd.stderr", "ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, str(BIN / "pincusd")],
                env=self.env, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        self.cli("admin", "waitready", "--timeout", str(timeout))

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def image(self) -> str:
        """The busybox test image's alias, imported the first time it is asked for (the build is
        cached machine-wide under /tmp/pincus-test-images, as for the tests)."""
        if not self._image_imported:
            if str(REPO) not in sys.path:
                sys.path.insert(0, str(REPO))
            from tests.imagelib import busybox_image

            self.cli("image", "import", str(busybox_image()), "--alias", IMAGE)
            self._image_imported = True
        return IMAGE

    def image_source(self) -> dict[str, str]:
        """An API create's "source": the test image (imported first if need be)."""
        return {"type": "image", "alias": self.image()}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if args[:1] in (("init",), ("launch",)) and IMAGE in args[1:2]:
            self.image()
        r = subprocess.run([str(BIN / "pincus"), *args], env=self.env, text=True, capture_output=True,
                           timeout=120)  # fmt: skip
        if check and r.returncode != 0:
            raise RuntimeError(f"pincus {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One request, raw HTTP/1.1 over the unix socket (as tests/pincus_testlib.py's Daemon.api)."""
        data = b"" if body is None else json.dumps(body).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(60)
            s.connect(str(self.dir / "unix.socket"))
            s.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + data
            )
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        head, _, payload = raw.partition(b"\r\n\r\n")
        doc = json.loads(payload)
        if int(head.split()[1]) >= 300:
            raise RuntimeError(f"{method} {path}: {doc.get('error')}")
        if doc.get("type") == "async":  # a background operation: its work is part of the request
            op = self.api("GET", f"{doc['operation']}/wait?timeout=60")
            if op.get("status") != "Success":
                raise RuntimeError(f"{method} {path}: {op.get('err')}")
            return op.get("metadata")
        return doc.get("metadata")


# --------------------------------------------------------------------------- the three layers


def time_cli(p: Pincus, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"add": [], "remove": [], "pair": []}
    for _ in range(n):
        t0 = time.perf_counter()
        p.cli("config", "device", "add", "c1", "eth1", "nic", "network=phys0")
        t1 = time.perf_counter()
        p.cli("config", "device", "remove", "c1", "eth1")
        t2 = time.perf_counter()
        out["add"].append(t1 - t0)
        out["remove"].append(t2 - t1)
        out["pair"].append(t2 - t0)
    return out


def put_body(inst: dict[str, Any], devices: dict[str, Any]) -> dict[str, Any]:
    # What the CLI sends: config without volatile keys, the whole device map.
    config = {k: v for k, v in (inst.get("config") or {}).items() if not k.startswith("volatile.")}
    return {"config": config, "devices": devices, "description": inst.get("description", "")}


def time_api(p: Pincus, n: int) -> dict[str, list[float]]:
    keys = ("add", "remove", "pair", "add: GET", "add: PUT", "remove: GET", "remove: PUT")
    out: dict[str, list[float]] = {k: [] for k in keys}
    path = "/1.0/instances/c1"
    for _ in range(n):
        t0 = time.perf_counter()
        inst = p.api("GET", path)
        t1 = time.perf_counter()
        devices = {**inst["devices"], "eth1": {"type": "nic", "network": "phys0"}}
        p.api("PUT", path, put_body(inst, devices))
        t2 = time.perf_counter()
        inst = p.api("GET", path)
        t3 = time.perf_counter()
        devices = {k: v for k, v in inst["devices"].items() if k != "eth1"}
        p.api("PUT", path, put_body(inst, devices))
        t4 = time.perf_counter()
        values = (t2 - t0, t4 - t2, t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        for key, value in zip(keys, values, strict=True):
            out[key].append(value)
    return out


def time_cli_startup(p: Pincus, n: int) -> dict[str, list[float]]:
    """What a command costs besides its requests: bare Python, and a one-GET command."""
    out: dict[str, list[float]] = {"python -c pass": [], "pincus config device list c1": []}
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out["python -c pass"].append(time.perf_counter() - t)
        t = time.perf_counter()
        p.cli("config", "device", "list", "c1")
        out["pincus config device list c1"].append(time.perf_counter() - t)
    return out


def floor_inner(n: int, pid: int, bridge: str, tag: str) -> None:
    """Run inside the daemon's namespace: the same veth, raw netlink, n times; JSON samples on stdout."""
    sys.path.insert(0, str(REPO / "src"))
    from pincus.host import links

    ns = f"/proc/{pid}/ns/net"  # c1's netns, from anywhere (pincusd's handle is in its own mount ns)
    host = f"veth{tag}fl"

    def add() -> None:
        links.create_veth_into_netns(host, "eth1", ns)
        links.set_master(host, bridge)
        links.set_up(host)

    add()  # warm-up: sockets, the helper thread that enters c1's netns
    links.delete_link(host)
    out: dict[str, list[float]] = {"add": [], "remove": [], "pair": []}
    for _ in range(n):
        t0 = time.perf_counter()
        add()
        t1 = time.perf_counter()
        links.delete_link(host)
        t2 = time.perf_counter()
        out["add"].append(t1 - t0)
        out["remove"].append(t2 - t1)
        out["pair"].append(t2 - t0)
    print(json.dumps(out))


def time_floor(ns: str, n: int, pid: int, bridge: str, tag: str) -> dict[str, list[float]]:
    argv = ["ip", "netns", "exec", ns, sys.executable, __file__, "-n", str(n), "--floor", str(pid),
            "--bridge", bridge, "--tag", tag]  # fmt: skip
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout
    result: dict[str, list[float]] = json.loads(out)
    return result


def profile_inner(n: int, work: Path, bridge: str) -> None:
    """Run inside the namespace: the daemon's own code for the same add/remove, in this process
    (no HTTP, its own PINCUS_DIR and container), under cProfile; prints where the time goes."""
    import cProfile
    import pstats

    sys.path.insert(0, str(REPO / "src"))
    from pincus.db.store import Store
    from pincus.events import EventHub
    from pincus.host.features import probe_kernel_features
    from pincus.server.daemon import daemon_tag
    from pincus.server.server import Server
    from pincus.state import State

    sys.path.insert(0, str(REPO))
    from tests.imagelib import busybox_image

    state_dir = work / "profiled"
    state_dir.mkdir(mode=0o711)
    store = Store(state_dir / "pincus.db")
    state = State(dir=state_dir, store=store, events=EventHub(), features=probe_kernel_features(),
                  tag=daemon_tag(state_dir))  # fmt: skip
    server = Server(state)
    networks, instances, images = server.networks, server.instances, server.images
    server.storage.start()
    images.start()
    created = started = False
    fingerprint = ""
    try:
        networks.create({"name": "phys0", "type": "physical", "config": {"parent": bridge}})
        with open(busybox_image(), "rb") as body:  # the test image, as `pincus image import` sends it
            fingerprint = images.add(images.receive(body, "application/octet-stream"), {})["fingerprint"]
        source = {"type": "image", "fingerprint": fingerprint}
        instances.create({"name": "p1", "devices": {}, "source": source})
        created = True
        instances.start("p1")
        started = True
        with open(work / PIDS_FILE, "a") as f:
            f.write(f"{instances.state_of('p1')['pid']}\n")

        def pair() -> None:
            inst = instances.get("p1")
            devices = {**inst["devices"], "eth1": {"type": "nic", "network": "phys0"}}
            instances.update("p1", put_body(inst, devices), patch=False)
            inst = instances.get("p1")
            devices = {k: v for k, v in inst["devices"].items() if k != "eth1"}
            instances.update("p1", put_body(inst, devices), patch=False)

        pair()  # warm-up, as for the daemon
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        for _ in range(n):
            pair()
        prof.disable()
        print(f"in-process add+remove (no HTTP): {(time.perf_counter() - t) * 1000 / n:.1f} ms per pair, "
              f"{n} pairs under cProfile\n")  # fmt: skip
        stats = pstats.Stats(prof)
        stats.sort_stats("cumulative").print_stats(r"pincus/(server|instances|devices|networks|host|db)", 30)
        stats.sort_stats("tottime").print_stats(15)
    finally:
        if started:
            instances.stop("p1", 0.0, True)
        if created:
            instances.delete("p1")
        if fingerprint:
            images.delete(fingerprint)
        networks.delete("phys0")
        store.close()


# --------------------------------------------------------------------------- cleanup


def kill_leftovers(ns: str, work: Path, init_pid: int) -> None:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()] + ([init_pid] if init_pid else [])
    with contextlib.suppress(FileNotFoundError):
        pids += [int(p) for p in (work / PIDS_FILE).read_text().split()]
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        # Only what this bench started: a reused pid must not be killed.
        if str(work).encode() in cmdline or b"container_init" in cmdline or b"pincusd" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def discard(p: Pincus, ns: str, work: Path, init_pid: int = 0) -> None:
    """The end of every benchmark's run: its pincusd stopped, whatever of it is left killed, its
    namespace and work directory removed."""
    p.stop()
    kill_leftovers(ns, work, init_pid)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_benchmark(main: Callable[[], int | None], *failures: type[Exception]) -> NoReturn:
    """Run MAIN, which cleans up in its own `finally`: `kill` cleans up as Ctrl-C does, and one of
    FAILURES ends the run with exit status 1 after that cleanup."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    except failures as e:
        print(f"FAILED (cleaned up): {e}", file=sys.stderr)
        sys.exit(1)


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="add+remove pairs per layer (default 20)")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also run the daemon's add/remove in-process under cProfile and print the top",
    )
    ap.add_argument("--floor", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--profile-inner", help=argparse.SUPPRESS)
    ap.add_argument("--bridge", help=argparse.SUPPRESS)
    ap.add_argument("--tag", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor:
        floor_inner(args.n, args.floor, args.bridge, args.tag)
        return
    if args.profile_inner:
        profile_inner(args.n, Path(args.profile_inner), args.bridge)
        return
    tag = "d" + secrets.token_hex(2)
    ns, lan = f"{tag}dev", f"{tag}lan"
    work = Path(tempfile.mkdtemp(prefix=f"pincus-bench-{tag}-"))
    work.chmod(0o711)
    p = Pincus(ns, work)
    init_pid = 0
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        for cmd in (["link", "set", "lo", "up"], ["link", "add", lan, "type", "bridge"],
                    ["link", "set", lan, "up"]):  # fmt: skip
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        p.start()
        p.cli("network", "create", "phys0", "--type=physical", f"parent={lan}")
        p.cli("launch", IMAGE, "c1")
        init_pid = int(p.api("GET", "/1.0/instances/c1/state")["pid"])
        # Warm-up: the daemon's first NIC loads libnftables, makes sockets and so on.
        time_cli(p, 1)
        time_api(p, 1)

        t = time.perf_counter()
        cli = time_cli(p, args.n)
        api = time_api(p, args.n)
        startup = time_cli_startup(p, args.n)
        floor = time_floor(ns, args.n, init_pid, lan, tag)
        print(f"{args.n} add+remove pairs per layer in {time.perf_counter() - t:.1f} s "
              f"(pincusd pid {p.proc.pid if p.proc else 0}, c1 init pid {init_pid})\n")  # fmt: skip
        report(cli, api, startup, floor)
        if args.profile:
            print()
            sys.stdout.flush()
            argv = [sys.executable, __file__, "-n", str(args.n), "--profile-inner", str(work)]
            subprocess.run(["ip", "netns", "exec", ns, *argv, "--bridge", lan], check=True, timeout=300)
    finally:
        if p.proc is not None and p.proc.poll() is None:
            if not init_pid:  # interrupted between launch and reading the pid
                with contextlib.suppress(Exception):
                    init_pid = int(p.api("GET", "/1.0/instances/c1/state")["pid"])
            p.cli("delete", "c1", "-f", check=False)
        p.stop()
        kill_leftovers(ns, work, init_pid)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def report(cli: dict[str, list[float]], api: dict[str, list[float]], startup: dict[str, list[float]],
           floor: dict[str, list[float]]) -> None:  # fmt: skip
    floor_pair = ms_stats(floor["pair"])[0]
    head = f"{'(ms)':<40}{'median':>9}{'p90':>9}{'vs floor':>11}"
    print(head)
    print("-" * len(head))
    for layer, data in (("CLI", cli), ("API", api), ("floor", floor)):
        for op in ("pair", "add", "remove"):
            print(row(f"{layer} {op}", data[op], ms_stats(floor[op])[0]))
    for key in ("add: GET", "add: PUT", "remove: GET", "remove: PUT"):
        print(row(f"API {key}", api[key]))
    for key, samples in startup.items():
        print(row(key, samples))
    cli_pair, api_pair = ms_stats(cli["pair"])[0], ms_stats(api["pair"])[0]
    print()
    print(f"CLI pair {cli_pair:.1f} ms = {api_pair:.1f} ms in the API (daemon + socket, "
          f"{100 * api_pair / cli_pair:.0f}%) + {cli_pair - api_pair:.1f} ms of client processes "
          f"({100 * (cli_pair - api_pair) / cli_pair:.0f}%)")  # fmt: skip
    print(f"API pair / floor: {api_pair / floor_pair:.1f}x;  CLI pair / floor: {cli_pair / floor_pair:.1f}x")
    print("pincus against LXD 5.0.2, both measured in one run: bench/bench_go_client.py")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
