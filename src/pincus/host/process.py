"""Process identity: a process is its pid *and* its start time, so a recycled pid is never
mistaken for (or signalled as) one of ours; reaping, pidfd waits and kill-and-wait on top.

Containers' inits and QEMUs are known by pid and start time; dnsmasq, by its pid file and
command line; both end up here for what /proc and pidfds say about them.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pincus.errors import HostError


@dataclass(frozen=True)
class Stat:
    state: str  # field 3: "R", "S", ..., "Z" (zombie), "X" (dead)
    ppid: int  # field 4
    start_time: int  # field 22, clock ticks since boot


def read_pid_file(pid_file: Path) -> int | None:
    """The pid a daemon wrote to PID_FILE; None when there is none (or no pid in it)."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostError(f"read pid file {pid_file}: {e.strerror}") from e
    return int(text) if text.isdigit() and int(text) > 0 else None


def read_stat(pid: int) -> Stat | None:
    """What /proc/<pid>/stat says of pid, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as e:
        raise HostError(f"read /proc/{pid}/stat: {e.strerror}") from e
    # comm (field 2) may hold spaces and parentheses: split after its last ")".
    fields = data.rsplit(b")", 1)[1].split()
    return Stat(fields[0].decode(), int(fields[1]), int(fields[19]))


def start_time(pid: int) -> int | None:
    """The start time of pid (read it while pid is our unreaped child, so it cannot be reused)."""
    stat = read_stat(pid)
    return None if stat is None or stat.state in ("Z", "X") else stat.start_time


def exited(pid: int) -> bool:
    """Gone or a zombie: only then has the kernel closed its sockets (its cmdline empties earlier).
    A zombie holds no namespace, device or socket."""
    stat = read_stat(pid)
    return stat is None or stat.state in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    """The argv of pid; [] once it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]]


def reap(pid: int) -> None:
    """Collect pid's exit status if it is our exited child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int, started: int) -> bool:
    """Whether pid runs the process started at STARTED (and has not exited); reaps it if it is
    our exited child."""
    stat = read_stat(pid)
    if stat is None or stat.start_time != started:
        return False
    if stat.state in ("Z", "X"):
        if stat.ppid == os.getpid():
            reap(pid)
        return False
    return True


def open_pidfd_if(pid: int, ours: Callable[[int], bool]) -> int | None:
    """A pidfd for pid if OURS(pid) holds once it is open, else None (also when pid is gone).

    Checked after opening, so the check is of the process the pidfd names, and signals sent
    through it cannot hit a process that took over a recycled pid.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except OSError as e:
        raise HostError(f"open pidfd of pid {pid}: {e.strerror}") from e
    if not ours(pid):
        os.close(fd)
        return None
    return fd


def open_pidfd(pid: int, started: int) -> int | None:
    """A pidfd for exactly the process started at STARTED, exited or not; None when the pid is gone
    or reused.

    A zombie still counts: a multi-threaded leader (QEMU) turns Z before its other threads have
    exited, and only a poll on the pidfd says when the whole process is gone and can be reaped.
    """

    def same(p: int) -> bool:
        stat = read_stat(p)
        return stat is not None and stat.start_time == started

    return open_pidfd_if(pid, same)


def wait_pidfd(fd: int, timeout: float) -> bool:
    """Whether the process of pidfd FD has exited, every thread of it, within TIMEOUT seconds."""
    poller = select.poll()  # not select(): a daemon's fds may be numbered above 1024
    poller.register(fd, select.POLLIN)  # readable once the process has exited
    return bool(poller.poll(max(0.0, timeout) * 1000))


def signal_and_wait(fd: int, signo: int, timeout: float) -> bool:
    """Send SIGNO through pidfd FD; whether the process exited within TIMEOUT seconds."""
    try:
        signal.pidfd_send_signal(fd, signo)
    except ProcessLookupError:
        return True
    return wait_pidfd(fd, timeout)


def stop_and_wait(fd: int, steps: Sequence[tuple[int, float]]) -> bool:
    """Send each (signal, seconds to wait) of STEPS in turn through pidfd FD until the process has
    exited; whether it did."""
    return any(signal_and_wait(fd, signo, timeout) for signo, timeout in steps)


def wait_gone(pid: int, started: int, timeout: float) -> bool:
    """Wait until the process has exited (and reap it if ours); True when it is gone."""
    fd = open_pidfd(pid, started)
    if fd is None:
        return True
    try:
        gone = wait_pidfd(fd, timeout)
    finally:
        os.close(fd)
    if gone:
        # Readable means every thread has exited, so waiting on our child returns at once.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return gone


def kill(pid: int, started: int) -> None:
    """SIGKILL the process started at STARTED, if it still runs; does not wait."""
    fd = open_pidfd(pid, started)
    if fd is None:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
