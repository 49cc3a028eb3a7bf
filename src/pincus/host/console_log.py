"""The other end of every container's /dev/console, read by one thread into its console.log.

A terminal whose other end nobody holds answers writes with EIO, and systemd retries opening
/dev/console for a second before each status line it prints: a boot took minutes. A terminal whose
other end nobody reads fills up and blocks its writers. So the daemon holds each console's master
and copies what it reads into the container's log, kept under a size cap (the newest output wins).
It also holds the console's own end: with none open a master reads EIO (systemd opens and closes the
console per line), so the pair is let go only when the container's init is gone (`drop`).
One poll() set for all consoles, as host/reaper.py does for children: no thread per container.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from pathlib import Path

from pincus.errors import HostError

log = logging.getLogger(__name__)

# Its name in an instance's directory (a VM's serial console goes to the same file).
LOG_NAME = "console.log"
# A log past this is cut to its newest half.
LOG_CAP = 1024 * 1024
_CHUNK = 65536


class _Pump:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: dict[int, Path] = {}
        self._keys: dict[int, tuple[int, int]] = {}  # key -> (master, slave)
        self._poll = select.poll()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._poll.register(self._wake_r, select.POLLIN)
        self._thread: threading.Thread | None = None

    def add(self, key: int, master: int, slave: int, log_path: Path) -> None:
        for fd in (master, slave):
            os.set_inheritable(fd, False)
        os.set_blocking(master, False)
        with self._lock:
            old = self._keys.pop(key, None)
            self._keys[key] = (master, slave)
            self._logs[master] = log_path
            self._poll.register(master, select.POLLIN)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="console-log", daemon=True)
                self._thread.start()
        os.write(self._wake_w, b"x")
        if old is not None:
            self._close(*old)

    def drop(self, key: int) -> None:
        with self._lock:
            pair = self._keys.pop(key, None)
        if pair is not None:
            self._close(*pair)

    def _close(self, master: int, slave: int) -> None:
        with self._lock:
            if self._logs.pop(master, None) is not None:
                self._poll.unregister(master)
        os.close(master)
        os.close(slave)

    def count(self) -> int:
        with self._lock:
            return len(self._keys)

    def _run(self) -> None:
        while True:
            for fd, _ in self._poll.poll():
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                self._drain(fd)

    def _drain(self, fd: int) -> None:
        with self._lock:
            path = self._logs.get(fd)
        if path is None:
            return
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            # Not for us to close (drop does): stop polling it, or a dead terminal spins the loop.
            log.warning("console of %s: %s", path, e.strerror)
            with self._lock:
                if self._logs.pop(fd, None) is not None:
                    self._poll.unregister(fd)
            return
        _append(path, data)


def _append(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, data)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > LOG_CAP:
            keep = path.read_bytes()[-LOG_CAP // 2 :]
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(keep)
            os.chmod(tmp, 0o640)
            os.replace(tmp, path)
    except OSError as e:
        # The instance's directory went away under a dying container: nothing to keep.
        log.debug("console log %s: %s", path, e.strerror)


_PUMP = _Pump()


def keep(key: int, master: int, slave: int, log_path: Path) -> None:
    """Hold a console (both ends, taken over) under KEY (the container's init pid) and append what
    its master reads to LOG_PATH, until `drop(KEY)`."""
    _PUMP.add(key, master, slave, log_path)


def drop(key: int) -> None:
    """Close the console held under KEY (its container's init is gone); nothing if none is."""
    _PUMP.drop(key)


def held() -> int:
    """How many consoles are held (tests: none is leaked)."""
    return _PUMP.count()


def read_log(path: Path) -> bytes:
    """What the console log holds (nothing yet: empty)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as e:
        raise HostError(f"read console log {path}: {e.strerror}") from e


def clear_log(path: Path) -> None:
    try:
        with open(path, "r+b") as f:
            f.truncate(0)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise HostError(f"clear console log {path}: {e.strerror}") from e
