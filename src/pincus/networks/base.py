"""The lifecycle every network type follows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pincus.config.keys import KeyTable, check_config
from pincus.db.networks import NetworkRecord
from pincus.errors import InvalidError
from pincus.host import files
from pincus.host.facade import Host
from pincus.ownership import Difference, Owned
from pincus.state import State


class NetworkDriver:
    type: ClassVar[str]
    keys: ClassVar[KeyTable]
    helper: ClassVar[str] = "helper process"  # what ensure_running restarts, for the logs

    def __init__(self, state: State, name: str, config: dict[str, str]) -> None:
        self.state = state
        self.name = name
        self.config = config

    @property
    def host(self) -> Host:
        """The door to the host (state.host): every host call goes through it."""
        return self.state.host

    @property
    def dir(self) -> Path:
        """The network's own files under the state directory."""
        return self.state.networks_dir / self.name

    def prepare_config(self, others: list[NetworkRecord], creating: bool) -> None:
        """Fill in what the user left to the driver (e.g. "auto" subnets) before it is checked and stored."""

    def validate_config(self, others: list[NetworkRecord]) -> None:
        """Check self.config against the key table and against the other networks. Changes nothing."""
        check_config(self.keys, self.config, f'network "{self.name}"')

    def validate_environment(self) -> None:
        """Check what the host must provide for this config. Changes nothing."""

    def validate_shared_environment(self) -> None:
        """On a cluster, before the network is recorded: what every member relies on (e.g. an
        existing OVN central) is there. Changes nothing."""

    def member_order(self, members: list[str]) -> list[str]:
        """The order the members of a cluster make the network in (removed in reverse)."""
        return members

    def start(self) -> None:
        """Bring the network's kernel objects into being (creation and daemon start)."""

    def update(self, old_config: dict[str, str], users: list[str]) -> None:
        """Apply a changed config to the host; self.config is the new one."""

    def stop(self) -> None:
        """Daemon shutdown: leave the network usable for running instances."""

    def remove(self) -> None:
        """Delete every kernel object and file the network made."""

    def rename(self, new_name: str) -> NetworkDriver:
        """Carry the network's state over to new_name; the driver under its new name."""
        renamed = type(self)(self.state, new_name, dict(self.config))
        self.host(files.move_dir, self.dir, renamed.dir)
        return renamed

    def ensure_running(self) -> int | None:
        """Supervision: restart a helper process of the network that died; its pid, or None."""
        return None

    def host_interface(self) -> str:
        """The host interface whose state `network info` shows."""
        return self.name

    def leases(self) -> list[dict[str, str]]:
        raise InvalidError(f'Network "{self.name}" is of type "{self.type}", which has no leases')

    @property
    def owner(self) -> str:
        """Who a difference belongs to, as `admin check` prints it."""
        return f'network "{self.name}"'

    def owned(self) -> list[Owned]:
        """The host objects this network made and answers for."""
        return []

    def check(self) -> list[Difference]:
        """How the kernel differs from what the config says the network owns. Changes nothing."""
        return []

    def repair(self, found: list[Difference]) -> None:
        """Put back the network's own objects among FOUND (the repairable ones of check())."""

    def info(self) -> dict[str, Any]:
        """Extra fields for `network show`."""
        return {}
