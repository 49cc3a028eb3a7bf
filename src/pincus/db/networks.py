"""Networks and their config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pincus.db.store import Store


@dataclass
class NetworkRecord:
    name: str
    type: str
    description: str = ""
    config: dict[str, str] = field(default_factory=dict)


def _config(store: Store, network_id: int) -> dict[str, str]:
    with store.read() as c:
        rows = c.execute(
            "SELECT key, value FROM networks_config WHERE network_id = ? ORDER BY key", (network_id,)
        ).fetchall()
    return {r["key"]: r["value"] for r in rows}


def get(store: Store, name: str) -> NetworkRecord | None:
    """Network NAME as stored, a copy the caller may change (None if there is none)."""
    rec = store.memo(("network", name), lambda: _read(store, name))
    return None if rec is None else dataclasses.replace(rec, config=dict(rec.config))


def _read(store: Store, name: str) -> NetworkRecord | None:
    with store.read() as c:
        row = c.execute("SELECT id, name, type, description FROM networks WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return NetworkRecord(row["name"], row["type"], row["description"], _config(store, row["id"]))


def list_all(store: Store) -> list[NetworkRecord]:
    with store.read() as c:
        names = [r["name"] for r in c.execute("SELECT name FROM networks ORDER BY name").fetchall()]
        return [rec for n in names if (rec := get(store, n)) is not None]


def create(store: Store, rec: NetworkRecord) -> None:
    with store.tx() as c:
        cur = c.execute(
            "INSERT INTO networks (name, type, description) VALUES (?, ?, ?)",
            (rec.name, rec.type, rec.description),
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
        c.executemany(
            "INSERT INTO networks_config (network_id, key, value) VALUES (?, ?, ?)",
            [(row["id"], k, v) for k, v in config.items()],
        )


def rename(store: Store, name: str, new_name: str) -> None:
    with store.tx() as c:
        c.execute("UPDATE networks SET name = ? WHERE name = ?", (new_name, name))


def delete(store: Store, name: str) -> None:
    with store.tx() as c:
        c.execute("DELETE FROM networks WHERE name = ?", (name,))
