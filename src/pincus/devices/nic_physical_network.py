"""A NIC on a managed physical network: the parent decides which driver does the work.

A bridge parent is run by the bridged driver (veth/TAP, MAC, static allocation, limits, filtering,
VLANs); a plain NIC by the physical driver. This class only chooses and delegates: it copies nothing.
"""

from __future__ import annotations

from typing import ClassVar

from pincus.config.device_keys import NIC_BRIDGED
from pincus.config.keys import KeyTable
from pincus.db.networks import NetworkRecord
from pincus.devices.base import Device, InstanceView, NicRun, RunConfig
from pincus.devices.nic_bridged import BridgedNic
from pincus.devices.nic_physical import PhysicalNic
from pincus.host import sysfs
from pincus.ownership import Difference, Owned
from pincus.state import State


class PhysicalNetworkNic(Device):
    keys: ClassVar[KeyTable] = NIC_BRIDGED

    def __init__(
        self, state: State, instance: InstanceView, name: str, config: dict[str, str], network: NetworkRecord
    ) -> None:
        super().__init__(state, instance, name, config)
        self.network = network
        self.parent = network.config.get("parent", "")
        present = state.host(sysfs.interface_exists, self.parent)
        # A plain NIC this very device moved into its container is not on the host, yet not gone.
        held = instance.volatile(self.vkey("last_state.name")) is not None
        self.vanished = not present and not held
        self.bridged = present and state.host(sysfs.is_bridge, self.parent)
        self.inner: Device
        # The network decides these; the NIC may not set them (registry refuses it).
        if self.bridged:
            # On a bridge, the network's VLANs are the port's: untagged "vlan", tagged "vlan.tagged".
            # Its "mtu" is the bridge's own, which a bridged NIC follows anyway.
            inherited = self._from_network("vlan", "vlan.tagged")
            self.inner = BridgedNic(
                state, instance, name, {**inherited, **config, "nictype": "bridged", "parent": self.parent}
            )
        else:
            inherited = self._from_network("vlan", "gvrp", "mtu")
            self.inner = PhysicalNic(
                state, instance, name, {**inherited, **config, "nictype": "physical", "parent": self.parent}
            )

    def _from_network(self, *keys: str) -> dict[str, str]:
        return {k: self.network.config[k] for k in keys if k in self.network.config}

    def key_table(self) -> KeyTable:
        return self.inner.key_table()

    def validate_config(self) -> None:
        if self.vanished:
            assert isinstance(self.inner, PhysicalNic)
            raise self.inner.missing_parent_error(f'physical network "{self.network.name}"')
        self.inner.validate_config()

    def validate_environment(self) -> None:
        self.inner.validate_environment()

    def start(self) -> RunConfig:
        return self.inner.start()

    def post_start(self) -> None:
        self.inner.post_start()

    def update(self, old_config: dict[str, str]) -> None:
        old = PhysicalNetworkNic(self.state, self.instance, self.name, old_config, self.network)
        self.inner.update(old.inner.config)

    def stop(self) -> RunConfig:
        return self.inner.stop()

    def post_stop(self) -> None:
        self.inner.post_stop()

    def remove(self) -> None:
        self.inner.remove()

    def leased_addresses(self) -> list[str]:
        return self.inner.leased_addresses()

    def describe(self) -> str:
        if self.bridged:
            return f"bridged via physical network {self.network.name}: parent {self.parent} is a bridge"
        return f"{self.inner.describe()} (physical network {self.network.name})"

    def owned(self) -> list[Owned]:
        return [] if self.vanished else self.inner.owned()

    def check(self) -> list[Difference]:
        # A vanished parent is the network's to report (it is the admin's, and never made).
        return [] if self.vanished else self.inner.check()

    def repair(self, found: list[Difference]) -> list[NicRun]:
        return [] if self.vanished else self.inner.repair(found)
