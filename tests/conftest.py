from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pincus_testlib import Daemon, NetNS, cleanup_dir, kill_leftovers, unique_prefix


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def netns(prefix: str) -> Iterator[NetNS]:
    ns = NetNS(f"{prefix}ns")
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def daemon(netns: NetNS) -> Iterator[Daemon]:
    d = Daemon(netns, Path(tempfile.mkdtemp(prefix="pincus-test-")))
    try:
        d.start()
        yield d
    finally:
        # SIGTERM leaves instances running by design: stop them through the daemon first.
        if d.proc is not None and d.proc.poll() is None:
            d.cli("admin", "shutdown", "--timeout", "2", check=False, timeout=60)
        d.stop()
        d.stop(signal.SIGKILL)
        kill_leftovers(d.dir)
        cleanup_dir(d.dir)
