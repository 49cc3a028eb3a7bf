"""The image store's rows: images, their properties and aliases."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from pincus.db.store import Store


@dataclass(frozen=True)
class ImageRecord:
    fingerprint: str
    type: str  # "container" | "virtual-machine"
    architecture: str
    filename: str
    size: int
    properties: dict[str, str]
    aliases: list[str]
    created_at: str
    uploaded_at: str
    public: bool = False
    auto_update: bool = False
    expires_at: str = ""
    last_used_at: str = ""
    alias_descriptions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AliasRecord:
    name: str
    fingerprint: str
    description: str
    type: str


def _record(c: sqlite3.Connection, row: sqlite3.Row) -> ImageRecord:
    props = {
        r["key"]: r["value"]
        for r in c.execute(
            "SELECT key, value FROM images_properties WHERE image_id = ? ORDER BY key", (row["id"],)
        )
    }
    aliases = c.execute(
        "SELECT name, description FROM images_aliases WHERE image_id = ? ORDER BY name", (row["id"],)
    ).fetchall()
    return ImageRecord(
        fingerprint=row["fingerprint"],
        type=row["type"],
        architecture=row["architecture"],
        filename=row["filename"],
        size=row["size"],
        properties=props,
        aliases=[a["name"] for a in aliases],
        created_at=row["created_at"],
        uploaded_at=row["uploaded_at"],
        public=bool(row["public"]),
        auto_update=bool(row["auto_update"]),
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        alias_descriptions={a["name"]: a["description"] for a in aliases},
    )


def get(store: Store, fingerprint: str) -> ImageRecord | None:
    with store.tx() as c:
        row = c.execute("SELECT * FROM images WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return None if row is None else _record(c, row)


def by_prefix(store: Store, prefix: str) -> list[str]:
    """Fingerprints starting with PREFIX (hex only: the caller checked it, so no LIKE wildcards)."""
    with store.tx() as c:
        rows = c.execute(
            "SELECT fingerprint FROM images WHERE substr(fingerprint, 1, ?) = ? ORDER BY fingerprint",
            (len(prefix), prefix),
        ).fetchall()
    return [r["fingerprint"] for r in rows]


def list_all(store: Store) -> list[ImageRecord]:
    with store.tx() as c:
        return [_record(c, r) for r in c.execute("SELECT * FROM images ORDER BY fingerprint").fetchall()]


def create(store: Store, rec: ImageRecord) -> None:
    with store.tx() as c:
        cur = c.execute(
            "INSERT INTO images (fingerprint, type, filename, size, public, auto_update, architecture, "
            "created_at, expires_at, uploaded_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.fingerprint,
                rec.type,
                rec.filename,
                rec.size,
                int(rec.public),
                int(rec.auto_update),
                rec.architecture,
                rec.created_at,
                rec.expires_at,
                rec.uploaded_at,
                rec.last_used_at,
            ),
        )
        image_id = cur.lastrowid
        c.executemany(
            "INSERT INTO images_properties (image_id, key, value) VALUES (?, ?, ?)",
            [(image_id, k, v) for k, v in rec.properties.items()],
        )
        c.executemany(
            "INSERT INTO images_aliases (name, image_id, description) VALUES (?, ?, ?)",
            [(a, image_id, rec.alias_descriptions.get(a, "")) for a in rec.aliases],
        )


def update(
    store: Store,
    fingerprint: str,
    public: bool,
    auto_update: bool,
    properties: dict[str, str],
    expires_at: str,
) -> None:
    with store.tx() as c:
        row = c.execute("SELECT id FROM images WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if row is None:
            return
        c.execute(
            "UPDATE images SET public = ?, auto_update = ?, expires_at = ? WHERE id = ?",
            (int(public), int(auto_update), expires_at, row["id"]),
        )
        c.execute("DELETE FROM images_properties WHERE image_id = ?", (row["id"],))
        c.executemany(
            "INSERT INTO images_properties (image_id, key, value) VALUES (?, ?, ?)",
            [(row["id"], k, v) for k, v in properties.items()],
        )


def delete(store: Store, fingerprint: str) -> None:
    with store.tx() as c:
        c.execute("DELETE FROM images WHERE fingerprint = ?", (fingerprint,))


def alias(store: Store, name: str) -> AliasRecord | None:
    with store.tx() as c:
        row = c.execute(
            "SELECT a.name, a.description, i.fingerprint, i.type FROM images_aliases a "
            "JOIN images i ON i.id = a.image_id WHERE a.name = ?",
            (name,),
        ).fetchone()
    return (
        None if row is None else AliasRecord(row["name"], row["fingerprint"], row["description"], row["type"])
    )


def aliases(store: Store) -> list[AliasRecord]:
    with store.tx() as c:
        rows = c.execute(
            "SELECT a.name, a.description, i.fingerprint, i.type FROM images_aliases a "
            "JOIN images i ON i.id = a.image_id ORDER BY a.name"
        ).fetchall()
    return [AliasRecord(r["name"], r["fingerprint"], r["description"], r["type"]) for r in rows]


def put_alias(store: Store, name: str, fingerprint: str, description: str) -> None:
    """Create alias NAME, or point it at FINGERPRINT with DESCRIPTION if it exists."""
    with store.tx() as c:
        image = c.execute("SELECT id FROM images WHERE fingerprint = ?", (fingerprint,)).fetchone()
        c.execute(
            "INSERT INTO images_aliases (name, image_id, description) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET "
            "image_id = excluded.image_id, description = excluded.description",
            (name, image["id"], description),
        )


def rename_alias(store: Store, name: str, new_name: str) -> None:
    with store.tx() as c:
        c.execute("UPDATE images_aliases SET name = ? WHERE name = ?", (new_name, name))


def delete_alias(store: Store, name: str) -> None:
    with store.tx() as c:
        c.execute("DELETE FROM images_aliases WHERE name = ?", (name,))
