"""The disk device: the instance's root volume on a pool (path "/"), or a host directory
bind-mounted inside a container.

At an instance's start the container's spawn mounts its root volume and its bind disks
(instances/container.py); a bind disk added to or removed from a running container is bound into
or detached from its mount namespace here (hot-plug). The root disk changes only while stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pincus.config import validators as v
from pincus.config.keys import CONTAINER, Key, KeyTable
from pincus.db import instances as db_instances
from pincus.db import storage as db_storage
from pincus.devices.base import Device, RunConfig
from pincus.errors import InvalidError, NotFoundError
from pincus.host import mount_inject, tree
from pincus.storage.keys import is_absolute_path

LIVE_CHANGE_REFUSED = "disk devices can only be changed while the instance is stopped"

DISK: KeyTable = {
    "type": Key(v.is_one_of("disk"), "Device type", live=False),
    "path": Key(
        is_absolute_path, 'Where the disk appears inside the instance ("/" for the root disk)', live=False
    ),
    "pool": Key(v.is_any, "Storage pool of the root disk", live=False),
    "size": Key(v.is_size, "Size of the root volume (where the pool's driver can limit it)", live=False),
    "source": Key(is_absolute_path, "Host directory or file to bind-mount (not with pool)", live=False),
    "readonly": Key(v.is_bool, "Mount the bind disk read-only", live=False),
}


@dataclass(frozen=True)
class DiskSettings:
    """A disk's config parsed once: the root disk (pool set) or a bind disk (source set)."""

    path: str
    pool: str | None
    size: str | None
    source: str | None
    readonly: bool

    @property
    def is_root(self) -> bool:
        return self.path == "/"


def settings(config: dict[str, str]) -> DiskSettings:
    return DiskSettings(
        path=config.get("path", ""),
        pool=config.get("pool") or None,
        size=config.get("size") or None,
        source=config.get("source") or None,
        readonly=v.parse_bool(config.get("readonly", "false")),
    )


class Disk(Device):
    keys = DISK

    @property
    def settings(self) -> DiskSettings:
        return settings(self.config)

    def validate_config(self) -> None:
        super().validate_config()
        s = self.settings
        if not s.path:
            raise InvalidError(f'{self.what}: a disk needs "path" (use "/" for the root disk)')
        if s.is_root:
            self._validate_root(s)
        else:
            self._validate_bind(s)

    def _validate_root(self, s: DiskSettings) -> None:
        if s.source is not None:
            raise InvalidError(f'{self.what}: the root disk ("path" "/") takes "pool", not "source"')
        if "readonly" in self.config:
            raise InvalidError(f'{self.what}: "readonly" is not supported on the root disk')
        if s.pool is None:
            raise InvalidError(f'{self.what}: the root disk needs "pool"')
        if db_storage.get_pool(self.state.store, s.pool) is None:
            raise NotFoundError(f'{self.what}: storage pool "{s.pool}" not found')

    def _validate_bind(self, s: DiskSettings) -> None:
        if s.pool is not None:
            raise InvalidError(
                f"{self.what}: custom storage volumes are not supported; a disk other than the root "
                'takes "source" (a host path), not "pool"'
            )
        if s.size is not None:
            raise InvalidError(f'{self.what}: "size" applies to the root disk only')
        if s.source is None:
            raise InvalidError(f'{self.what}: a disk other than the root needs "source" (a host path)')
        if self.instance.type != CONTAINER:
            raise InvalidError(f"{self.what}: disks with a source are not supported on virtual machines yet")
        self.validate_environment()

    def validate_environment(self) -> None:
        s = self.settings
        if s.source is not None and not self.host(tree.exists, Path(s.source)):
            raise NotFoundError(f'{self.what}: source "{s.source}" does not exist on the host')

    def start(self) -> RunConfig:
        return RunConfig()

    def hot_plug(self) -> None:
        """A bind disk added to a running container is bound into its mount namespace."""
        init = self._running_init()
        if init is not None:
            s = self.settings
            assert s.source is not None  # validated: a bind disk has a source
            self.host(mount_inject.inject, init, Path(s.source), s.path, s.readonly)

    def hot_unplug(self) -> None:
        init = self._running_init()
        if init is not None:
            self.host(mount_inject.eject, init, self.settings.path)

    def _running_init(self) -> mount_inject.Init | None:
        """The init (pid, start time) of the running container a bind disk is plugged into or out of."""
        if self.settings.is_root or self.instance.type != CONTAINER or not self.instance.running:
            return None
        rt = db_instances.get_runtime(self.state.store, self.instance.name)
        return None if rt is None else mount_inject.Init(rt.pid, rt.start_time)

    def update(self, old_config: dict[str, str]) -> None:
        raise InvalidError(LIVE_CHANGE_REFUSED)

    def describe(self) -> str:
        s = self.settings
        if s.is_root:
            return f"root disk on storage pool {s.pool}"
        mode = "read-only" if s.readonly else "read-write"
        return f"{s.source} bind-mounted at {s.path} ({mode})"
