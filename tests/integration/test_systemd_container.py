"""systemd as a container's init (Debian 12's, from scripts/build-debian-image.sh), unprivileged: it
reaches its normal state on a cgroup2 tree of its own, rooted at the container's group and delegated to
the container's root, while the limits above it stay the host's (real kernel)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests import cgroupfiles as cg
from tests.imagelib import debian_image
from tests.integration.helpers import config
from tests.pincus_testlib import Daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _pid(daemon: Daemon, name: str) -> int:
    pid = daemon.api("GET", f"/1.0/instances/{name}/state")[1]["metadata"]["pid"]
    assert isinstance(pid, int) and pid > 1
    return pid


def _exec(daemon: Daemon, name: str, *argv: str) -> str:
    r = daemon.cli("exec", name, "--", *argv, check=False)
    return r.stdout.strip()


def _v2_group(pid: int) -> Path:
    """The process's group in the cgroup2 tree (v1 hosts: the unified tree beside the v1 ones)."""
    base = cg.ROOT if cg.is_v2() else cg.ROOT / "unified"
    return base / cg.groups(pid)[""].lstrip("/")


def _system_state(daemon: Daemon, name: str, timeout: float = 90.0) -> str:
    """systemctl is-system-running once systemd has finished starting up ("running" or "degraded")."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = _exec(daemon, name, "systemctl", "is-system-running")
        if state in ("running", "degraded"):
            return state
        time.sleep(0.5)
    return state


def test_systemd_reaches_running_in_an_unprivileged_container(daemon: Daemon) -> None:
    daemon.cli("image", "import", str(debian_image()), "--alias", "debian")
    daemon.cli("launch", "debian", "s1", "-c", "limits.memory=256MiB", "-c", "limits.processes=500")
    try:
        pid = _pid(daemon, "s1")
        base = int(config(daemon, "s1")["volatile.idmap.current"].split('"Hostid":')[1].split(",")[0])
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", str(base), "65536"]
        assert os.readlink(f"/proc/{pid}/exe") == "/usr/lib/systemd/systemd"
        state = _system_state(daemon, "s1")
        failed = _exec(daemon, "s1", "systemctl", "--failed", "--no-legend", "--plain")
        assert state == "running", f"systemd is {state!r}; failed units:\n{failed}"
        # Inside: a cgroup2 tree whose root is the container's group, with systemd's own groups in it.
        assert _exec(daemon, "s1", "stat", "-f", "-c", "%T", "/sys/fs/cgroup") == "cgroup2fs"
        assert _exec(daemon, "s1", "cat", "/proc/1/cgroup").splitlines()[-1] == "0::/init.scope"
        # Outside: those groups under the container's, owned by its root; the group itself is the
        # host's to limit (its limit files stay root's).
        scope = _v2_group(pid)
        assert scope.name == "init.scope" and scope.parent.name == "s1"
        assert (scope.stat().st_uid, scope.parent.stat().st_uid) == (base, base)
        assert (scope.parent / "system.slice").is_dir()
        assert (cg.group_dir(pid, "memory").stat().st_uid, cg.read(pid, "pids", "pids.max")) == (0, "500")
        limit_file = "memory.max" if cg.is_v2() else "memory.limit_in_bytes"
        assert cg.read(pid, "memory", limit_file) == str(256 * 1024 * 1024)
        assert (cg.group_dir(pid, "memory") / limit_file).stat().st_uid == 0
        # The limit cannot be lifted from inside.
        assert daemon.cli("exec", "s1", "--", "sh", "-c", "echo max > /sys/fs/cgroup/memory.max",
                          check=False).returncode != 0  # fmt: skip
        # An exec joins init's group (a leaf), not the container's (which v2 keeps process-free).
        assert _exec(daemon, "s1", "cat", "/proc/self/cgroup").splitlines()[-1] == "0::/init.scope"
        assert _exec(daemon, "s1", "hostname") == "s1"
        assert _exec(daemon, "s1", "cat", "/etc/pincus-image-marker") == "pincus debian-systemd image"
        # The console is read by the daemon into the instance's log: systemd's boot is there, and
        # nothing made it wait on a console nobody held (it boots in about a second here).
        on_disk = (daemon.dir / "instances" / "s1" / "console.log").read_text(errors="replace")
        assert "Welcome to" in on_disk and "Debian GNU/Linux 12" in on_disk
        # Incus's console log: `console --show-log`, and a clear that empties the file.
        assert "Welcome to" in daemon.cli("console", "s1", "--show-log").stdout
        assert daemon.api("DELETE", "/1.0/instances/s1/console")[0] == 200
        assert (daemon.dir / "instances" / "s1" / "console.log").stat().st_size == 0
        assert "only --show-log" in daemon.fails("console", "s1")
        boot = _exec(daemon, "s1", "systemd-analyze", "time")
        assert "Startup finished" in boot, boot
        groups = [p for p in (cg.group_dir(pid, "memory"), scope.parent) if p.exists()]
    finally:
        # A clean stop: systemd's halt signal (SIGRTMIN+3) and its own shutdown.
        started = time.monotonic()
        daemon.cli("stop", "s1", "--timeout", "60")
        took = time.monotonic() - started
    assert "s1,STOPPED" in daemon.cli("list", "--format=csv").stdout
    assert took < 30, f"systemd took {took:.1f} s to stop"
    assert not Path(f"/proc/{pid}").exists()
    # Every group is gone, systemd's sub-groups included.
    assert [p for p in groups if p.exists()] == []
    # It starts again on the same volume and reaches the same state.
    daemon.cli("start", "s1")
    try:
        assert _system_state(daemon, "s1") == "running"
    finally:
        daemon.cli("stop", "s1", "-f")
