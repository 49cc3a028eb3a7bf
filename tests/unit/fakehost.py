"""A fake host for unit tests of device drivers: a hook on the State's host facade that answers
the host calls it knows (recording the ones that change something) and fails the test on any
other, so a new host call in a driver never reaches the real kernel from a unit test."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pincus.host import nft_runner
from pincus.host.links import LinkInfo
from pincus.state import State

# Host calls that change something: recorded, answered with None.
CHANGES = frozenset({
    "links.create_veth_into_netns", "links.delete_link", "links.set_master", "links.set_up", "links.set_down",
    "links.set_txqlen", "links.move_link_to_netns", "links.set_mtu", "links.set_mac", "links.rename_link",
    "links.create_vlan", "taps.create_tap", "sysctl.set_ipv6_disabled",
    "routes.add_route", "routes.delete_route",
    "tc.apply_limits", "tc.clear_limits",
    "nft_ports.set_nic_filter", "nft_ports.remove_nic_filter",
    "bridgeport.set_port_isolated", "bridgeport.set_port_vlans",
})  # fmt: skip


@dataclass
class FakeHost:
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    bridges: dict[str, bool] = field(default_factory=dict)  # bridge name -> vlan_filtering
    nics: set[str] = field(default_factory=set)
    links: dict[str, LinkInfo] = field(default_factory=dict)  # what links.get_link finds
    fail: dict[str, Exception] = field(default_factory=dict)  # call name -> exception to raise once
    unknown: list[str] = field(default_factory=list)  # host calls nobody taught this fake
    answers: dict[str, Callable[..., Any]] = field(default_factory=dict)  # a test's own queries, first

    def _queries(self) -> dict[str, Callable[..., Any]]:
        """Host calls that only look: answered from the fake's state, not recorded."""
        return {
            "links.get_link": lambda name, netns=None: self.links.get(name),
            "links.global_addresses": lambda name, netns=None: [],
            "sysfs.interface_exists": lambda n: n in self.bridges or n in self.nics,
            "sysfs.is_bridge": lambda n: n in self.bridges,
            "sysfs.bridge_vlan_filtering": lambda n: self.bridges.get(n, False),
            "sysfs.interface_mtu": lambda n: 1500,
            "sysfs.bridge_master": lambda n: None,
            "sysfs.is_bond_member": lambda n: False,
            "nft_runner.table_name": nft_runner.table_name,
        }

    def __call__(self, name: str, call: Callable[[], Any]) -> Any:
        assert isinstance(call, functools.partial), "FakeHost must be the innermost host hook"
        args, kwargs = call.args, call.keywords
        if name in CHANGES:
            self.calls.append((name, args + tuple(kwargs.values())))
            if name in self.fail:
                raise self.fail.pop(name)
            return None
        query = self.answers.get(name) or self._queries().get(name)
        if query is not None:
            return query(*args, **kwargs)
        self.unknown.append(name)
        pytest.fail(f"unit test reached the real host: {name}{args} (teach tests/unit/fakehost.py)")

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]


@pytest.fixture
def fakehost(state: State) -> Iterator[FakeHost]:
    """Every host call of STATE's drivers answered by a FakeHost (the test module gives `state`)."""
    host = FakeHost()
    with state.host.hooked(host):
        yield host
    # A driver that swallowed the failure still fails the test.
    assert not host.unknown, f"unit test reached the real host: {host.unknown}"


class FakeInstance:
    """The InstanceView a device sees."""

    def __init__(self, name: str = "c1", type_: str = "container", netns: Path | None = Path("/run/netns/x")):
        self.name = name
        self.type = type_
        self.netns = netns
        self.running = True
        self.vol: dict[str, str] = {}

    def volatile(self, key: str) -> str | None:
        return self.vol.get(key)

    def names_inside(self, exclude: str) -> set[str]:
        return set()

    def set_volatile(self, values: dict[str, str | None]) -> None:
        for k, v in values.items():
            if v is None:
                self.vol.pop(k, None)
            else:
                self.vol[k] = v
