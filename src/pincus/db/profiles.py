"""Profiles: config and devices that instances take in order before their own."""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass, field

from pincus.db.store import Store


@dataclass
class ProfileRecord:
    name: str
    description: str = ""
    config: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> config incl. "type"


def get(store: Store, name: str) -> ProfileRecord | None:
    """Profile NAME as stored, a copy the caller may change (None if there is none)."""
    rec = store.memo(("profile", name), lambda: _read(store, name))
    if rec is None:
        return None
    return dataclasses.replace(
        rec, config=dict(rec.config), devices={n: dict(d) for n, d in rec.devices.items()}
    )


def _read(store: Store, name: str) -> ProfileRecord | None:
    with store.read() as c:
        row = c.execute("SELECT id, name, description FROM profiles WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        rec = ProfileRecord(row["name"], row["description"])
        pid = row["id"]
        for r in c.execute("SELECT key, value FROM profiles_config WHERE profile_id = ?", (pid,)):
            rec.config[r["key"]] = r["value"]
        for d in c.execute(
            "SELECT id, name, type FROM profiles_devices WHERE profile_id = ? ORDER BY name", (pid,)
        ).fetchall():
            dev = {"type": d["type"]}
            for r in c.execute(
                "SELECT key, value FROM profiles_devices_config WHERE device_id = ?", (d["id"],)
            ):
                dev[r["key"]] = r["value"]
            rec.devices[d["name"]] = dev
        return rec


def names(store: Store) -> list[str]:
    with store.read() as c:
        return [r["name"] for r in c.execute("SELECT name FROM profiles ORDER BY name")]


def list_all(store: Store) -> list[ProfileRecord]:
    with store.read():
        return [rec for n in names(store) if (rec := get(store, n)) is not None]


def _write_contents(c: sqlite3.Connection, pid: int, rec: ProfileRecord) -> None:
    c.executemany(
        "INSERT INTO profiles_config (profile_id, key, value) VALUES (?, ?, ?)",
        [(pid, k, v) for k, v in rec.config.items()],
    )
    for dev_name, dev in rec.devices.items():
        cur = c.execute(
            "INSERT INTO profiles_devices (profile_id, name, type) VALUES (?, ?, ?)",
            (pid, dev_name, dev["type"]),
        )
        c.executemany(
            "INSERT INTO profiles_devices_config (device_id, key, value) VALUES (?, ?, ?)",
            [(cur.lastrowid, k, v) for k, v in dev.items() if k != "type"],
        )


def create(store: Store, rec: ProfileRecord) -> None:
    with store.tx() as c:
        cur = c.execute("INSERT INTO profiles (name, description) VALUES (?, ?)", (rec.name, rec.description))
        assert cur.lastrowid is not None
        _write_contents(c, cur.lastrowid, rec)


def replace(store: Store, rec: ProfileRecord) -> None:
    """Replace description, config and devices of profile rec.name in one transaction."""
    with store.tx() as c:
        row = c.execute("SELECT id FROM profiles WHERE name = ?", (rec.name,)).fetchone()
        if row is None:
            return
        pid = int(row["id"])
        c.execute("UPDATE profiles SET description = ? WHERE id = ?", (rec.description, pid))
        c.execute("DELETE FROM profiles_config WHERE profile_id = ?", (pid,))
        c.execute("DELETE FROM profiles_devices WHERE profile_id = ?", (pid,))
        _write_contents(c, pid, rec)


def rename(store: Store, name: str, new_name: str) -> None:
    with store.tx() as c:
        c.execute("UPDATE profiles SET name = ? WHERE name = ?", (new_name, name))


def delete(store: Store, name: str) -> None:
    with store.tx() as c:
        c.execute("DELETE FROM profiles WHERE name = ?", (name,))


def users(store: Store, name: str) -> list[str]:
    """Names of the instances that use this profile."""
    with store.read() as c:
        rows = c.execute(
            "SELECT i.name FROM instances i JOIN instances_profiles ip ON ip.instance_id = i.id "
            "JOIN profiles p ON p.id = ip.profile_id WHERE p.name = ? ORDER BY i.name",
            (name,),
        ).fetchall()
    return [r["name"] for r in rows]


def devices_with(store: Store, key: str, value: str | None = None) -> list[str]:
    """Names of the profiles with a device whose config has key=value (any value: None)."""
    with store.read() as c:
        rows = c.execute(
            "SELECT DISTINCT p.name FROM profiles_devices_config dc "
            "JOIN profiles_devices d ON d.id = dc.device_id JOIN profiles p ON p.id = d.profile_id "
            "WHERE dc.key = ? AND (? IS NULL OR dc.value = ?) ORDER BY p.name",
            (key, value, value),
        ).fetchall()
    return [r["name"] for r in rows]
