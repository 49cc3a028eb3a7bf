"""A cgroup per container: limits in the kernel's own cgroup files, live updates, removal, and
limits that hold against a memory hog and a fork bomb. This host runs the v1 (hybrid) layout; the
same limits in cgroup2 files are checked in the guest kernel (tests/guestkernel/test_cgroup_v2.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pincus.host import cgroups
from pincus.server.daemon import daemon_tag
from tests import cgroupfiles as cg
from tests.integration.helpers import in_container, wait_for
from tests.pincus_testlib import Daemon

pytestmark = pytest.mark.skipif(cg.is_v2(), reason="this host's layout is v1; v2 runs in the guest kernel")

CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids")
MIB = 1024 * 1024


def _pid(daemon: Daemon, name: str) -> int:
    _, doc = daemon.api("GET", f"/1.0/instances/{name}/state")
    pid = int(doc["metadata"]["pid"])
    assert pid > 0
    return pid


def _suffix(daemon: Daemon, name: str) -> str:
    return f"/pincus-{daemon_tag(daemon.dir)}/{name}"


def _group_dirs(daemon: Daemon, name: str) -> list[Path]:
    """Where the group of NAME is or was, in each hierarchy (under the test's own group there, as
    the daemon is this test's child)."""
    own = cg.groups(os.getpid())
    return [cg.ROOT / c / own[c].lstrip("/") / _suffix(daemon, name).lstrip("/") for c in CONTROLLERS]


def test_limits_land_in_the_containers_cgroup_and_follow_config_set(daemon: Daemon) -> None:
    daemon.cli(
        "launch", "c1",
        "-c", "limits.cpu=1", "-c", "limits.cpu.allowance=25ms/100ms",
        "-c", "limits.memory=64MiB", "-c", "limits.processes=50",
    )  # fmt: skip
    pid = _pid(daemon, "c1")
    where = cg.groups(pid)
    for controller in CONTROLLERS:
        assert where[controller].endswith(_suffix(daemon, "c1")), where
    assert cg.read(pid, "cpuset", "cpuset.cpus") == "0"
    assert cg.read(pid, "cpu", "cpu.cfs_quota_us") == "25000"
    assert cg.read(pid, "cpu", "cpu.cfs_period_us") == "100000"
    assert cg.read(pid, "memory", "memory.limit_in_bytes") == str(64 * MIB)
    assert cg.read(pid, "pids", "pids.max") == "50"
    # A command run by exec is in the group too, so it counts against the limits.
    exec_view = in_container(daemon, "c1", "cat", "/proc/self/cgroup")
    assert f"pids:{where['pids']}" in exec_view and f"memory:{where['memory']}" in exec_view

    # Live: set, change and unset, each seen in the kernel's files at once.
    daemon.cli("config", "set", "c1", "limits.memory=128MiB", "limits.cpu=0-1", "limits.cpu.allowance=50%")
    assert cg.read(pid, "memory", "memory.limit_in_bytes") == str(128 * MIB)
    assert cg.read(pid, "cpuset", "cpuset.cpus") == "0-1"
    assert cg.read(pid, "cpu", "cpu.cfs_quota_us") == "-1"
    assert cg.read(pid, "cpu", "cpu.shares") == str(50 * 1024 // 100)
    daemon.cli("config", "unset", "c1", "limits.processes")
    assert cg.read(pid, "pids", "pids.max") == "max"
    daemon.cli("config", "set", "c1", "limits.memory=32MiB")
    assert cg.read(pid, "memory", "memory.limit_in_bytes") == str(32 * MIB)
    # A value the host cannot take changes nothing.
    msg = daemon.fails("config", "set", "c1", "limits.cpu=0-7")
    assert "not online" in msg and "limits.cpu" in msg
    assert cg.read(pid, "cpuset", "cpuset.cpus") == "0-1"
    assert daemon.cli("config", "get", "c1", "limits.cpu").stdout.strip() == "0-1"

    # Usage comes from the group: CPU time as cpuacct counts it (ns), at least what it was a moment ago.
    before = int(cg.read(pid, "cpuacct", "cpuacct.usage"))
    state = daemon.api("GET", "/1.0/instances/c1/state")[1]["metadata"]
    assert state["cpu"]["usage"] >= before > 0
    assert state["memory"]["usage"] > 0
    dirs = _group_dirs(daemon, "c1")
    assert all(d.is_dir() for d in dirs)
    daemon.cli("stop", "c1", "-f")
    assert not any(d.exists() for d in dirs)
    assert not any(d.parent.exists() for d in dirs)  # the daemon's pincus-<tag> parent goes too


def test_memory_hog_inside_is_oom_killed_and_the_host_survives(daemon: Daemon) -> None:
    daemon.cli("launch", "c1", "-c", "limits.memory=32MiB")
    pid = _pid(daemon, "c1")
    # 256 MiB of touched memory, eight times the limit; bounded if the limit failed.
    hog = daemon.cli(
        "exec", "c1", "--", "python3", "-c", "b = b'x' * (256 << 20); print(len(b))", check=False
    )
    assert hog.returncode == 137, (hog.returncode, hog.stdout, hog.stderr)  # SIGKILL
    assert cg.flat(cg.read(pid, "memory", "memory.oom_control")).get("oom_kill", 0) >= 1
    assert int(cg.read(pid, "memory", "memory.max_usage_in_bytes")) <= 32 * MIB
    # The container, the daemon and the host carry on.
    assert in_container(daemon, "c1", "echo", "alive").strip() == "alive"
    assert "c1" in daemon.cli("list", "--format", "csv").stdout
    daemon.cli("stop", "c1", "-f")


def test_limits_processes_caps_a_fork_bomb(daemon: Daemon) -> None:
    daemon.cli("launch", "c1", "-c", "limits.processes=12")
    pid = _pid(daemon, "c1")
    # Bounded: 40 short sleepers, far above the cap; forks past it fail, the loop ends anyway.
    script = (
        "i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; cat /sys/fs/cgroup/pids/pids.current; wait"
    )
    started = time.monotonic()
    r = daemon.cli("exec", "c1", "--", "sh", "-c", script, check=False, timeout=60)
    assert time.monotonic() - started < 30
    assert "fork" in r.stderr.lower() or "resource temporarily unavailable" in r.stderr.lower(), r.stderr
    events = cg.flat(cg.read(pid, "pids", "pids.events"))
    assert events.get("max", 0) >= 1, events
    assert int(cg.read(pid, "pids", "pids.current")) <= 12
    # The cap is a count at once, not in total: after the sleepers exit, forks work again.
    wait_for(lambda: int(cg.read(pid, "pids", "pids.current")) <= 2, 10, "sleepers gone")
    assert in_container(daemon, "c1", "sh", "-c", "true & wait; echo ok").strip() == "ok"
    daemon.cli("stop", "c1", "-f")


def test_a_failed_start_leaves_no_cgroup(daemon: Daemon, prefix: str) -> None:
    daemon.cli("init", "c1", "-c", "limits.cpu=0-7")
    msg = daemon.fails("start", "c1")
    assert 'limits.cpu": CPU 2-7 is not online' in msg
    daemon.cli("config", "set", "c1", "limits.cpu=1")
    daemon.cli("config", "device", "add", "c1", "eth0", "nic", "nictype=bridged", f"parent={prefix}gone")
    daemon.fails("start", "c1")
    assert not any(d.exists() for d in _group_dirs(daemon, "c1"))
    assert not any(d.parent.exists() for d in _group_dirs(daemon, "c1"))


def test_a_restarted_daemon_removes_leftover_groups_and_keeps_running_ones(daemon: Daemon) -> None:
    daemon.cli("launch", "c1", "-c", "limits.processes=30")
    pid = _pid(daemon, "c1")
    ghost = [d.parent / "ghost" for d in _group_dirs(daemon, "c1")]
    for d in ghost:
        d.mkdir()
    daemon.stop()
    daemon.start()
    assert not any(d.exists() for d in ghost)
    assert cg.read(pid, "pids", "pids.max") == "30"
    daemon.cli("stop", "c1", "-f")


def test_delegate_gives_the_mapped_root_the_systemd_group(daemon: Daemon) -> None:
    daemon.cli("launch", "c1")
    pid = _pid(daemon, "c1")
    tag = daemon_tag(daemon.dir)
    systemd = cg.ROOT / "systemd" / cg.groups(pid)["name=systemd"].lstrip("/")
    assert systemd.name == "c1" and systemd.parent.name == f"pincus-{tag}"
    cgroups.delegate(tag, "c1", 1_000_000, 1_000_000)
    for path in (systemd, systemd / "cgroup.procs", systemd / "tasks"):
        assert (path.stat().st_uid, path.stat().st_gid) == (1_000_000, 1_000_000), path
    # Only that hierarchy: the limits stay root's.
    assert (cg.group_dir(pid, "memory") / "memory.limit_in_bytes").stat().st_uid == 0
    daemon.cli("stop", "c1", "-f")
    assert not systemd.exists()


def test_a_profile_change_reaches_the_cgroup_of_a_running_container(daemon: Daemon) -> None:
    daemon.cli("profile", "create", "small")
    daemon.cli("profile", "set", "small", "limits.processes=20")
    daemon.cli("launch", "c1", "-p", "small")
    pid = _pid(daemon, "c1")
    assert cg.read(pid, "pids", "pids.max") == "20"
    daemon.cli("profile", "set", "small", "limits.processes=25")
    assert cg.read(pid, "pids", "pids.max") == "25"
    # The instance's own key wins over the profile's, and leaving it hands back to the profile.
    daemon.cli("config", "set", "c1", "limits.processes=30")
    assert cg.read(pid, "pids", "pids.max") == "30"
    daemon.cli("config", "unset", "c1", "limits.processes")
    assert cg.read(pid, "pids", "pids.max") == "25"
    # A profile value the host cannot run is refused, and the running limit stays.
    assert "not online" in daemon.fails("profile", "set", "small", "limits.cpu=0-9")
    daemon.cli("profile", "unset", "small", "limits.processes")
    assert cg.read(pid, "pids", "pids.max") == "max"
    daemon.cli("stop", "c1", "-f")
