from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The code under test is this checkout's src/, whichever venv runs pytest (git worktrees share one
# venv whose editable install points at the main checkout); the daemons the tests spawn inherit it.
_SRC = str(Path(__file__).resolve().parent.parent / "src")
if sys.path[:1] != [_SRC]:
    sys.path.insert(0, _SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p)

from tests.pincus_testlib import Daemon, NetNS, cleanup_dir, unique_prefix  # noqa: E402


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
        d.shut_down()
        cleanup_dir(d.dir)
