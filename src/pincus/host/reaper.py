"""One thread that reaps the daemon's long-lived children as they exit, whatever their number.

A thread per child blocked in waitpid() costs a stack and a scheduler entry for as long as the
child runs (one per running container); here every child is a pidfd in one poll() set, with a
pipe to wake the poll when a child is added. The thread starts with the first watch and after
a fork, since a forked child has no threads.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pincus.errors import HostError

log = logging.getLogger(__name__)

OnExit = Callable[[int | None], None]  # gets the exit status, None when someone else reaped it


@dataclass
class Watch:
    """One watched child; join() waits until it is reaped and its on_exit has run."""

    pid: int
    _popen: subprocess.Popen[bytes] | None
    _on_exit: OnExit
    _done: threading.Event = field(default_factory=threading.Event)

    def join(self, timeout: float | None = None) -> bool:
        """Whether the child was reaped (and on_exit ran) within timeout seconds."""
        return self._done.wait(timeout)

    def is_done(self) -> bool:
        return self._done.is_set()

    def _reap(self, pidfd: int) -> None:
        status: int | None = None
        try:
            if self._popen is not None:
                # Through Popen, so the object's returncode is right (Popen takes an ECHILD as 0).
                status = self._popen.wait()
            elif pidfd >= 0:
                result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
                status = None if result is None else result.si_status
        except ChildProcessError:
            pass  # not our child, or reaped by someone else (process.is_alive reaps zombies)
        try:
            self._on_exit(status)
        except Exception:
            log.exception("on_exit of pid %d failed", self.pid)
        finally:
            self._done.set()


class _Reaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[int, Watch]] = []
        self._pid = -1  # the process that runs the thread (a fork has none)
        self._wake_w = -1

    def watch(self, pidfd: int, w: Watch) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._start()
            self._pending.append((pidfd, w))
            os.write(self._wake_w, b"x")

    def _start(self) -> None:
        wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._pending = []
        self._pid = os.getpid()
        threading.Thread(target=self._run, args=(wake_r,), name="reaper", daemon=True).start()

    def _run(self, wake_r: int) -> None:
        poller = select.poll()  # not select(): a daemon's fds may be numbered above 1024
        poller.register(wake_r, select.POLLIN)
        watched: dict[int, Watch] = {}
        while True:
            for fd, _ in poller.poll():
                if fd == wake_r:
                    while True:
                        try:
                            if not os.read(wake_r, 4096):
                                break
                        except BlockingIOError:
                            break
                    with self._lock:
                        pending, self._pending = self._pending, []
                    for pidfd, w in pending:
                        if pidfd < 0:  # gone before it was watched
                            w._reap(pidfd)
                            continue
                        watched[pidfd] = w
                        poller.register(pidfd, select.POLLIN)
                    continue
                w = watched.pop(fd)
                poller.unregister(fd)
                try:
                    w._reap(fd)
                finally:
                    os.close(fd)


_reaper = _Reaper()


def watch(child: subprocess.Popen[bytes] | int, on_exit: OnExit | None = None) -> Watch:
    """Reap CHILD (a Popen or a pid of our child) once it exits, then call on_exit(status), always
    in the reaper's thread (so a caller may hold a lock on_exit takes; keep it short, an
    exception there is logged)."""
    popen = child if isinstance(child, subprocess.Popen) else None
    pid = child.pid if isinstance(child, subprocess.Popen) else child
    w = Watch(pid, popen, on_exit or (lambda status: None))
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = -1  # reaped already (popen.wait() returns its stored status)
    except OSError as e:
        raise HostError(f"watch pid {pid}: open pidfd: {e.strerror}") from e
    _reaper.watch(pidfd, w)
    return w
