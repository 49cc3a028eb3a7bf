"""Which driver runs a device: nictype, or the type of the managed network it names."""

from __future__ import annotations

import re

from pincus.db import networks as db_networks
from pincus.devices.base import Device, InstanceView
from pincus.devices.disk import Disk
from pincus.devices.nic_bridged import BridgedNic
from pincus.devices.nic_ovn import OvnNic
from pincus.devices.nic_physical import PhysicalNic
from pincus.devices.nic_physical_network import PhysicalNetworkNic
from pincus.errors import InvalidError, NotFoundError
from pincus.state import State

_DEVICE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")

# Keys a NIC may not set itself when its network decides them.
_NETWORK_DECIDES = ("nictype", "parent", "mtu", "vlan", "vlan.tagged", "gvrp")


def check_device_name(name: str) -> None:
    if not _DEVICE_NAME.fullmatch(name):
        raise InvalidError(
            f'Invalid device name "{name}": use 1-63 letters, digits, "_", "." or "-", starting with a letter'
        )


def load(state: State, instance: InstanceView, name: str, config: dict[str, str]) -> Device:
    check_device_name(name)
    dtype = config.get("type")
    if dtype == "disk":
        return Disk(state, instance, name, dict(config))
    if dtype != "nic":
        raise InvalidError(f'Device "{name}": unsupported device type "{dtype}" (supported: nic, disk)')
    if "network" in config:
        return _network_nic(state, instance, name, config)
    nictype = config.get("nictype")
    if nictype == "bridged":
        return BridgedNic(state, instance, name, dict(config))
    if nictype == "physical":
        return PhysicalNic(state, instance, name, dict(config))
    if nictype is None:
        raise InvalidError(f'Device "{name}": a nic needs "nictype" or "network"')
    raise InvalidError(f'Device "{name}": unsupported nictype "{nictype}" (supported: bridged, physical)')


def _network_nic(state: State, instance: InstanceView, name: str, config: dict[str, str]) -> Device:
    network = config["network"]
    rec = db_networks.get(state.store, network)
    if rec is None:
        raise NotFoundError(f'Device "{name}": network "{network}" not found')
    for key in _NETWORK_DECIDES:
        if key in config and not (key == "mtu" and rec.type == "bridge"):
            raise InvalidError(f'Device "{name}": Cannot use "{key}" in conjunction with "network"')
    if rec.type == "bridge":
        effective = {**config, "nictype": "bridged", "parent": rec.name}
        if "mtu" not in effective and "bridge.mtu" in rec.config:
            effective["mtu"] = rec.config["bridge.mtu"]
        return BridgedNic(state, instance, name, effective)
    if rec.type == "physical":
        return PhysicalNetworkNic(state, instance, name, dict(config), rec)
    if rec.type == "ovn":
        return OvnNic(state, instance, name, dict(config), rec)
    raise InvalidError(f'Device "{name}": network "{network}" of type "{rec.type}" cannot be used by a NIC')
