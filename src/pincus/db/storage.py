"""Storage pools with their config, and the volumes on them."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pincus.db.store import Store

# Volume types, by Incus's names.
CONTAINER = "container"
VM = "virtual-machine"
IMAGE = "image"
VOLUME_TYPES = (CONTAINER, VM, IMAGE)


@dataclass
class PoolRecord:
    name: str
    driver: str
    description: str = ""
    config: dict[str, str] = field(default_factory=dict)


@dataclass
class VolumeRecord:
    pool: str
    name: str
    type: str
    description: str = ""
    config: dict[str, str] = field(default_factory=dict)
    created_at: str = ""


def _pool_id(c: sqlite3.Connection, name: str) -> int | None:
    row = c.execute("SELECT id FROM storage_pools WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row["id"])


def get_pool(store: Store, name: str) -> PoolRecord | None:
    with store.tx() as c:
        row = c.execute(
            "SELECT id, name, driver, description FROM storage_pools WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            return None
        rows = c.execute(
            "SELECT key, value FROM storage_pools_config WHERE storage_pool_id = ? ORDER BY key", (row["id"],)
        ).fetchall()
        return PoolRecord(
            row["name"], row["driver"], row["description"], {r["key"]: r["value"] for r in rows}
        )


def pool_names(store: Store) -> list[str]:
    with store.tx() as c:
        return [r["name"] for r in c.execute("SELECT name FROM storage_pools ORDER BY name").fetchall()]


def list_pools(store: Store) -> list[PoolRecord]:
    with store.tx():
        return [rec for n in pool_names(store) if (rec := get_pool(store, n)) is not None]


def create_pool(store: Store, rec: PoolRecord) -> None:
    with store.tx() as c:
        cur = c.execute(
            "INSERT INTO storage_pools (name, driver, description) VALUES (?, ?, ?)",
            (rec.name, rec.driver, rec.description),
        )
        c.executemany(
            "INSERT INTO storage_pools_config (storage_pool_id, key, value) VALUES (?, ?, ?)",
            [(cur.lastrowid, k, v) for k, v in rec.config.items()],
        )


def replace_pool(store: Store, name: str, description: str, config: dict[str, str]) -> None:
    with store.tx() as c:
        pool_id = _pool_id(c, name)
        c.execute("UPDATE storage_pools SET description = ? WHERE id = ?", (description, pool_id))
        c.execute("DELETE FROM storage_pools_config WHERE storage_pool_id = ?", (pool_id,))
        c.executemany(
            "INSERT INTO storage_pools_config (storage_pool_id, key, value) VALUES (?, ?, ?)",
            [(pool_id, k, v) for k, v in config.items()],
        )


def delete_pool(store: Store, name: str) -> None:
    with store.tx() as c:
        c.execute("DELETE FROM storage_pools WHERE name = ?", (name,))


def list_volumes(store: Store, pool: str, type_: str | None = None) -> list[VolumeRecord]:
    with store.tx() as c:
        rows = c.execute(
            "SELECT v.id, v.name, v.type, v.description, v.created_at FROM storage_volumes v "
            "JOIN storage_pools p ON p.id = v.storage_pool_id WHERE p.name = ? AND (? IS NULL OR v.type = ?) "
            "ORDER BY v.type, v.name",
            (pool, type_, type_),
        ).fetchall()
        out = []
        for row in rows:
            cfg = c.execute(
                "SELECT key, value FROM storage_volumes_config WHERE storage_volume_id = ? ORDER BY key",
                (row["id"],),
            ).fetchall()
            out.append(
                VolumeRecord(
                    pool,
                    row["name"],
                    row["type"],
                    row["description"],
                    {r["key"]: r["value"] for r in cfg},
                    row["created_at"],
                )
            )
        return out


def get_volume(store: Store, pool: str, type_: str, name: str) -> VolumeRecord | None:
    return next((v for v in list_volumes(store, pool, type_) if v.name == name), None)


def pools_with_volume(store: Store, type_: str, name: str) -> list[str]:
    with store.tx() as c:
        rows = c.execute(
            "SELECT p.name FROM storage_volumes v JOIN storage_pools p ON p.id = v.storage_pool_id "
            "WHERE v.type = ? AND v.name = ? ORDER BY p.name",
            (type_, name),
        ).fetchall()
        return [r["name"] for r in rows]


def instance_pool(store: Store, name: str) -> str | None:
    """The pool holding instance NAME's root volume (None: it has none, as a VM or an instance made
    before storage existed). Where its rootfs is: storage.paths.instance_volume(dir, pool, name)."""
    pools = pools_with_volume(store, CONTAINER, name)
    return pools[0] if pools else None


def create_volume(store: Store, rec: VolumeRecord) -> None:
    created = rec.created_at or datetime.now(UTC).isoformat()
    with store.tx() as c:
        cur = c.execute(
            "INSERT INTO storage_volumes (storage_pool_id, name, type, description, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (_pool_id(c, rec.pool), rec.name, rec.type, rec.description, created),
        )
        c.executemany(
            "INSERT INTO storage_volumes_config (storage_volume_id, key, value) VALUES (?, ?, ?)",
            [(cur.lastrowid, k, v) for k, v in rec.config.items()],
        )


def rename_volume(store: Store, pool: str, type_: str, name: str, new_name: str) -> None:
    with store.tx() as c:
        c.execute(
            "UPDATE storage_volumes SET name = ? WHERE storage_pool_id = ? AND type = ? AND name = ?",
            (new_name, _pool_id(c, pool), type_, name),
        )


def delete_volume(store: Store, pool: str, type_: str, name: str) -> None:
    with store.tx() as c:
        c.execute(
            "DELETE FROM storage_volumes WHERE storage_pool_id = ? AND type = ? AND name = ?",
            (_pool_id(c, pool), type_, name),
        )
