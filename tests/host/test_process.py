"""host/process.py against real processes: identity by pid and start time, pidfd waits, escalation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pincus.host import process, strays


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A child that ignores SIGTERM, so only SIGKILL ends it."""
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint(flush=True)\n"
    code += "time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout is not None
    p.stdout.readline()  # SIGTERM is ignored from here on
    yield p
    p.kill()
    p.wait()


def test_a_process_is_known_by_pid_and_start_time(child: subprocess.Popen[bytes]) -> None:
    started = process.start_time(child.pid)
    assert started is not None
    assert process.is_alive(child.pid, started)
    assert not process.is_alive(child.pid, started + 1)  # same pid, another process
    assert process.open_pidfd(child.pid, started + 1) is None
    assert "-c" in process.cmdline(child.pid)


def test_sigterm_ignored_escalates_to_sigkill_and_the_child_is_reaped(child: subprocess.Popen[bytes]) -> None:
    started = process.start_time(child.pid)
    assert started is not None
    fd = process.open_pidfd(child.pid, started)
    assert fd is not None
    try:
        assert not process.stop_and_wait(fd, [(signal.SIGTERM, 0.2)])  # ignored: still running
        assert process.is_alive(child.pid, started)
        t0 = time.monotonic()
        assert process.stop_and_wait(fd, [(signal.SIGTERM, 0.2), (signal.SIGKILL, 5)])
        assert time.monotonic() - t0 < 4
    finally:
        os.close(fd)
    assert process.exited(child.pid)  # a zombie until reaped
    assert not process.is_alive(child.pid, started)  # reaps our exited child
    assert process.read_stat(child.pid) is None


def test_open_pidfd_if_refuses_a_process_that_is_not_ours(child: subprocess.Popen[bytes]) -> None:
    assert process.open_pidfd_if(child.pid, lambda pid: False) is None
    fd = process.open_pidfd_if(child.pid, lambda pid: pid == child.pid)
    assert fd is not None
    os.close(fd)


def test_wait_gone_waits_for_a_killed_child_and_reaps_it(child: subprocess.Popen[bytes]) -> None:
    started = process.start_time(child.pid)
    assert started is not None
    assert not process.wait_gone(child.pid, started, 0.1)
    process.kill(child.pid, started)
    assert process.wait_gone(child.pid, started, 5)
    assert process.read_stat(child.pid) is None  # reaped, not a zombie


def test_strays_naming_a_state_dir_are_killed_and_others_left(tmp_path: Path) -> None:
    mine = tmp_path / "instances" / "c1"
    code = "import time\nprint(flush=True)\ntime.sleep(60)"
    stray = subprocess.Popen(
        [sys.executable, "-c", code, f"--state-dir={mine}", str(mine)], stdout=subprocess.PIPE
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "instances" / "c10")], stdout=subprocess.PIPE
    )
    try:
        for p in (stray, other):
            assert p.stdout is not None
            p.stdout.readline()
        assert strays.pids_naming(mine) == [stray.pid]
        assert strays.kill_naming(mine) == [stray.pid]
        assert stray.wait(5) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for p in (stray, other):
            p.kill()
            p.wait()
