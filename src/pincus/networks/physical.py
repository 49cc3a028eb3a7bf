"""Physical networks: an existing host NIC or bridge named by `parent`."""

from __future__ import annotations

from typing import Any, ClassVar

from pincus.config.keys import KeyTable
from pincus.config.network_keys import PHYSICAL
from pincus.db.networks import NetworkRecord
from pincus.errors import ConflictError, InvalidError, NotFoundError
from pincus.host import sysfs
from pincus.networks.base import NetworkDriver


class PhysicalNetwork(NetworkDriver):
    type: ClassVar[str] = "physical"
    keys: ClassVar[KeyTable] = PHYSICAL

    @property
    def parent(self) -> str:
        return self.config.get("parent", "")

    def parent_is_bridge(self) -> bool:
        return sysfs.is_bridge(self.parent)

    def validate_config(self, others: list[NetworkRecord]) -> None:
        super().validate_config(others)
        if not self.parent:
            raise InvalidError(
                f'Network "{self.name}" needs a "parent" (an existing host interface or bridge)'
            )
        if not sysfs.interface_exists(self.parent):
            raise NotFoundError(f'Parent interface "{self.parent}" of network "{self.name}" does not exist')
        bridge = self.parent_is_bridge()
        if "vlan.tagged" in self.config and not bridge:
            raise InvalidError(
                f'Key "vlan.tagged" of network "{self.name}" needs a bridge parent; '
                f'"{self.parent}" is not a bridge'
            )
        self._check_parent_sharing(others, bridge)

    def _check_parent_sharing(self, others: list[NetworkRecord], bridge: bool) -> None:
        if bridge:
            return  # many networks may hang off one bridge
        vlan = self.config.get("vlan")
        for other in others:
            if other.type != self.type or other.name == self.name:
                continue
            if other.config.get("parent") != self.parent:
                continue
            other_vlan = other.config.get("vlan")
            if vlan is None or other_vlan is None or int(vlan) == int(other_vlan):
                raise ConflictError(
                    f'Parent interface "{self.parent}" is already used by network "{other.name}"; '
                    'two networks share a non-bridge parent only with different "vlan" values'
                )

    def info(self) -> dict[str, Any]:
        exists = sysfs.interface_exists(self.parent)
        return {"parent_is_bridge": exists and self.parent_is_bridge()}
