"""disk devices (stand-in until the storage branch merges, which replaces this file).

The root disk (path=/) names the pool of the instance volume; any other disk binds a host
`source` at `path`. The container driver mounts both at spawn, so start/stop do nothing here.
"""

from __future__ import annotations

from typing import ClassVar

from pincus.config import validators as v
from pincus.config.keys import Key, KeyTable
from pincus.devices.base import Device, RunConfig
from pincus.errors import InvalidError


def _abs_path(value: str) -> None:
    if not value.startswith("/") or "\0" in value or ".." in value.split("/"):
        raise ValueError("must be an absolute path without ..")


DISK_KEYS: KeyTable = {
    "type": Key(v.is_one_of("disk"), "Device type", live=False),
    "path": Key(_abs_path, "Where the disk appears inside the instance", live=False),
    "source": Key(_abs_path, "Host path to bind-mount", live=False),
    "pool": Key(v.is_any, "Storage pool of the root volume", live=False),
    "size": Key(v.is_size, "Size of the root volume", live=False),
    "readonly": Key(v.is_bool, "Mount read-only", live=False),
}


class Disk(Device):
    keys: ClassVar[KeyTable] = DISK_KEYS

    def validate_config(self) -> None:
        super().validate_config()
        path = self.config.get("path")
        if not path:
            raise InvalidError(f'Device "{self.name}": a disk needs "path"')
        if path == "/" and not self.config.get("pool"):
            raise InvalidError(f'Device "{self.name}": the root disk needs "pool"')
        if path != "/" and not self.config.get("source"):
            raise InvalidError(f'Device "{self.name}": a disk other than the root needs "source"')

    def start(self) -> RunConfig:
        return RunConfig()

    def describe(self) -> str:
        if self.config.get("path") == "/":
            return f"root volume on pool {self.config.get('pool')}"
        return f"{self.config.get('source')} on {self.config.get('path')}"
