"""Networks and their config."""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass, field

from pincus.db.store import Store
from pincus.errors import NotFoundError


@dataclass
class NetworkRecord:
    name: str
    type: str
    description: str = ""
    config: dict[str, str] = field(default_factory=dict)
    status: str = "created"  # "pending" in a cluster until created on every member


def _config(store: Store, network_id: int) -> dict[str, str]:
    """The network's config as this member sees it: the cluster-wide keys and its own."""
    with store.read() as c:
        rows = c.execute(
            "SELECT key, value FROM networks_config WHERE network_id = ? ORDER BY key", (network_id,)
        ).fetchall()
        config = {r["key"]: r["value"] for r in rows}
        if store.member:
            config.update(_member_config(c, network_id, store.member))
    return config


def _member_config(c: sqlite3.Connection, network_id: int, member: str) -> dict[str, str]:
    rows = c.execute(
        "SELECT key, value FROM networks_member_config WHERE network_id = ? AND member = ? ORDER BY key",
        (network_id, member),
    ).fetchall()
    return {r["key"]: r["value"] for r in rows}


def get(store: Store, name: str) -> NetworkRecord | None:
    """Network NAME as stored, a copy the caller may change (None if there is none)."""
    rec = store.memo(("network", name), lambda: _read(store, name))
    return None if rec is None else dataclasses.replace(rec, config=dict(rec.config))


def _read(store: Store, name: str) -> NetworkRecord | None:
    with store.read() as c:
        row = c.execute(
            "SELECT id, name, type, description, status FROM networks WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            return None
        return NetworkRecord(
            row["name"], row["type"], row["description"], _config(store, row["id"]), row["status"]
        )


def list_all(store: Store) -> list[NetworkRecord]:
    with store.read() as c:
        names = [r["name"] for r in c.execute("SELECT name FROM networks ORDER BY name").fetchall()]
        return [rec for n in names if (rec := get(store, n)) is not None]


def create(store: Store, rec: NetworkRecord) -> None:
    with store.tx() as c:
        cur = c.execute(
            "INSERT INTO networks (name, type, description, status) VALUES (?, ?, ?, ?)",
            (rec.name, rec.type, rec.description, rec.status),
        )
        c.executemany(
            "INSERT INTO networks_config (network_id, key, value) VALUES (?, ?, ?)",
            [(cur.lastrowid, k, v) for k, v in rec.config.items()],
        )


def replace(store: Store, name: str, description: str, config: dict[str, str]) -> None:
    with store.tx() as c:
        row = c.execute("SELECT id FROM networks WHERE name = ?", (name,)).fetchone()
        c.execute("UPDATE networks SET description = ? WHERE id = ?", (description, row["id"]))
        c.execute("DELETE FROM networks_config WHERE network_id = ?", (row["id"],))
        # A member's own keys stay where they are (set with --target); the rest is cluster-wide.
        own = _member_config(c, row["id"], store.member) if store.member else {}
        c.executemany(
            "INSERT INTO networks_config (network_id, key, value) VALUES (?, ?, ?)",
            [(row["id"], k, v) for k, v in config.items() if k not in own],
        )


def rename(store: Store, name: str, new_name: str) -> None:
    with store.tx() as c:
        c.execute("UPDATE networks SET name = ? WHERE name = ?", (new_name, name))


def delete(store: Store, name: str) -> None:
    with store.tx() as c:
        c.execute("DELETE FROM networks WHERE name = ?", (name,))


def _network_id(c: sqlite3.Connection, name: str) -> int:
    row = c.execute("SELECT id FROM networks WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFoundError(f'Network "{name}" not found')
    return int(row["id"])


def member_config(store: Store, name: str, member: str) -> dict[str, str]:
    """MEMBER's own keys of network NAME."""
    with store.read() as c:
        return _member_config(c, _network_id(c, name), member)


def set_member_config(store: Store, name: str, member: str, config: dict[str, str]) -> None:
    with store.tx() as c:
        nid = _network_id(c, name)
        c.execute("DELETE FROM networks_member_config WHERE network_id = ? AND member = ?", (nid, member))
        c.executemany(
            "INSERT INTO networks_member_config (network_id, member, key, value) VALUES (?, ?, ?, ?)",
            [(nid, member, k, v) for k, v in config.items()],
        )


def member_states(store: Store, name: str) -> dict[str, tuple[str, str]]:
    """Member -> (state: pending, created or errored; message) of network NAME."""
    with store.read() as c:
        rows = c.execute(
            "SELECT member, state, message FROM networks_members WHERE network_id = ? ORDER BY member",
            (_network_id(c, name),),
        ).fetchall()
    return {r["member"]: (r["state"], r["message"]) for r in rows}


def set_member_state(store: Store, name: str, member: str, state: str, message: str = "") -> None:
    with store.tx() as c:
        c.execute(
            "INSERT INTO networks_members (network_id, member, state, message) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (network_id, member)"
            " DO UPDATE SET state = excluded.state, message = excluded.message",
            (_network_id(c, name), member, state, message),
        )


def set_status(store: Store, name: str, status: str) -> None:
    with store.tx() as c:
        c.execute("UPDATE networks SET status = ? WHERE name = ?", (status, name))
