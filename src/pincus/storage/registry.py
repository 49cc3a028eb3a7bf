"""Which driver runs a pool."""

from __future__ import annotations

from pincus.errors import InvalidError
from pincus.state import State
from pincus.storage.base import Pool
from pincus.storage.btrfs import BtrfsPool
from pincus.storage.dir import DirPool

DRIVERS: dict[str, type[Pool]] = {"dir": DirPool, "btrfs": BtrfsPool}


def load(state: State, name: str, driver: str, config: dict[str, str]) -> Pool:
    cls = DRIVERS.get(driver)
    if cls is None:
        raise InvalidError(f'Unsupported storage driver "{driver}" (supported: {", ".join(DRIVERS)})')
    return cls(state, name, dict(config))
