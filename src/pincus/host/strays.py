"""Processes a killed daemon may leave behind: a container init or a QEMU it spawned but never
recorded. They are found by their command line, which names the instance's state directory."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pincus.errors import HostError
from pincus.host import process

_GONE_TIMEOUT = 5.0


def _naming(args: list[str], root: str) -> bool:
    return any(arg == root or arg.startswith(root + "/") or (":" + root + "/") in arg for arg in args)


def pids_naming(state_dir: Path) -> list[int]:
    """Processes with an argument that is STATE_DIR or a path below it (`unix:<dir>/qmp.sock` too)."""
    root = str(state_dir)
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return sorted(pid for pid in pids if pid != os.getpid() and _naming(process.cmdline(pid), root))


def kill_naming(state_dir: Path) -> list[int]:
    """SIGKILL every process naming STATE_DIR and wait until they are gone; their pids."""
    root = str(state_dir)
    pids = pids_naming(state_dir)
    fds: dict[int, int] = {}
    try:
        for pid in pids:
            # Checked again through the pidfd: the pid may have been recycled since the listing.
            fd = process.open_pidfd_if(pid, lambda p: _naming(process.cmdline(p), root))
            if fd is None:
                continue
            fds[pid] = fd
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                continue
            except OSError as e:
                raise HostError(f"kill stray process {pid} of {state_dir}: {e.strerror}") from e
        deadline = time.monotonic() + _GONE_TIMEOUT
        # A zombie counts as gone: it holds no namespace, device or socket.
        left = [pid for pid, fd in fds.items() if not process.wait_pidfd(fd, deadline - time.monotonic())]
    finally:
        for fd in fds.values():
            os.close(fd)
    if left:
        raise HostError(f"stray processes {left} of {state_dir} outlived SIGKILL for {_GONE_TIMEOUT:.0f} s")
    return pids
