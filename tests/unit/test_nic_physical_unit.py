"""Physical NIC paths this kernel cannot run: a VLAN sub-interface (fake host) and PCI passthrough
to a VM (fake sysfs tree with a kernel that reacts to driver writes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pincus.db.store import Store
from pincus.devices.nic_physical import PhysicalNic
from pincus.errors import UnsupportedError
from pincus.events import EventHub
from pincus.host import addresses, links, pci, sysfs
from pincus.state import State
from tests.host.test_pci import SLOT, FakeSysfs
from tests.unit.fakehost import FakeHost, FakeInstance


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State(dir=tmp_path / "state", store=Store(tmp_path / "db"), events=EventHub(),
                 features={"vlan_8021q": True}, tag="ab12")  # fmt: skip


def _no_host_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysfs, "bridge_master", lambda n: None)
    monkeypatch.setattr(sysfs, "is_bond_member", lambda n: False)
    monkeypatch.setattr(addresses, "global_addresses", lambda n, netns=None: [])


def test_vlan_sub_interface_is_created_moved_in_and_deleted_on_stop(state: State, fakehost: FakeHost) -> None:
    fakehost.nics.add("eth7")
    info = links.LinkInfo(
        index=42, name="eth7.10", kind="vlan", mac="02:00:00:00:00:07", mtu=1500, up=False,
        operstate="down", carrier=False, master=None, txqlen=1000,
    )  # fmt: skip
    parent = links.LinkInfo(
        index=7, name="eth7", kind=None, mac="02:00:00:00:00:70", mtu=1500, up=False,
        operstate="down", carrier=False, master=None, txqlen=1000,
    )  # fmt: skip
    known = fakehost.links
    known.update({"eth7.10": info, "eth7": parent})
    inst = FakeInstance()
    config = {"type": "nic", "nictype": "physical", "parent": "eth7", "vlan": "10", "gvrp": "true"}
    config["name"] = "eth0"
    dev = PhysicalNic(state, inst, "eth0", config)
    dev.validate_config()
    dev.validate_environment()
    run = dev.start()
    assert fakehost.of("links.create_vlan") == [("eth7.10", "eth7", 10, True)]
    assert run.nics[0].move_link == "eth7.10" and run.nics[0].name == "eth0"
    assert inst.vol["volatile.eth0.last_state.created"] == "true"
    # The parent was down: a VLAN interface cannot come up on it, so it is brought up first.
    assert fakehost.of("links.set_up") == [("eth7",)]
    assert inst.vol["volatile.eth0.last_state.parent_up"] == "false"
    # On stop the sub-interface comes back out of the container and is deleted, not restored,
    # and the parent goes down again: no other VLAN uses it.
    known["eth0"] = info
    dev.post_stop()
    assert fakehost.of("links.move_link_to_netns") == [("eth0", None, "eth7.10", "/run/netns/x")]
    assert fakehost.of("links.delete_link")[-1] == ("eth7.10",)
    assert fakehost.of("links.set_down")[-1] == ("eth7",)
    assert not [k for k in inst.vol if "last_state" in k]


def test_vlan_without_8021q_names_the_feature(state: State, fakehost: FakeHost) -> None:
    state.features["vlan_8021q"] = False
    fakehost.nics.add("eth7")
    config = {"type": "nic", "nictype": "physical", "parent": "eth7", "vlan": "10", "name": "eth0"}
    dev = PhysicalNic(state, FakeInstance(), "eth0", config)
    with pytest.raises(UnsupportedError, match=r"802\.1Q VLAN interfaces are not supported by this kernel"):
        dev.validate_environment()
    assert fakehost.calls == []


def test_vm_gets_the_pci_function_through_vfio_and_the_driver_back_on_stop(
    state: State,
    fake: FakeSysfs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_host_use(monkeypatch)
    inst = FakeInstance(type_="virtual-machine", netns=None)
    dev = PhysicalNic(state, inst, "eth0", {"type": "nic", "nictype": "physical", "parent": "eth7"})
    dev.validate_config()
    dev.validate_environment()
    run = dev.start()
    devdir = f"bus/pci/devices/{SLOT}"
    assert (f"{devdir}/driver_override", "vfio-pci") in fake.writes
    assert fake.driver(SLOT) == "vfio-pci"
    assert run.nics[0].qemu_args == ["-device", f"vfio-pci,host={SLOT},id=dev-eth0"]
    assert inst.vol["volatile.eth0.last_state.pci.driver"] == "igb"
    dev.post_stop()
    assert fake.driver(SLOT) == "igb"
    assert (f"{devdir}/driver_override", "\n") in fake.writes
    assert not [k for k in inst.vol if "last_state" in k]
    assert pci.interfaces_of(pci.PciDevice(SLOT, "igb", None)) == ["eth7"]
