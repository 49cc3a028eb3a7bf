"""kill -9 of pincusd at every host call of a start, a hot-plug and a stop, then a restart: the
instance is either running with all its NICs or stopped with nothing left, exactly as a clean
start or stop leaves it (tests/faults/run.py's snapshot: links, addresses, routes, bridge ports,
qdiscs, nft, sysctls, processes, files, database), and the client says `Error:`, not a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.run import diff
from tests.pincus_testlib import NSEXEC, Daemon, NetNS, cleanup_dir, unique_prefix

NET = "cnet0"
MARKER = "pincus busybox image"  # the test image's /etc/pincus-image-marker (scripts/build-image.sh)
NIC = [
    "nic", f"network={NET}", "name=eth0", "ipv4.address=10.250.92.7", "security.ipv4_filtering=true",
    "limits.ingress=10Mbit",
]  # fmt: skip


class CrashDaemon(Daemon):
    """A pincusd that kills itself at the Nth host call while TRIGGER holds N (0: records calls)."""

    def __init__(self, ns: NetNS, pincus_dir: Path, trigger: Path) -> None:
        super().__init__(ns, pincus_dir)
        self.trigger = trigger

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "PINCUS_TEST_CRASH_FILE": str(self.trigger)}

    def snapshot(self) -> dict[str, Any]:
        r = subprocess.run(
            [*NSEXEC, self.ns.name, sys.executable, "-m", "tests.faults.snap", str(self.dir)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        return dict(json.loads(r.stdout))

    def calls_of(self, *args: str) -> list[str]:
        """The host calls the daemon makes for `pincus ARGS`."""
        record = Path(f"{self.trigger}.calls")
        record.unlink(missing_ok=True)
        self.trigger.write_text("0")
        try:
            self.cli(*args)
        finally:
            self.trigger.unlink()
        return record.read_text().split()

    def crash_during(self, n: int, *args: str) -> None:
        """`pincus ARGS` with the daemon killed at its Nth host call; then a fresh daemon."""
        self.trigger.write_text(str(n))
        r = self.cli(*args, check=False)
        assert self.proc is not None
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pincusd did not die at call {n} of {args}: {r.stdout}{r.stderr}") from None
        finally:
            self.trigger.unlink()
        self.proc = None
        assert "Traceback" not in r.stderr, r.stderr
        # The daemon's own background calls (its instance monitor) count too: a kill may come
        # after the operation already answered.
        assert r.returncode == 0 or r.stderr.startswith("Error:"), (r.returncode, r.stderr)
        self.start()

    def status(self, name: str) -> str:
        _, doc = self.api("GET", f"/1.0/instances/{name}")
        return str(doc["metadata"]["status"])


@pytest.fixture
def crashy() -> Iterator[CrashDaemon]:
    ns = NetNS(f"{unique_prefix()}cr")
    root = Path(tempfile.mkdtemp(prefix="pincus-crash-"))
    root.chmod(0o711)  # dnsmasq, as nobody, reaches its hosts files below
    d = CrashDaemon(ns, root / "d", root / "crash")
    try:
        d.start()
        d.cli("network", "create", NET, "ipv4.address=10.250.92.1/24", "ipv6.address=none")
        yield d
    finally:
        d.shut_down()
        ns.delete()
        cleanup_dir(root)


def _assert_same(expected: dict[str, Any], got: dict[str, Any], what: str) -> None:
    problems = diff(expected, got)
    assert problems == [], f"{what}:\n" + "\n".join(problems)


def _each_crash(d: CrashDaemon, args: tuple[str, ...], settle: Callable[[int], None]) -> int:
    calls = d.calls_of(*args)
    settle(0)
    for n in range(1, len(calls) + 1):
        d.crash_during(n, *args)
        settle(n)
    return len(calls)


def test_kill_at_every_host_call_of_a_start_and_a_stop(crashy: CrashDaemon) -> None:
    d = crashy
    # With limits, so a kill anywhere also leaves the container's cgroup as a clean start or stop does.
    d.cli("init", "busybox", "c1", "--no-profiles", "-c", "limits.memory=64MiB", "-c", "limits.processes=100")
    d.cli("config", "device", "add", "c1", "eth0", *NIC)
    # A first start leaves what lasts (the NIC's MAC and static allocation, the bridge's link-local
    # address once a port was up): the states compared are those of the second start and stop.
    d.cli("start", "c1")
    d.cli("stop", "-f", "c1")
    stopped = d.snapshot()
    d.cli("start", "c1")
    running = d.snapshot()
    d.cli("stop", "-f", "c1")
    _assert_same(stopped, d.snapshot(), "a clean stop")

    def settle_start(n: int) -> None:
        if d.status("c1") == "Running":
            _assert_same(running, d.snapshot(), f"running after a kill at call {n} of a start")
            d.cli("stop", "-f", "c1")
        _assert_same(stopped, d.snapshot(), f"stopped after a kill at call {n} of a start")

    starts = _each_crash(d, ("start", "c1"), settle_start)

    d.cli("start", "c1")

    def settle_stop(n: int) -> None:
        if d.status("c1") == "Running":
            _assert_same(running, d.snapshot(), f"running after a kill at call {n} of a stop")
        else:
            _assert_same(stopped, d.snapshot(), f"stopped after a kill at call {n} of a stop")
            d.cli("start", "c1")

    stops = _each_crash(d, ("stop", "-f", "c1"), settle_stop)
    print(f"killed at each of {starts} host calls of a start and {stops} of a stop")


def test_kill_at_every_host_call_of_a_hot_plug_and_an_unplug(crashy: CrashDaemon) -> None:
    d = crashy
    d.cli("init", "busybox", "c1", "--no-profiles")
    d.cli("start", "c1")
    add = ("config", "device", "add", "c1", "eth0", *NIC)
    remove = ("config", "device", "remove", "c1", "eth0")
    d.cli(*add)
    d.cli(*remove)  # what lasts of a first plug (the bridge's link-local address) is in both states
    without = d.snapshot()
    d.cli(*add)
    plugged = d.snapshot()
    d.cli(*remove)
    _assert_same(without, d.snapshot(), "a clean unplug")

    def devices() -> dict[str, Any]:
        _, doc = d.api("GET", "/1.0/instances/c1")
        return dict(doc["metadata"]["devices"])

    def settle_plug(n: int) -> None:
        assert d.status("c1") == "Running"
        if "eth0" in devices():
            _assert_same(plugged, d.snapshot(), f"plugged after a kill at call {n} of a hot-plug")
            d.cli(*remove)
        _assert_same(without, d.snapshot(), f"unplugged after a kill at call {n} of a hot-plug")

    plugs = _each_crash(d, add, settle_plug)
    d.cli(*add)

    def settle_unplug(n: int) -> None:
        assert d.status("c1") == "Running"
        if "eth0" in devices():
            _assert_same(plugged, d.snapshot(), f"plugged after a kill at call {n} of an unplug")
        else:
            _assert_same(without, d.snapshot(), f"unplugged after a kill at call {n} of an unplug")
            d.cli(*add)

    unplugs = _each_crash(d, remove, settle_unplug)
    print(f"killed at each of {plugs} host calls of a hot-plug and {unplugs} of an unplug")


@pytest.mark.timeout(1200)
def test_kill_at_every_host_call_of_a_rootfs_container_start(crashy: CrashDaemon) -> None:
    """The image's init does not name the state directory: the recorded pid 1 is what a restarted
    daemon kills; the volume's shift is recorded so no restart shifts it twice."""
    d = crashy
    d.cli("init", "busybox", "c1", "--no-profiles")  # its root: the image's, on the default pool
    d.cli("config", "device", "add", "c1", "root", "disk", "path=/", "pool=default")
    d.cli("config", "device", "add", "c1", "eth0", *NIC)
    d.cli("start", "c1")
    d.cli("stop", "-f", "c1")
    stopped = d.snapshot()
    d.cli("start", "c1")
    running = d.snapshot()
    d.cli("stop", "-f", "c1")

    def settle_start(n: int) -> None:
        if d.status("c1") == "Running":
            _assert_same(running, d.snapshot(), f"running after a kill at call {n} of a start")
            assert d.cli("exec", "c1", "--", "cat", "/etc/pincus-image-marker").stdout.strip() == MARKER
            d.cli("stop", "-f", "c1")
        _assert_same(stopped, d.snapshot(), f"stopped after a kill at call {n} of a start")

    starts = _each_crash(d, ("start", "c1"), settle_start)
    print(f"killed at each of {starts} host calls of a rootfs container start")
