"""procstat against real pid namespaces: one pass over /proc for many inits says what one pass per
init says."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from pincus.host import procstat


def _child_of(pid: int) -> int:
    for _ in range(100):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} started no child")


@pytest.fixture
def inits() -> Iterator[list[int]]:
    """Three pid namespaces; the first runs two more processes besides its init."""
    outer = [
        subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", "sleep 60 & sleep 60 & wait"]
        )
    ]
    outer += [
        subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "60"]) for _ in range(2)
    ]
    inner: list[int] = []
    try:
        inner += [_child_of(p.pid) for p in outer]
        yield inner
    finally:
        for pid in inner:  # the init's death ends its namespace
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in outer:
            p.kill()
            p.wait()


def test_many_namespaces_in_one_pass_match_one_pass_each(inits: list[int]) -> None:
    time.sleep(0.2)  # the first namespace's two sleeps
    many = procstat.pid_namespaces_usage([*inits, 999_999_999])
    assert [many[pid].processes for pid in inits] == [3, 1, 1]
    assert many[999_999_999] == procstat.Usage(0, 0, 0)  # no such process
    for pid in inits:
        one = procstat.pid_namespace_usage(pid)
        assert one.processes == many[pid].processes
        assert many[pid].memory_bytes > 0
        assert abs(one.memory_bytes - many[pid].memory_bytes) < 4 << 20
