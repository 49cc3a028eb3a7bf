"""The lifecycle every network type follows."""

from __future__ import annotations

from typing import Any, ClassVar

from pincus.config.keys import KeyTable, check_config
from pincus.db.networks import NetworkRecord
from pincus.state import State


class NetworkDriver:
    type: ClassVar[str]
    keys: ClassVar[KeyTable]

    def __init__(self, state: State, name: str, config: dict[str, str]) -> None:
        self.state = state
        self.name = name
        self.config = config

    def validate_config(self, others: list[NetworkRecord]) -> None:
        """Check self.config against the key table and against the other networks. Changes nothing."""
        check_config(self.keys, self.config, f'network "{self.name}"')

    def validate_environment(self) -> None:
        """Check what the host must provide for this config. Changes nothing."""

    def start(self) -> None:
        """Bring the network's kernel objects into being (creation and daemon start)."""

    def update(self, old_config: dict[str, str], users: list[str]) -> None:
        """Apply a changed config to the host; self.config is the new one."""

    def stop(self) -> None:
        """Daemon shutdown: leave the network usable for running instances."""

    def remove(self) -> None:
        """Delete every kernel object and file the network made."""

    def info(self) -> dict[str, Any]:
        """Extra fields for `network show`."""
        return {}
