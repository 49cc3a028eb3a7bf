"""Managed bridge networks (type=bridge)."""

from __future__ import annotations

from typing import ClassVar

from pincus.config.keys import KeyTable
from pincus.config.network_keys import BRIDGE
from pincus.networks.base import NetworkDriver


class BridgeNetwork(NetworkDriver):
    type: ClassVar[str] = "bridge"
    keys: ClassVar[KeyTable] = BRIDGE
