"""Network type name -> driver class."""

from __future__ import annotations

from pincus.errors import InvalidError
from pincus.networks.base import NetworkDriver
from pincus.networks.bridge import BridgeNetwork
from pincus.networks.ovn import OvnNetwork
from pincus.networks.physical import PhysicalNetwork

DRIVERS: dict[str, type[NetworkDriver]] = {
    "bridge": BridgeNetwork,
    "physical": PhysicalNetwork,
    "ovn": OvnNetwork,
}


def driver_class(type_: str) -> type[NetworkDriver]:
    cls = DRIVERS.get(type_)
    if cls is None:
        raise InvalidError(f'Invalid network type "{type_}" (supported: {", ".join(sorted(DRIVERS))})')
    return cls
