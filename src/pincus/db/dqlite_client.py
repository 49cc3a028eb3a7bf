"""A small synchronous client of dqlite's wire protocol (version 1): find the leader, open a
database, run SQL with parameters, add and promote members. PyPI's clients need Python 3.13
(dqlite-wire, dqlite-client) or ship a broken wheel (dqlitepy), so pincus speaks the protocol itself;
it is a few fixed binary messages of 64-bit words."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence

from pincus.errors import ConflictError, HostError, InvalidError

PROTOCOL_VERSION = 1
# request types
_LEADER, _OPEN, _EXEC_SQL, _QUERY_SQL, _ADD, _ASSIGN, _REMOVE, _CLUSTER = 0, 3, 8, 9, 12, 13, 14, 16
# response types
_FAILURE, _SERVER, _SERVERS, _DB, _RESULT, _ROWS, _EMPTY = 0, 1, 3, 4, 6, 7, 8
_ROWS_DONE, _ROWS_PART = 0xFFFFFFFFFFFFFFFF, 0xEEEEEEEEEEEEEEEE
# value types
_INTEGER, _FLOAT, _TEXT, _BLOB, _NULL, _UNIXTIME, _ISO8601, _BOOLEAN = 1, 2, 3, 4, 5, 9, 10, 11
VOTER, STANDBY, SPARE = 0, 1, 2
# SQLite's extended codes dqlite answers with when the member asked is not (or no longer) leader.
_NOT_LEADER = {10250, 10506}
_SQLITE_CONSTRAINT = 19

Value = int | float | str | bytes | None
Dial = Callable[[str, float], socket.socket]
Row = tuple[Value, ...]


class NotLeaderError(HostError):
    """The member is not the leader (any more): find the leader and retry the transaction."""


def _text(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return raw + b"\0" * (-len(raw) % 8)


def _params(values: Sequence[Value]) -> bytes:
    if len(values) > 255:
        raise InvalidError(f"Too many SQL parameters ({len(values)}, at most 255)")
    kinds = bytearray([len(values)])
    body = bytearray()
    for v in values:
        if v is None:
            kinds.append(_NULL)
            body += bytes(8)
        elif isinstance(v, bool):
            kinds.append(_INTEGER)
            body += struct.pack("<q", int(v))
        elif isinstance(v, int):
            kinds.append(_INTEGER)
            body += struct.pack("<q", v)
        elif isinstance(v, float):
            kinds.append(_FLOAT)
            body += struct.pack("<d", v)
        elif isinstance(v, str):
            kinds.append(_TEXT)
            body += _text(v)
        elif isinstance(v, bytes):
            kinds.append(_BLOB)
            body += struct.pack("<Q", len(v)) + v + b"\0" * (-len(v) % 8)
        else:
            raise InvalidError(f"Unsupported SQL parameter type {type(v).__name__}")
    kinds += b"\0" * (-len(kinds) % 8)
    return bytes(kinds + body)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u64(self) -> int:
        (v,) = struct.unpack_from("<Q", self.data, self.pos)
        self.pos += 8
        return int(v)

    def i64(self) -> int:
        (v,) = struct.unpack_from("<q", self.data, self.pos)
        self.pos += 8
        return int(v)

    def f64(self) -> float:
        (v,) = struct.unpack_from("<d", self.data, self.pos)
        self.pos += 8
        return float(v)

    def text(self) -> str:
        end = self.data.index(b"\0", self.pos)
        s = self.data[self.pos : end].decode()
        self.pos = end + 1 + (-(end + 1 - self.pos) % 8)
        return s

    def blob(self) -> bytes:
        n = self.u64()
        b = self.data[self.pos : self.pos + n]
        self.pos += n + (-n % 8)
        return b

    def value(self, kind: int) -> Value:
        if kind in (_INTEGER, _UNIXTIME, _BOOLEAN):
            return self.i64()
        if kind == _FLOAT:
            return self.f64()
        if kind in (_TEXT, _ISO8601):
            return self.text()
        if kind == _BLOB:
            return self.blob()
        if kind == _NULL:
            self.pos += 8
            return None
        raise HostError(f"dqlite sent an unknown value type {kind}")


class Connection:
    """One TCP connection to one member; not thread-safe (callers hold a lock)."""

    def __init__(self, address: str, timeout: float = 5.0, dial: Dial | None = None) -> None:
        """DIAL: how to reach ADDRESS (a cluster's member API over TLS); plain TCP without."""
        host, _, port = address.rpartition(":")
        self.address = address
        self._dial = dial
        try:
            if dial is not None:
                self._sock = dial(address, timeout)
                self._sock.settimeout(timeout)
            else:
                self._sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        except OSError as e:
            raise HostError(f"Cannot reach dqlite member {address}: {e}") from e
        if self._sock.family != socket.AF_UNIX:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send_raw(struct.pack("<Q", PROTOCOL_VERSION))
        self.db_id: int | None = None

    def close(self) -> None:
        self._sock.close()

    def _send_raw(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise HostError(f"dqlite member {self.address}: {e}") from e

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self._sock.recv(n - len(buf))
            except OSError as e:
                raise HostError(f"dqlite member {self.address}: {e}") from e
            if not chunk:
                raise HostError(f"dqlite member {self.address} closed the connection")
            buf += chunk
        return bytes(buf)

    def _request(self, kind: int, body: bytes, schema: int = 0) -> tuple[int, _Reader]:
        self._send_raw(struct.pack("<IBBH", len(body) // 8, kind, schema, 0) + body)
        return self._response()

    def _response(self) -> tuple[int, _Reader]:
        words, kind, _schema, _extra = struct.unpack("<IBBH", self._recv(8))
        r = _Reader(self._recv(words * 8))
        if kind == _FAILURE:
            code, message = r.u64(), r.text()
            if code in _NOT_LEADER or "not leader" in message:
                raise NotLeaderError(f"dqlite member {self.address} is not the leader: {message}")
            if code & 0xFF == _SQLITE_CONSTRAINT:
                raise ConflictError(message)
            raise HostError(f"dqlite member {self.address}: {message} (code {code})")
        return kind, r

    def leader(self) -> tuple[int, str]:
        """The leader's node id and address as this member knows it; (0, "") if none."""
        _, r = self._request(_LEADER, struct.pack("<Q", 0))
        return r.u64(), r.text()

    def open(self, name: str) -> None:
        _, r = self._request(_OPEN, _text(name) + struct.pack("<Q", 0) + _text("volatile"))
        self.db_id = r.u64() & 0xFFFFFFFF

    def execute(self, sql: str, params: Sequence[Value] = ()) -> tuple[int, int]:
        """Runs SQL (statements after the first take no parameters); (last row id, rows changed)."""
        _, r = self._request(_EXEC_SQL, struct.pack("<Q", self._db()) + _text(sql) + _params(params))
        return r.u64(), r.u64()

    def query(self, sql: str, params: Sequence[Value] = ()) -> tuple[list[str], list[Row]]:
        kind, r = self._request(_QUERY_SQL, struct.pack("<Q", self._db()) + _text(sql) + _params(params))
        columns: list[str] = []
        rows: list[Row] = []
        while True:
            if kind != _ROWS:
                raise HostError(f"dqlite member {self.address} answered a query with message type {kind}")
            n = r.u64()
            columns = [r.text() for _ in range(n)]
            header_words = (n + 15) // 16
            while True:
                (marker,) = struct.unpack_from("<Q", r.data, r.pos)
                if marker in (_ROWS_DONE, _ROWS_PART):
                    r.pos += 8
                    break
                header = r.data[r.pos : r.pos + header_words * 8]
                r.pos += header_words * 8
                kinds = [(header[i // 2] >> (4 * (i % 2))) & 0x0F for i in range(n)]
                rows.append(tuple(r.value(k) for k in kinds))
            if marker == _ROWS_DONE:
                return columns, rows
            kind, r = self._response()

    def add(self, node_id: int, address: str, role: int | None = VOTER) -> None:
        """Adds a member (as spare, as dqlite does) and then gives it ROLE (None: it stays a spare
        until ``assign``); run on the leader."""
        self._request(_ADD, struct.pack("<Q", node_id) + _text(address))
        if role is not None:
            self.assign(node_id, role)

    def assign(self, node_id: int, role: int) -> None:
        """Gives member NODE_ID ROLE; a new voter is caught up with the log first. Run on the leader."""
        self._request(_ASSIGN, struct.pack("<QQ", node_id, role))

    def remove(self, node_id: int) -> None:
        """Drops member NODE_ID from the configuration; run on the leader."""
        self._request(_REMOVE, struct.pack("<Q", node_id))

    def members(self) -> list[tuple[int, str, int]]:
        """(id, address, role) of every member, as the leader's configuration says."""
        _, r = self._request(_CLUSTER, struct.pack("<Q", 1))
        return [(r.u64(), r.text(), r.u64()) for _ in range(r.u64())]

    def _db(self) -> int:
        if self.db_id is None:
            raise HostError(f"dqlite member {self.address}: no database open")
        return self.db_id


def connect_leader(
    addresses: Iterable[str], database: str | None, timeout: float = 10.0, dial: Dial | None = None
) -> Connection:
    """A connection to the current leader, with DATABASE open; tries every member until TIMEOUT."""
    deadline = time.monotonic() + timeout
    last = "no member answered"
    while True:
        for address in addresses:
            try:
                conn = Connection(address, timeout=2.0, dial=dial)
            except HostError as e:
                last = str(e)
                continue
            try:
                _, leader = conn.leader()
                if leader and leader != address:
                    conn.close()
                    conn = Connection(leader, timeout=2.0, dial=dial)
                    _, again = conn.leader()
                    leader = again if again == leader else ""
                if leader:
                    if database is not None:
                        conn.open(database)
                    return conn
                last = f"member {address} knows no leader"
            except HostError as e:
                last = str(e)
            conn.close()
        if time.monotonic() > deadline:
            raise HostError(f"No dqlite leader reachable within {timeout:g} s: {last}")
        time.sleep(0.02)
