"""The SQLite connection: opening, migrating and transactions. Only db/ writes SQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pincus.db.migrations import MIGRATIONS

T = TypeVar("T")


class Store:
    """One connection shared by the daemon's threads; a lock serialises access to it."""

    # This daemon is the only writer, so what it read stays true until it writes (memo).
    sole_writer = True
    # The cluster member this daemon is ('' on a single server): whose member-specific keys a
    # network's config shows (db/networks.py).
    member = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        # What reads found since the last write transaction ended (memo): every write goes through
        # tx(), so nothing in it can be stale.
        self._memo: dict[Hashable, Any] = {}
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                # executescript commits on its own; the version bump rides in the same script.
                self._conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A transaction: everything inside commits together or not at all. Nests as one."""
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._memo.clear()
            self._conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read: a deferred transaction, one consistent snapshot that takes no write lock (WAL
        readers and the writer do not block each other). Inside a tx() it is part of that one."""
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            changes = self._conn.total_changes
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                if self._conn.total_changes != changes:  # a write nested in the read
                    self._memo.clear()
            self._conn.execute("COMMIT")

    def memo(self, key: Hashable, load: Callable[[], T]) -> T:
        """LOAD()'s answer (a read), kept until a write transaction ends; the caller must not change
        it. Inside a transaction it is read afresh: that transaction may have written."""
        with self._lock:
            if self._conn.in_transaction:
                return load()
            if key in self._memo:
                hit: T = self._memo[key]
                return hit
            value = load()
            self._memo[key] = value
            return value

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_store(path: Path, cluster: Sequence[str] = ()) -> Store:
    """Plain SQLite at PATH, the default; with CLUSTER (dqlite member addresses, HOST:PORT), the
    replicated cluster database, with the same schema and SQL."""
    if not cluster:
        return Store(path)
    from pincus.db.dqlite_store import DqliteStore  # only a cluster member loads the dqlite client

    return DqliteStore(cluster, database=path.name)
