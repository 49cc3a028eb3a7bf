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


def _naming(cmdline: bytes, root: str) -> bool:
    return any(arg == root or arg.startswith(root + "/") or (":" + root + "/") in arg
               for arg in os.fsdecode(cmdline).split("\0"))  # fmt: skip


def pids_naming(state_dir: Path) -> list[int]:
    """Processes with an argument that is STATE_DIR or a path below it (`unix:<dir>/qmp.sock` too)."""
    root = str(state_dir)
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone while we looked
        if _naming(cmdline, root):
            out.append(int(entry.name))
    return sorted(out)


def kill_naming(state_dir: Path) -> list[int]:
    """SIGKILL every process naming STATE_DIR and wait until they are gone; their pids."""
    pids = pids_naming(state_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        except OSError as e:
            raise HostError(f"kill stray process {pid} of {state_dir}: {e.strerror}") from e
    deadline = time.monotonic() + _GONE_TIMEOUT
    left = [p for p in pids if not process.exited(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if not process.exited(p)]
    if left:
        raise HostError(f"stray processes {left} of {state_dir} outlived SIGKILL for {_GONE_TIMEOUT:.0f} s")
    return pids
