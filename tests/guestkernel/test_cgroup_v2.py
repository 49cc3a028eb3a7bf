"""The same container limits in cgroup2 files: Debian 12's default layout, the guest kernel's.

Runs inside the test guest only (see conftest.py). The guest's init mounts no cgroup2: the module
fixture mounts it at /sys/fs/cgroup before the daemon starts, as a systemd host has it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from pincus.server.daemon import daemon_tag
from tests import cgroupfiles as cg
from tests.integration.helpers import in_container
from tests.pincus_testlib import Daemon

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def cgroup2() -> Iterator[None]:
    mounted = False
    if not cg.is_v2():
        subprocess.run(["mount", "-t", "cgroup2", "cgroup2", str(cg.ROOT)], check=True)
        mounted = True
    yield
    if mounted:
        subprocess.run(["umount", "-l", str(cg.ROOT)], check=False)


def test_limits_land_in_cgroup2_files_live_and_a_hog_is_oom_killed(cgroup2: None, daemon: Daemon) -> None:
    assert cg.is_v2()
    daemon.cli(
        "launch", "c1",
        "-c", "limits.cpu=1", "-c", "limits.cpu.allowance=25ms/100ms",
        "-c", "limits.memory=48MiB", "-c", "limits.processes=40",
    )  # fmt: skip
    _, doc = daemon.api("GET", "/1.0/instances/c1/state")
    pid = int(doc["metadata"]["pid"])
    suffix = f"/pincus-{daemon_tag(daemon.dir)}/c1"
    assert cg.groups(pid)[""].endswith(suffix), cg.groups(pid)
    group = cg.group_dir(pid, "")
    assert cg.read(pid, "", "cpuset.cpus") == "0"
    assert cg.read(pid, "", "cpu.max") == "25000 100000"
    assert cg.read(pid, "", "memory.max") == str(48 * MIB)
    assert cg.read(pid, "", "pids.max") == "40"
    assert f"0::{cg.groups(pid)['']}" in in_container(daemon, "c1", "cat", "/proc/self/cgroup")

    daemon.cli("config", "set", "c1", "limits.cpu.allowance=50%", "limits.memory=32MiB")
    assert cg.read(pid, "", "cpu.max") == "max 100000"
    assert cg.read(pid, "", "cpu.weight") == "50"
    assert cg.read(pid, "", "memory.max") == str(32 * MIB)
    daemon.cli("config", "unset", "c1", "limits.processes")
    assert cg.read(pid, "", "pids.max") == "max"

    hog = daemon.cli("exec", "c1", "--", "python3", "-c", "b = b'x' * (64 << 20)", check=False)
    assert hog.returncode == 137, (hog.returncode, hog.stderr)
    assert cg.flat(cg.read(pid, "", "memory.events")).get("oom_kill", 0) >= 1
    # The guest has no echo binary: python3, as the hog, is what it has.
    assert in_container(daemon, "c1", "python3", "-c", "print('alive')").strip() == "alive"

    daemon.cli("stop", "c1", "-f")
    assert not group.exists()
    assert not group.parent.exists()
    assert os.path.isdir(cg.ROOT)
