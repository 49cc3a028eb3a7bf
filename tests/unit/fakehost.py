"""A fake host layer for unit tests of device drivers: records every call instead of touching the kernel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pincus.host import bridgeport, links, nft, sysfs, tc


@dataclass
class FakeHost:
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    bridges: dict[str, bool] = field(default_factory=dict)  # bridge name -> vlan_filtering
    nics: set[str] = field(default_factory=set)
    fail: dict[str, Exception] = field(default_factory=dict)  # call name -> exception to raise once

    def recorder(self, name: str, result: Any = None) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args + tuple(kwargs.values())))
            if name in self.fail:
                raise self.fail.pop(name)
            return result

        return record

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]


@pytest.fixture
def fakehost(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    host = FakeHost()
    for mod, names in {
        links: ["create_veth_into_netns", "create_tap", "delete_link", "set_ipv6_disabled", "set_master",
                "set_up", "set_down", "set_txqlen", "add_route", "delete_route", "move_link_to_netns",
                "set_mtu", "set_mac", "rename_link", "create_vlan"],
        tc: ["apply_limits", "clear_limits"],
        nft: ["set_nic_filter", "remove_nic_filter"],
        bridgeport: ["set_port_isolated", "set_port_vlans"],
    }.items():  # fmt: skip
        for name in names:
            monkeypatch.setattr(mod, name, host.recorder(f"{mod.__name__.rsplit('.', 1)[1]}.{name}"))
    monkeypatch.setattr(links, "get_link", lambda name, netns=None: None)
    monkeypatch.setattr(sysfs, "interface_exists", lambda n: n in host.bridges or n in host.nics)
    monkeypatch.setattr(sysfs, "is_bridge", lambda n: n in host.bridges)
    monkeypatch.setattr(sysfs, "bridge_vlan_filtering", lambda n: host.bridges.get(n, False))
    monkeypatch.setattr(sysfs, "interface_mtu", lambda n: 1500)
    return host


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
