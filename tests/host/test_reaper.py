"""The reaper: one thread reaps many children, reports their status, and survives odd cases."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from pincus.host import reaper


def _threads_named_reaper() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "reaper")


def test_many_children_are_reaped_by_one_thread_with_their_status() -> None:
    statuses: dict[int, int | None] = {}
    lock = threading.Lock()

    def record(pid: int) -> reaper.OnExit:
        def on_exit(status: int | None) -> None:
            with lock:
                statuses[pid] = status

        return on_exit

    children = [subprocess.Popen(["sh", "-c", f"sleep 0.2; exit {i % 7}"]) for i in range(40)]
    before = threading.active_count()
    watches = [reaper.watch(c, record(c.pid)) for c in children]
    assert threading.active_count() <= before + 1  # at most the reaper itself, once
    assert _threads_named_reaper() == 1
    for w in watches:
        assert w.join(10), f"pid {w.pid} not reaped"
    assert statuses == {c.pid: i % 7 for i, c in enumerate(children)}
    for i, c in enumerate(children):
        assert c.returncode == i % 7
        assert not os.path.exists(f"/proc/{c.pid}/stat") or _not_ours(c.pid)


def _not_ours(pid: int) -> bool:
    """A reused pid belongs to someone else: not a zombie child of ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return not (fields[0] == "Z" and int(fields[1]) == os.getpid())


def test_a_bare_pid_is_reaped_and_a_child_already_reaped_is_reported() -> None:
    child = subprocess.Popen(["sh", "-c", "exit 3"])
    got: list[int | None] = []
    w = reaper.watch(child.pid, got.append)
    assert w.join(10)
    assert got == [3]
    assert _not_ours(child.pid)

    gone = subprocess.Popen(["true"])
    gone.wait()
    seen: list[int | None] = []
    w = reaper.watch(gone, seen.append)
    assert w.join(10)
    assert seen == [0]  # Popen's stored status; on_exit ran on the reaper's thread


def test_a_failing_on_exit_does_not_stop_the_reaper() -> None:
    def boom(status: int | None) -> None:
        raise RuntimeError("boom")

    first = reaper.watch(subprocess.Popen(["true"]), boom)
    assert first.join(10)
    t = time.monotonic()
    second = reaper.watch(subprocess.Popen(["sh", "-c", "exit 5"]))
    assert second.join(10)
    assert time.monotonic() - t < 5
    assert _threads_named_reaper() == 1
