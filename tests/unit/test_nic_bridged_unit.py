"""The bridged NIC against a fake host layer: paths this kernel cannot run (VLANs) and rollback order."""

from __future__ import annotations

from pathlib import Path

import pytest

from pincus.db.store import Store
from pincus.devices.nic_bridged import BridgedNic
from pincus.errors import ConflictError, HostError, InvalidError, UnsupportedError
from pincus.events import EventHub
from pincus.host.links import LinkInfo
from pincus.state import State
from tests.unit.fakehost import FakeHost, FakeInstance


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State(
        dir=tmp_path,
        store=Store(tmp_path / "db"),
        events=EventHub(),
        features={"bridge_vlan_filtering": True, "tc_police": False},
        tag="ab12",
    )


def nic(state: State, inst: FakeInstance, **config: str) -> BridgedNic:
    return BridgedNic(state, inst, "eth0", {"type": "nic", "nictype": "bridged", "parent": "br0", **config})


def test_vlans_are_set_on_the_port_when_the_bridge_filters_vlans(state: State, fakehost: FakeHost) -> None:
    fakehost.bridges["br0"] = True
    inst = FakeInstance()
    dev = nic(state, inst, vlan="10", **{"vlan.tagged": "20-21,30"})
    dev.validate_config()
    dev.validate_environment()
    run = dev.start()
    host_name = run.nics[0].host_name
    assert fakehost.of("bridgeport.set_port_vlans") == [(host_name, 10, [20, 21, 30])]
    # Live update to other VLANs.
    dev.config["vlan"] = "11"
    dev.update({**dev.config, "vlan": "10"})
    assert fakehost.of("bridgeport.set_port_vlans")[-1] == (host_name, 11, [20, 21, 30])


def test_vlan_without_kernel_support_names_the_feature_and_changes_nothing(
    state: State, fakehost: FakeHost
) -> None:
    state.features["bridge_vlan_filtering"] = False
    fakehost.bridges["br0"] = True
    dev = nic(state, FakeInstance(), vlan="10")
    with pytest.raises(UnsupportedError, match="bridge VLAN filtering is not supported by this kernel"):
        dev.validate_environment()
    assert fakehost.calls == []


def test_vlan_on_a_bridge_with_filtering_off_is_refused(state: State, fakehost: FakeHost) -> None:
    fakehost.bridges["br0"] = False
    dev = nic(state, FakeInstance(), **{"vlan.tagged": "20"})
    with pytest.raises(InvalidError, match="vlan_filtering=0"):
        dev.validate_environment()
    assert fakehost.calls == []


def test_failed_start_undoes_in_reverse_order(state: State, fakehost: FakeHost) -> None:
    fakehost.bridges["br0"] = False
    inst = FakeInstance()
    dev = nic(state, inst, **{"limits.ingress": "10Mbit", "security.mac_filtering": "true"})
    fakehost.fail["links.set_up"] = HostError("boom")
    with pytest.raises(HostError):
        dev.start()
    names = fakehost.names()
    done = names[: names.index("links.set_up") + 1]
    undone = names[len(done) :]
    assert done[0] == "links.create_veth_into_netns"
    assert undone == ["tc.clear_limits", "nft_ports.remove_nic_filter", "links.delete_link"]
    assert inst.vol == {}


def test_failed_live_update_restores_the_old_settings(state: State, fakehost: FakeHost) -> None:
    fakehost.bridges["br0"] = False
    inst = FakeInstance()
    dev = nic(state, inst, **{"limits.ingress": "10Mbit"})
    host_name = dev.start().nics[0].host_name
    old = dict(dev.config)
    dev.config = {**old, "limits.ingress": "20Mbit", "security.port_isolation": "true"}
    fakehost.fail["bridgeport.set_port_isolated"] = HostError("no")
    fakehost.calls.clear()
    with pytest.raises(HostError):
        dev.update(old)
    applied = fakehost.of("tc.apply_limits")
    assert [a[1].ingress_bps for a in applied] == [20_000_000, 10_000_000]  # new, then the old back
    assert fakehost.of("bridgeport.set_port_isolated") == [(host_name, True), (host_name, False)]


def test_ip_filtering_needs_an_address(state: State, fakehost: FakeHost) -> None:
    with pytest.raises(InvalidError, match=r"ipv4\.address"):
        nic(state, FakeInstance(), **{"security.ipv4_filtering": "true"}).validate_config()
    nic(
        state, FakeInstance(), **{"security.ipv4_filtering": "true", "ipv4.address": "none"}
    ).validate_config()


def test_limits_max_sets_both_directions(state: State, fakehost: FakeHost) -> None:
    fakehost.bridges["br0"] = False
    dev = nic(state, FakeInstance(), **{"limits.max": "5Mbit", "limits.egress": "1Mbit"})
    dev.start()
    limits = fakehost.of("tc.apply_limits")[0][1]
    assert (limits.ingress_bps, limits.egress_bps) == (5_000_000, 1_000_000)


def test_vm_gets_a_tap_and_boot_priority(state: State, fakehost: FakeHost) -> None:
    fakehost.bridges["br0"] = False
    dev = nic(state, FakeInstance(type_="virtual-machine", netns=None), **{"boot.priority": "5"})
    run = dev.start()
    assert fakehost.names()[0] == "taps.create_tap"
    assert run.nics[0].tap and run.nics[0].boot_priority == 5 and run.nics[0].host_name.startswith("tapab12")


def port(name: str) -> LinkInfo:
    return LinkInfo(9, name, "veth", "10:66:6a:00:00:09", 1500, True, "UP", True, "br0", 0)


def test_a_start_finishes_a_stop_that_left_its_port_behind(state: State, fakehost: FakeHost) -> None:
    fakehost.bridges["br0"] = False
    inst = FakeInstance()
    dev = nic(state, inst, **{"security.mac_filtering": "true"})
    host_name = dev.start().nics[0].host_name
    fakehost.fail["links.delete_link"] = HostError("busy")
    with pytest.raises(HostError):
        dev.post_stop()
    assert inst.vol["volatile.eth0.host_name"] == host_name  # kept: the stop is not finished
    fakehost.links[host_name] = port(host_name)
    fakehost.calls.clear()
    dev.start()
    names = fakehost.names()
    assert names.index("links.delete_link") < names.index("links.create_veth_into_netns")
    assert fakehost.of("links.delete_link")[0] == (host_name,)


def test_a_port_name_the_nic_does_not_hold_is_a_conflict(state: State, fakehost: FakeHost) -> None:
    fakehost.bridges["br0"] = False
    dev = nic(state, FakeInstance(), host_name="vethtaken0")
    fakehost.links["vethtaken0"] = port("vethtaken0")
    with pytest.raises(ConflictError, match="already exists"):
        dev.start()
    assert fakehost.calls == []
