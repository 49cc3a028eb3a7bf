"""The store's reads: deferred transactions, kept until the next write, handed out as copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from pincus.db import instances as db_instances
from pincus.db import networks as db_networks
from pincus.db.instances import InstanceRecord
from pincus.db.networks import NetworkRecord
from pincus.db.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db")


def nic(name: str) -> dict[str, str]:
    return {"type": "nic", "network": "n0", "name": name}


def test_a_kept_read_is_dropped_by_the_next_write(store: Store) -> None:
    db_instances.create(store, InstanceRecord("c1", "container", devices={"eth0": nic("eth0")}))
    assert db_instances.get(store, "c1").devices == {"eth0": nic("eth0")}  # type: ignore[union-attr]
    db_instances.replace(store, "c1", "", {}, {"eth0": nic("eth0"), "eth1": nic("eth1")})
    assert set(db_instances.get(store, "c1").devices) == {"eth0", "eth1"}  # type: ignore[union-attr]
    db_instances.set_volatile(store, "c1", {"volatile.eth0.hwaddr": "0a:00:00:00:00:01"})
    assert db_instances.get(store, "c1").volatile == {"volatile.eth0.hwaddr": "0a:00:00:00:00:01"}  # type: ignore[union-attr]
    db_instances.delete(store, "c1")
    assert db_instances.get(store, "c1") is None


def test_a_caller_changing_what_it_read_changes_nothing_kept(store: Store) -> None:
    db_instances.create(store, InstanceRecord("c1", "container", devices={"eth0": nic("eth0")}))
    db_networks.create(store, NetworkRecord("n0", "bridge", config={"ipv4.address": "10.250.0.1/24"}))
    rec = db_instances.get(store, "c1")
    assert rec is not None
    rec.devices["eth0"]["name"] = "changed"
    rec.devices["eth9"] = nic("eth9")
    rec.volatile["volatile.x"] = "y"
    net = db_networks.get(store, "n0")
    assert net is not None
    net.config["ipv4.address"] = "none"
    again = db_instances.get(store, "c1")
    assert again is not None and again.devices == {"eth0": nic("eth0")} and again.volatile == {}
    assert db_networks.get(store, "n0").config == {"ipv4.address": "10.250.0.1/24"}  # type: ignore[union-attr]


def test_a_failed_write_leaves_reads_as_stored(store: Store) -> None:
    db_instances.create(store, InstanceRecord("c1", "container", description="before"))
    assert db_instances.get(store, "c1").description == "before"  # type: ignore[union-attr]
    with pytest.raises(RuntimeError), store.tx() as c:
        c.execute("UPDATE instances SET description = 'after' WHERE name = 'c1'")
        assert db_instances.get(store, "c1").description == "after"  # type: ignore[union-attr]
        raise RuntimeError("rolled back")
    assert db_instances.get(store, "c1").description == "before"  # type: ignore[union-attr]


def test_a_write_nested_in_a_read_drops_what_was_kept(store: Store) -> None:
    db_instances.create(store, InstanceRecord("c1", "container", description="before"))
    assert db_instances.get(store, "c1").description == "before"  # type: ignore[union-attr]
    with store.read() as c:
        c.execute("UPDATE instances SET description = 'after' WHERE name = 'c1'")
    assert db_instances.get(store, "c1").description == "after"  # type: ignore[union-attr]


def test_replace_rewrites_changed_devices_whole(store: Store) -> None:
    devices = {f"eth{i}": nic(f"eth{i}") for i in range(3)}
    db_instances.create(store, InstanceRecord("c1", "container", devices=devices))
    stored = db_instances.get(store, "c1").devices  # type: ignore[union-attr]
    new = {"eth0": nic("eth0"), "eth1": {"type": "nic", "network": "n1"}, "eth3": nic("eth3")}
    db_instances.replace(store, "c1", "", {}, new, stored=stored)
    assert db_instances.get(store, "c1").devices == new  # type: ignore[union-attr]
    # Read from the database itself, past anything kept: no row of eth1's old config is left.
    with store.tx() as c:
        rows = c.execute("SELECT d.name, dc.key, dc.value FROM devices d JOIN devices_config dc "
                         "ON dc.device_id = d.id WHERE d.name = 'eth1'").fetchall()  # fmt: skip
    assert {(r["key"], r["value"]) for r in rows} == {("network", "n1")}
