"""Physical networks: an existing host NIC or bridge named by `parent`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from pincus.config.keys import KeyTable
from pincus.config.network_keys import PHYSICAL
from pincus.db import instances as db_instances
from pincus.db.networks import NetworkRecord
from pincus.errors import ConflictError, InvalidError, NotFoundError
from pincus.host import files, links, sysfs
from pincus.networks.base import NetworkDriver
from pincus.networks.ovn import check_uplink_config
from pincus.ownership import Difference, Owned

log = logging.getLogger(__name__)


class PhysicalNetwork(NetworkDriver):
    type: ClassVar[str] = "physical"
    keys: ClassVar[KeyTable] = PHYSICAL

    @property
    def parent(self) -> str:
        return self.config.get("parent", "")

    def parent_is_bridge(self) -> bool:
        return self.host(sysfs.is_bridge, self.parent)

    def validate_config(self, others: list[NetworkRecord]) -> None:
        super().validate_config(others)
        if not self.parent:
            raise InvalidError(
                f'Network "{self.name}" needs a "parent" (an existing host interface or bridge)'
            )
        if not self.host(sysfs.interface_exists, self.parent):
            raise NotFoundError(f'Parent interface "{self.parent}" of network "{self.name}" does not exist')
        bridge = self.parent_is_bridge()
        if "vlan.tagged" in self.config and not bridge:
            raise InvalidError(
                f'Key "vlan.tagged" of network "{self.name}" needs a bridge parent; '
                f'"{self.parent}" is not a bridge'
            )
        self._check_parent_sharing(others, bridge)
        check_uplink_config(self.name, self.config, others)

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

    # --- the parent's MTU: set while the network exists, then given back -------------------------

    @property
    def _saved_mtu_file(self) -> Path:
        return self.state.networks_dir / self.name / "parent-mtu.json"

    def start(self) -> None:
        if not self.host(sysfs.interface_exists, self.parent):
            holders = db_instances.volatile_holders(self.state.store, ".last_state.name", self.parent)
            if holders:
                # Moved into an instance (a daemon restarted meanwhile): in use, not failed. It
                # comes back with the MTU it had when it left, which was this network's.
                log.info(
                    'Network "%s": parent "%s" is in instance "%s"', self.name, self.parent, holders[0][0]
                )
                return
            raise NotFoundError(f'Parent interface "{self.parent}" of network "{self.name}" does not exist')
        self._apply_mtu(self.parent, self.config.get("mtu"))

    def _apply_mtu(self, parent: str, mtu: str | None) -> None:
        if mtu is None:
            return
        if self.host(files.read_json, self._saved_mtu_file) is None:
            self.host(
                files.write_json,
                self._saved_mtu_file,
                {"parent": parent, "mtu": self.host(sysfs.interface_mtu, parent)},
            )
        self.host(links.set_mtu, parent, int(mtu))

    def _restore_mtu(self) -> None:
        saved = self.host(files.read_json, self._saved_mtu_file)
        if saved is None:
            return
        if self.host(sysfs.interface_exists, saved["parent"]):
            self.host(links.set_mtu, saved["parent"], int(saved["mtu"]))
        self.host(files.remove, self._saved_mtu_file)

    def update(self, old_config: dict[str, str], users: list[str]) -> None:
        if (old_config.get("parent"), old_config.get("mtu")) == (self.parent, self.config.get("mtu")):
            return
        self._restore_mtu()
        self._apply_mtu(self.parent, self.config.get("mtu"))

    def remove(self) -> None:
        self._restore_mtu()
        self.host(files.remove_tree, self.state.networks_dir / self.name)

    def host_interface(self) -> str:
        return self.parent

    def owned(self) -> list[Owned]:
        """The parent is the admin's; the network owns only the MTU it sets on it."""
        mtu = self.config.get("mtu")
        return [Owned("mtu", f"{mtu} on {self.parent}")] if mtu is not None else []

    def check(self) -> list[Difference]:
        """The parent is the admin's: a missing one is reported (unless a NIC of ours holds it inside
        its container), never made; its MTU is the network's while the network exists."""
        if not self.host(sysfs.interface_exists, self.parent):
            if db_instances.volatile_holders(self.state.store, ".last_state.name", self.parent):
                return []
            expected = "present (the admin's: never made by pincus)"
            return [Difference(self.owner, "interface", self.parent, expected, "missing", repairable=False)]
        mtu = self.config.get("mtu")
        if mtu is not None and (found := self.host(sysfs.interface_mtu, self.parent)) != int(mtu):
            return [Difference(self.owner, "mtu", self.parent, mtu, str(found))]
        return []

    def repair(self, found: list[Difference]) -> None:
        if any(d.kind == "mtu" for d in found):
            self.host(links.set_mtu, self.parent, int(self.config["mtu"]))

    def info(self) -> dict[str, Any]:
        exists = self.host(sysfs.interface_exists, self.parent)
        return {"parent_is_bridge": exists and self.parent_is_bridge()}
