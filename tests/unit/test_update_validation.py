"""An instance update validates the devices it changes, and what two NICs of one instance may not share."""

from __future__ import annotations

from pathlib import Path

import pytest

from pincus.db import instances as db_instances
from pincus.db.instances import InstanceRecord
from pincus.db.store import Store
from pincus.devices.clashes import refuse_clashes_within
from pincus.errors import ConflictError, InvalidError
from pincus.events import EventHub
from pincus.server.images import Images
from pincus.server.instances import Instances
from pincus.server.storage import Storage
from pincus.state import State


@pytest.fixture
def instances(tmp_path: Path) -> Instances:
    state = State(dir=tmp_path, store=Store(tmp_path / "db"), events=EventHub(), features={}, tag="ab12")
    return Instances(state, Storage(state), Images(state))


def bridged(parent: str = "br0", **config: str) -> dict[str, str]:
    return {"type": "nic", "nictype": "bridged", "parent": parent, **config}


def add(instances: Instances, name: str, devices: dict[str, dict[str, str]]) -> None:
    instances.update(name, {"devices": devices}, patch=True)


def test_two_nics_added_together_with_one_mac_are_refused(instances: Instances) -> None:
    instances.create({"name": "c1", "profiles": []})
    mac = "0a:00:00:00:00:01"
    with pytest.raises(
        ConflictError,
        match=r'"eth0": hwaddr 0a:00:00:00:00:01 is already used by device "eth1" of this instance',
    ):
        add(instances, "c1", {"eth0": bridged(hwaddr=mac), "eth1": bridged(hwaddr=mac.upper())})
    assert db_instances.get(instances.state.store, "c1").devices == {}  # type: ignore[union-attr]


def test_a_new_nic_may_not_take_the_mac_of_one_already_there(instances: Instances) -> None:
    instances.create({"name": "c1", "profiles": [], "devices": {"eth0": bridged(hwaddr="0a:00:00:00:00:01")}})
    with pytest.raises(ConflictError, match='already used by device "eth0" of instance "c1"'):
        add(instances, "c1", {"eth1": bridged(hwaddr="0a:00:00:00:00:01")})


def test_one_mac_on_two_bridges_is_fine(instances: Instances) -> None:
    instances.create({"name": "c1", "profiles": []})
    mac = "0a:00:00:00:00:01"
    add(instances, "c1", {"eth0": bridged(hwaddr=mac), "eth1": bridged("br1", hwaddr=mac)})
    assert set(db_instances.get(instances.state.store, "c1").devices) == {"eth0", "eth1"}  # type: ignore[union-attr]


def test_only_the_devices_that_change_are_validated(instances: Instances) -> None:
    # A device stored as it is (no parent: its own validation refuses it) stays out of the way of
    # an update that does not touch it, and is refused as soon as the update changes it.
    store = instances.state.store
    db_instances.create(
        store, InstanceRecord("c1", "container", devices={"bad": {"type": "nic", "nictype": "bridged"}})
    )
    add(instances, "c1", {"eth0": bridged()})
    assert set(db_instances.get(store, "c1").devices) == {"bad", "eth0"}  # type: ignore[union-attr]
    with pytest.raises(InvalidError, match='needs a "parent"'):
        add(instances, "c1", {"bad": {"type": "nic", "nictype": "bridged", "mtu": "1400"}})
    with pytest.raises(InvalidError, match='needs a "parent"'):
        instances.update(
            "c1",
            {"devices": {"eth0": bridged(), "bad": {"type": "nic", "nictype": "bridged", "name": "x"}}},
            patch=False,
        )


def test_clash_pass_compares_parsed_values_and_skips_none() -> None:
    devices = {
        "a": bridged(**{"ipv6.address": "fd42:250::5"}),
        "b": bridged(**{"ipv6.address": "FD42:250:0::5"}),
        "c": bridged(**{"ipv4.address": "none"}),
        "d": bridged(**{"ipv4.address": "none"}),
    }
    refuse_clashes_within(devices, ["c", "d"])
    refuse_clashes_within({n: devices[n] for n in "acd"}, ["a"])
    with pytest.raises(ConflictError, match=r'ipv6\.address FD42:250:0::5 is already used by device "a"'):
        refuse_clashes_within(devices, ["b"])
