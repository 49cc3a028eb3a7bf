"""Instances, their config, devices, volatile keys and runtime handles."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pincus.db import profiles as db_profiles
from pincus.db.store import Store
from pincus.errors import ConflictError
from pincus.expansion import expand


@dataclass
class InstanceRecord:
    name: str
    type: str  # "container" | "virtual-machine"
    description: str = ""
    config: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> config incl. "type"
    volatile: dict[str, str] = field(default_factory=dict)  # full keys: "volatile.eth0.hwaddr"
    created_at: str = ""
    profiles: list[str] = field(default_factory=list)  # applied in this order, then the instance's own
    location: str = ""  # the cluster member it lives on; '' on a single server


@dataclass(frozen=True)
class Runtime:
    pid: int
    start_time: int


def _id(store: Store, name: str) -> int | None:
    with store.read() as c:
        row = c.execute("SELECT id FROM instances WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row["id"])


def get(store: Store, name: str) -> InstanceRecord | None:
    """Instance NAME as stored, a copy the caller may change (None if there is none)."""
    rec = store.memo(("instance", name), lambda: _read(store, name))
    if rec is None:
        return None
    return dataclasses.replace(
        rec,
        config=dict(rec.config),
        devices={n: dict(d) for n, d in rec.devices.items()},
        volatile=dict(rec.volatile),
        profiles=list(rec.profiles),
    )


def _read(store: Store, name: str) -> InstanceRecord | None:
    with store.read() as c:
        row = c.execute("SELECT * FROM instances WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        iid = row["id"]
        rec = InstanceRecord(
            row["name"],
            row["type"],
            row["description"],
            created_at=row["created_at"],
            location=row["location"],
        )
        for r in c.execute("SELECT key, value FROM instances_config WHERE instance_id = ?", (iid,)):
            rec.config[r["key"]] = r["value"]
        rec.volatile.update(
            _tuples(c, "SELECT key, value FROM instances_volatile WHERE instance_id = ?", (iid,))
        )
        rec.devices = _devices(c, iid)
        rec.profiles = [
            r["name"]
            for r in c.execute(
                "SELECT p.name FROM instances_profiles ip JOIN profiles p ON p.id = ip.profile_id "
                "WHERE ip.instance_id = ? ORDER BY ip.apply_order",
                (iid,),
            )
        ]
        return rec


def _tuples(c: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> Iterable[tuple[Any, ...]]:
    """The rows of a query as plain tuples, where the connection can skip building Row objects
    (thousands of rows for an instance with hundreds of NICs); a cluster's rows are tuples already."""
    if isinstance(c, sqlite3.Connection):
        cur = c.cursor()
        cur.row_factory = None
        return cur.execute(sql, params)
    return c.execute(sql, params)


def _devices(c: sqlite3.Connection, iid: int) -> dict[str, dict[str, str]]:
    """Instance IID's devices by name, in one query however many it has."""
    devices: dict[str, dict[str, str]] = {}
    for name, type_, key, value in _tuples(
        c,
        "SELECT d.name, d.type, dc.key, dc.value FROM devices d "
        "LEFT JOIN devices_config dc ON dc.device_id = d.id WHERE d.instance_id = ? ORDER BY d.name",
        (iid,),
    ):
        dev = devices.setdefault(name, {"type": type_})
        if key is not None:
            dev[key] = value
    return devices


def names(store: Store) -> list[str]:
    with store.read() as c:
        return [r["name"] for r in c.execute("SELECT name FROM instances ORDER BY name")]


def locations(store: Store) -> dict[str, str]:
    """Instance name -> the member it lives on ('' on a single server)."""
    with store.read() as c:
        return {
            r["name"]: r["location"] for r in c.execute("SELECT name, location FROM instances ORDER BY name")
        }


def names_on(store: Store, location: str) -> list[str]:
    """The instances living on member LOCATION (on a single server, '': all of them)."""
    with store.read() as c:
        rows = c.execute("SELECT name FROM instances WHERE location = ? ORDER BY name", (location,))
        return [r["name"] for r in rows]


def list_all(store: Store) -> list[InstanceRecord]:
    # One read per instance, each kept until the next write: a deleted one is left out.
    return [rec for n in names(store) if (rec := get(store, n)) is not None]


def create(store: Store, rec: InstanceRecord) -> None:
    created = rec.created_at or datetime.now(UTC).isoformat()
    with store.tx() as c:
        cur = c.execute(
            "INSERT INTO instances (name, type, description, created_at, location) VALUES (?, ?, ?, ?, ?)",
            (rec.name, rec.type, rec.description, created, rec.location),
        )
        iid = cur.lastrowid
        c.executemany(
            "INSERT INTO instances_config (instance_id, key, value) VALUES (?, ?, ?)",
            [(iid, k, v) for k, v in rec.config.items()],
        )
        c.executemany(
            "INSERT INTO instances_volatile (instance_id, key, value) VALUES (?, ?, ?)",
            [(iid, k, v) for k, v in rec.volatile.items()],
        )
        _insert_devices(c, iid, rec.devices)
        _insert_profiles(c, iid, rec.profiles)


def _insert_profiles(c: sqlite3.Connection, iid: int | None, profiles: list[str]) -> None:
    for order, name in enumerate(profiles):
        c.execute(
            "INSERT INTO instances_profiles (instance_id, profile_id, apply_order) "
            "SELECT ?, id, ? FROM profiles WHERE name = ?",
            (iid, order, name),
        )


def _insert_devices(c: sqlite3.Connection, iid: int | None, devices: dict[str, dict[str, str]]) -> None:
    for name, dev in devices.items():
        cur = c.execute(
            "INSERT INTO devices (instance_id, name, type) VALUES (?, ?, ?)", (iid, name, dev["type"])
        )
        c.executemany(
            "INSERT INTO devices_config (device_id, key, value) VALUES (?, ?, ?)",
            [(cur.lastrowid, k, v) for k, v in dev.items() if k != "type"],
        )


def replace(
    store: Store,
    name: str,
    description: str,
    config: dict[str, str],
    devices: dict[str, dict[str, str]],
    profiles: list[str] | None = None,
    stored: dict[str, dict[str, str]] | None = None,
) -> None:
    """Replace config, devices and (unless None) profiles in one transaction; volatile keys are kept.
    STORED: the instance's own devices as stored now, when the caller knows them (it holds the
    instance's lock since it read them); else they are read here."""
    iid = _id(store, name)
    with store.tx() as c:
        if profiles is not None:
            c.execute("DELETE FROM instances_profiles WHERE instance_id = ?", (iid,))
            _insert_profiles(c, iid, profiles)
        c.execute("UPDATE instances SET description = ? WHERE id = ?", (description, iid))
        c.execute("DELETE FROM instances_config WHERE instance_id = ?", (iid,))
        c.executemany(
            "INSERT INTO instances_config (instance_id, key, value) VALUES (?, ?, ?)",
            [(iid, k, v) for k, v in config.items()],
        )
        # Only the devices that differ are rewritten: adding one NIC to an instance holding 500
        # costs one NIC's rows, not 500.
        if stored is None or not store.sole_writer:  # another member may have changed them since
            stored = _devices(c, iid) if iid is not None else {}
        gone = [n for n in stored if devices.get(n) != stored[n]]
        c.executemany("DELETE FROM devices WHERE instance_id = ? AND name = ?", [(iid, n) for n in gone])
        _insert_devices(c, iid, {n: d for n, d in devices.items() if stored.get(n) != d})


def set_volatile(store: Store, name: str, values: dict[str, str | None]) -> None:
    """Set (or, for None, delete) volatile keys in one transaction."""
    iid = _id(store, name)
    if iid is None:
        return
    with store.tx() as c:
        for key, value in values.items():
            if value is None:
                c.execute("DELETE FROM instances_volatile WHERE instance_id = ? AND key = ?", (iid, key))
            else:
                c.execute(
                    "INSERT INTO instances_volatile (instance_id, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (instance_id, key) DO UPDATE SET value = excluded.value",
                    (iid, key, value),
                )


def get_runtime(store: Store, name: str) -> Runtime | None:
    return store.memo(("runtime", name), lambda: _read_runtime(store, name))


def _read_runtime(store: Store, name: str) -> Runtime | None:
    with store.read() as c:
        row = c.execute(
            "SELECT r.pid, r.start_time FROM instances_runtime r JOIN instances i ON i.id = r.instance_id "
            "WHERE i.name = ?",
            (name,),
        ).fetchone()
    return None if row is None else Runtime(int(row["pid"]), int(row["start_time"]))


def set_runtime(store: Store, name: str, runtime: Runtime | None) -> None:
    iid = _id(store, name)
    with store.tx() as c:
        c.execute("DELETE FROM instances_runtime WHERE instance_id = ?", (iid,))
        if runtime is not None:
            c.execute(
                "INSERT INTO instances_runtime (instance_id, pid, start_time) VALUES (?, ?, ?)",
                (iid, runtime.pid, runtime.start_time),
            )


def rename(store: Store, name: str, new_name: str) -> None:
    with store.tx() as c:
        c.execute("UPDATE instances SET name = ? WHERE name = ?", (new_name, name))


def move(store: Store, name: str, source: str, target: str) -> None:
    """Instance NAME now lives on member TARGET; refused unless it lived on SOURCE (no other change
    slipped in since the move began)."""
    with store.tx() as c:
        cur = c.execute(
            "UPDATE instances SET location = ? WHERE name = ? AND location = ?", (target, name, source)
        )
        if cur.rowcount != 1:
            raise ConflictError(f'Instance "{name}" is no longer on member "{source}"')


def delete(store: Store, name: str) -> None:
    with store.tx() as c:
        c.execute("DELETE FROM instances WHERE name = ?", (name,))


def network_users(store: Store, network: str, keys: tuple[str, ...] = ("network",)) -> list[str]:
    """Names of instances with a device whose KEYS (`network`, or also `parent` for a managed
    bridge, which a bridged NIC may name directly) name this network."""
    marks = ", ".join("?" for _ in keys)
    with store.read() as c:
        rows = c.execute(
            "SELECT DISTINCT i.name FROM instances i JOIN devices d ON d.instance_id = i.id "
            "JOIN devices_config dc ON dc.device_id = d.id "
            f"WHERE dc.key IN ({marks}) AND dc.value = ? ORDER BY i.name",
            (*keys, network),
        ).fetchall()
    return [r["name"] for r in rows]


def devices_with(store: Store, key: str, value: str | None = None) -> list[tuple[str, str]]:
    """(instance, device) pairs whose device config has key=value (any value: None)."""
    with store.read() as c:
        rows = c.execute(
            "SELECT i.name AS instance, d.name AS device FROM devices_config dc "
            "JOIN devices d ON d.id = dc.device_id JOIN instances i ON i.id = d.instance_id "
            "WHERE dc.key = ? AND (? IS NULL OR dc.value = ?)",
            (key, value, value),
        ).fetchall()
    return [(r["instance"], r["device"]) for r in rows]


def expanded_devices_with(
    store: Store, key: str, value: str | None = None
) -> list[tuple[str, str, dict[str, str]]]:
    """(instance, device, config) of every device with key=value (any value: None) in its config
    once the instance's profiles are expanded in: a profile's device counts for each instance
    using it, unless the instance's own device of that name replaces it."""
    with store.read():
        names = {instance for instance, _ in devices_with(store, key, value)}
        for profile in db_profiles.devices_with(store, key, value):
            names.update(db_profiles.users(store, profile))
        out: list[tuple[str, str, dict[str, str]]] = []
        for name in sorted(names):
            rec = get(store, name)
            if rec is None:
                continue
            layers = [(p.config, p.devices) for n in rec.profiles if (p := db_profiles.get(store, n))]
            _, devices = expand(layers, rec.config, rec.devices)
            out.extend(
                (name, dev, cfg)
                for dev, cfg in devices.items()
                if key in cfg and (value is None or cfg[key] == value)
            )
    return out


def volatile_holders(store: Store, key_suffix: str, value: str) -> list[tuple[str, str]]:
    """(instance, key) pairs whose volatile key ends with key_suffix and equals value."""
    with store.read() as c:
        rows = c.execute(
            "SELECT i.name AS instance, v.key AS key FROM instances_volatile v "
            "JOIN instances i ON i.id = v.instance_id WHERE v.value = ? AND v.key LIKE ?",
            (value, f"%{key_suffix}"),
        ).fetchall()
    return [(r["instance"], r["key"]) for r in rows]
