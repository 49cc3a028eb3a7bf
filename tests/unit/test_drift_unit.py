"""The bridged NIC's drift check against a fake host: each difference is found, repair re-applies
only the steps for what differs, and what is not pincus's is never touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from pincus.db.store import Store
from pincus.devices.nic_bridged import BridgedNic
from pincus.events import EventHub
from pincus.host import nft_ports
from pincus.host.links import LinkInfo
from pincus.state import State
from tests.unit.fakehost import FakeHost, FakeInstance

HOST_NAME = "vethab12000001"
MAC = "10:66:6a:00:00:01"


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State(dir=tmp_path, store=Store(tmp_path / "db"), events=EventHub(), features={}, tag="ab12")


def running_nic(state: State) -> BridgedNic:
    inst = FakeInstance()
    inst.vol = {"volatile.eth0.host_name": HOST_NAME, "volatile.eth0.hwaddr": MAC}
    config = {"type": "nic", "nictype": "bridged", "parent": "br0", "ipv4.address": "10.250.0.5",
              "security.ipv4_filtering": "true", "limits.ingress": "1Mbit"}  # fmt: skip
    return BridgedNic(state, inst, "eth0", config)


def elements(dev: BridgedNic) -> list[str]:
    """The set elements the NIC's filter puts in the bridge table."""
    f = dev.settings(dev.config, HOST_NAME, MAC).filter
    assert f is not None
    return nft_ports.nic_filter_elements(f)


def port(up: bool = True, master: str | None = "br0") -> LinkInfo:
    return LinkInfo(1, HOST_NAME, "veth", MAC, 1500, up, "UP", True, master, 1000)


@pytest.fixture
def kernel(fakehost: FakeHost) -> dict[str, object]:
    """What the fake kernel holds for the port; a test changes one thing."""
    fakehost.bridges["br0"] = False
    held: dict[str, object] = {"link": port(), "elements": None, "qdiscs": {"root": "tbf"}}
    fakehost.answers.update({
        "links.get_link": lambda name, netns=None: held["link"] if name == HOST_NAME else None,
        "nft_ports.nic_filter_elements": nft_ports.nic_filter_elements,
        "nft_ports.port_filter_elements": lambda tag, p: held["elements"],
        "tc.qdiscs": lambda dev, netns=None: held["qdiscs"],
        "bridgeport.port_isolated": lambda p: False,
    })  # fmt: skip
    return held


def test_a_port_as_started_has_no_difference(
    state: State, fakehost: FakeHost, kernel: dict[str, object]
) -> None:
    dev = running_nic(state)
    kernel["elements"] = elements(dev)
    assert dev.check() == []


def test_each_difference_is_repaired_by_its_own_step_only(
    state: State, fakehost: FakeHost, kernel: dict[str, object]
) -> None:
    dev = running_nic(state)
    want = elements(dev)
    kernel.update(link=port(up=False), elements=want[1:], qdiscs={"root": "noqueue"})
    found = dev.check()
    assert [(d.kind, d.name, d.expected, d.found) for d in found] == [
        ("interface state", HOST_NAME, "up", "down"),
        ("nft element", f"bridge pincus_ab12 {want[0]}", "present", "missing"),
        ("tc qdisc", f"root on {HOST_NAME}", "tbf", "noqueue"),
    ]
    assert all(d.owner == 'instance "c1" device "eth0"' and d.repairable for d in found)
    assert dev.repair(found) == []
    assert sorted(fakehost.names()) == ["links.set_up", "nft_ports.set_nic_filter", "tc.apply_limits"]


def test_a_vanished_unmanaged_bridge_is_reported_and_nothing_is_made(
    state: State, fakehost: FakeHost, kernel: dict[str, object]
) -> None:
    del fakehost.bridges["br0"]
    kernel["link"] = None  # its ports went with it
    dev = running_nic(state)
    found = dev.check()
    assert [(d.kind, d.name, d.found, d.repairable) for d in found] == [
        ("bridge", "br0", "missing", False),
        ("veth", HOST_NAME, "missing", False),
    ]
    assert dev.repair(found) == []
    assert fakehost.calls == []


def test_a_deleted_veth_is_made_again_as_start_makes_it(
    state: State, fakehost: FakeHost, kernel: dict[str, object]
) -> None:
    kernel["link"] = None
    dev = running_nic(state)
    (found,) = dev.check()
    assert (found.kind, found.found, found.repairable) == ("veth", "missing", True)
    (nic,) = dev.repair([found])
    assert (nic.host_name, nic.name, nic.hwaddr) == (HOST_NAME, "eth0", MAC)
    names = fakehost.names()
    assert names[0] == "links.create_veth_into_netns" and "links.set_master" not in names
    assert fakehost.calls[0][1][-1] == dev.parent  # born on the bridge, as start makes it
    assert "nft_ports.set_nic_filter" in names and "tc.apply_limits" in names
    assert "links.delete_link" not in names
