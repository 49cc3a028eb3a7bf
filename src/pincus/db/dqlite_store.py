"""The cluster's Store: the same schema, migrations and repository SQL as the SQLite Store, run on a
dqlite cluster through ``dqlite_client``. A single pincusd keeps ``store.Store`` (plain SQLite).

Repositories only call ``execute``, ``executemany``, ``executescript``, ``fetchone``, ``fetchall``
and ``lastrowid`` and index rows by column name, so a small connection look-alike is enough. A
transaction lives on the leader's connection; when leadership moves, the transaction in hand fails
with a HostError and the next one finds the new leader.

``open_store`` in ``db/store.py`` chooses: plain SQLite unless member addresses are given."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar, cast

from pincus.db import dqlite_client
from pincus.db.migrations import MIGRATIONS
from pincus.db.store import Store
from pincus.errors import HostError, InvalidError
from pincus.host.dqlite_node import check_address

T = TypeVar("T")

# Statements that return rows: everything else is sent as EXEC_SQL.
_QUERY = re.compile(r"\s*(SELECT|WITH|VALUES|PRAGMA\s+\w+\s*$|PRAGMA\s+\w+\s*\(\s*\w+\s*\)\s*$)", re.I)


class Row(tuple[dqlite_client.Value, ...]):
    """A result row indexable by position or by column name, as sqlite3.Row."""

    _columns: dict[str, int]

    def __new__(cls, values: Sequence[dqlite_client.Value], columns: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._columns = columns
        return row

    def __getitem__(self, key: int | str) -> dqlite_client.Value:  # type: ignore[override]
        return super().__getitem__(self._columns[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self._columns)


class Cursor:
    def __init__(self, rows: list[Row], lastrowid: int | None, rowcount: int) -> None:
        self._rows, self.lastrowid, self.rowcount = rows, lastrowid, rowcount

    def fetchone(self) -> Row | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Row]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class Connection:
    """The part of sqlite3.Connection the repositories use, on a dqlite leader connection."""

    def __init__(self, conn: dqlite_client.Connection) -> None:
        self.raw = conn
        self.in_transaction = False

    def execute(self, sql: str, params: Sequence[dqlite_client.Value] = ()) -> Cursor:
        if _QUERY.match(sql):
            columns, rows = self.raw.query(sql, tuple(params))
            index = {name: i for i, name in enumerate(columns)}
            return Cursor([Row(r, index) for r in rows], None, -1)
        last, changed = self.raw.execute(sql, tuple(params))
        return Cursor([], last, changed)

    def executemany(self, sql: str, rows: Iterable[Sequence[dqlite_client.Value]]) -> Cursor:
        changed = 0
        for params in rows:
            changed += self.raw.execute(sql, tuple(params))[1]
        return Cursor([], None, changed)

    def executescript(self, script: str) -> Cursor:
        self.raw.execute(script)
        return Cursor([], None, -1)


class DqliteStore(Store):
    """A Store on the dqlite cluster whose members answer at ADDRESSES."""

    sole_writer = False

    def __init__(
        self,
        addresses: Sequence[str],
        database: str = "pincus.db",
        timeout: float = 10.0,
        dial: dqlite_client.Dial | None = None,
    ) -> None:
        if not addresses:
            raise InvalidError("A cluster database needs the address of at least one member")
        if not database or "/" in database or database.startswith("."):
            raise InvalidError(f"Invalid cluster database name {database!r}")
        self.path = Path(database)
        self.addresses = [check_address(a) for a in addresses]
        self.database = database
        self.timeout = timeout
        self.dial = dial
        self._lock = threading.RLock()
        self._leader: Connection | None = None
        self._migrate()

    def _connection(self) -> Connection:
        if self._leader is None:
            raw = dqlite_client.connect_leader(self.addresses, self.database, self.timeout, self.dial)
            try:
                raw.execute("PRAGMA foreign_keys = ON")
            except BaseException:
                raw.close()
                raise
            self._leader = Connection(raw)
        return self._leader

    def _drop(self) -> None:
        if self._leader is not None:
            self._leader.raw.close()
            self._leader = None

    def _migrate(self) -> None:
        # Every member may start at once: each migration checks the version inside its own
        # transaction, so it runs once cluster-wide and a loser sees the new version.
        for number, script in enumerate(MIGRATIONS, start=1):
            with self.tx() as c:
                row = c.execute("PRAGMA user_version").fetchone()
                if int(row[0]) >= number:
                    continue
                c.executescript(f"{script}\nPRAGMA user_version = {number};")

    @property
    def schema_version(self) -> int:
        with self.tx() as c:
            return int(c.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A transaction on the leader; nests as one. A leader lost before it begins is replaced
        by the new one (waiting up to the timeout for an election); one lost during it fails it
        with a HostError, and a lost COMMIT may or may not have been applied."""
        with self._lock:
            conn = self._connection()
            if conn.in_transaction:
                yield cast(sqlite3.Connection, conn)
                return
            conn = self._begin()
            conn.in_transaction = True
            try:
                yield cast(sqlite3.Connection, conn)
            except BaseException:
                conn.in_transaction = False
                try:
                    conn.raw.execute("ROLLBACK")
                except HostError:
                    self._drop()
                raise
            conn.in_transaction = False
            try:
                conn.raw.execute("COMMIT")
            except HostError:
                self._drop()
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Reads run on the leader in a transaction, as writes do."""
        with self.tx() as c:
            yield c

    def memo(self, key: Hashable, load: Callable[[], T]) -> T:
        """Nothing is kept: the other members write to the same database."""
        return load()

    def _begin(self) -> Connection:
        """BEGIN on the leader; a lost leader or a busy database (another member's transaction
        waiting for its commit to reach a quorum) is retried until the timeout: nothing ran yet."""
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            try:
                conn = self._connection()
                conn.raw.execute("BEGIN IMMEDIATE")
                return conn
            except HostError:
                self._drop()
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def close(self) -> None:
        with self._lock:
            self._drop()
