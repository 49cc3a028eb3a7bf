"""The one interface of every storage driver.

A driver holds no state of its own beyond its pool's name and config: the database says which
volumes exist, the driver makes them on the host. Each method either does all its work or
leaves the host as it found it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pincus.config.keys import KeyTable, check_config
from pincus.errors import ConflictError, InvalidError
from pincus.host import files, tree
from pincus.host.facade import Host
from pincus.reverter import Reverter
from pincus.state import State
from pincus.storage import paths

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
# Volumes being filled carry this prefix: never an image or instance name, so a leftover of a
# daemon killed half-way is recognisable (and removed at the next fill of the same image).
PARTIAL = ".partial-"

DELETING = ".deleting-"

CONTAINER_VOLUMES = "containers"
IMAGE_VOLUMES = "images"


def check_fingerprint(fp: str) -> str:
    if not _FINGERPRINT.fullmatch(fp):
        raise InvalidError(f'Invalid image fingerprint "{fp}": expected 64 lowercase hex digits')
    return fp


class Pool:
    driver: ClassVar[str]
    keys: ClassVar[KeyTable]

    def __init__(self, state: State, name: str, config: dict[str, str]) -> None:
        self.state = state
        self.name = name
        self.config = config

    @property
    def host(self) -> Host:
        return self.state.host

    @property
    def what(self) -> str:
        return f'storage pool "{self.name}"'

    @property
    def root(self) -> Path:
        return paths.pool_dir(self.state.dir, self.name)

    def image_path(self, fp: str) -> Path:
        return paths.image_volume(self.state.dir, self.name, check_fingerprint(fp))

    def instance_path(self, name: str) -> Path:
        return paths.instance_volume(self.state.dir, self.name, name)

    # --- the pool --------------------------------------------------------------------------------

    def validate_config(self) -> None:
        check_config(self.keys, self.config, self.what)

    def filled_config(self) -> dict[str, str]:
        """The config to store: what was asked plus what the driver chose (a default size, a path)."""
        return dict(self.config)

    def create(self) -> None:
        """Make the pool on the host (all of it, or nothing)."""
        raise NotImplementedError

    def delete(self) -> None:
        """Remove the pool from the host; its volumes are gone already."""
        raise NotImplementedError

    def mount(self) -> None:
        """Make the pool usable after a daemon start (a no-op for a plain directory)."""

    def unmount(self) -> None:
        """Let go of what mount() took."""

    def usage(self) -> tuple[int, int]:
        """(used, total) bytes of the pool's file system."""
        return self.host(tree.space, self.root)

    def _make_layout(self) -> None:
        for sub in (CONTAINER_VOLUMES, IMAGE_VOLUMES):
            self.host(files.ensure_dir, self.root / sub, 0o711)

    # --- volumes -----------------------------------------------------------------------------------

    def check_instance_size(self, size: str | None) -> None:
        """Refuse a root disk `size` this driver cannot honour."""
        if size:
            raise InvalidError(
                f'Storage pool "{self.name}" (driver {self.driver}) cannot limit a volume\'s size: '
                'remove "size" from the root disk device'
            )

    def has_image_volume(self, fp: str) -> bool:
        return self.host(tree.exists, self.image_path(fp))

    def create_image_volume(self, fp: str, fill: Callable[[Path], None]) -> None:
        """The image volume of FP, filled by FILL (given an empty directory) unless it exists.

        FILL works on a partial volume that only becomes the image volume when it returns, so a
        failed or interrupted fill never leaves a volume that looks whole.
        """
        if not self.has_image_volume(fp):
            self._fill_new(self.image_path(fp), fill)

    def delete_image_volume(self, fp: str) -> None:
        self._delete_volume(self.image_path(fp))

    def create_instance_volume(self, name: str, image_fp: str | None, size: str | None = None) -> None:
        """Instance NAME's root volume: a clone of the image volume of IMAGE_FP, or empty."""
        self.check_instance_size(size)
        target = self.instance_path(name)
        if self.host(tree.exists, target):
            raise InvalidError(f'Volume of instance "{name}" already exists on {self.what}')
        if image_fp is None:
            with Reverter() as undo:
                self._new_volume(target)
                undo.add(self._delete_volume, target)
                self.host(tree.make_new_dir, target / "rootfs", 0o755)
                undo.success()
        else:
            self._clone(self.image_path(image_fp), target)

    def delete_instance_volume(self, name: str) -> None:
        self._delete_volume(self.instance_path(name))

    def receive_instance_volume(
        self, name: str, fill: Callable[[Path], None], size: str | None = None
    ) -> None:
        """Instance NAME's root volume, filled by FILL (given an empty new volume) from another
        member's copy. As an image fill, it works on a partial volume that takes the name only when
        FILL returns: a failed or interrupted transfer never leaves a volume that looks whole."""
        self.check_instance_size(size)
        final = self.instance_path(name)
        if self.host(tree.exists, final):
            raise ConflictError(f'Volume of instance "{name}" already exists on {self.what}')
        self._fill_new(final, fill)

    def _fill_new(self, final: Path, fill: Callable[[Path], None]) -> None:
        """A new volume at FINAL, made by FILL on a partial one beside it that takes FINAL's name
        only when FILL returns."""
        partial = final.with_name(PARTIAL + final.name)
        self._delete_volume(partial)  # what a daemon killed mid-fill left
        with Reverter() as undo:
            self._new_volume(partial)
            undo.add(self._delete_volume, partial)
            fill(partial)
            self.host(tree.rename, partial, final)
            undo.success()

    def rename_instance_volume(self, name: str, new_name: str) -> None:
        self.host(tree.rename, self.instance_path(name), self.instance_path(new_name))

    def set_aside(self, name: str) -> Path:
        """Move instance NAME's volume out of its name (the first, undoable step of a delete)."""
        aside = self.instance_path(name).with_name(f"{DELETING}{name}-{secrets.token_hex(4)}")
        self.host(tree.rename, self.instance_path(name), aside)
        return aside

    def put_back(self, aside: Path, name: str) -> None:
        self.host(tree.rename, aside, self.instance_path(name))

    def destroy_aside(self, aside: Path) -> None:
        self._delete_volume(aside)

    def sweep(self) -> None:
        """Remove what failed deletes set aside and interrupted fills left (never a live volume)."""
        for sub in (CONTAINER_VOLUMES, IMAGE_VOLUMES):
            for path in self.host(tree.entries, self.root / sub):
                if path.name.startswith((DELETING, PARTIAL)):
                    self._delete_volume(path)

    def instance_volume_names(self) -> list[str]:
        """What the host holds (the database is the truth; this is for checks and tests)."""
        path = self.root / CONTAINER_VOLUMES
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    # --- what each driver does its own way ---------------------------------------------------------

    def _new_volume(self, path: Path) -> None:
        raise NotImplementedError

    def _clone(self, source: Path, target: Path) -> None:
        raise NotImplementedError

    def _delete_volume(self, path: Path) -> None:
        raise NotImplementedError
