"""The dir driver: a pool is a directory, an instance volume a full copy of its image volume."""

from __future__ import annotations

from pathlib import Path

from pincus.errors import InvalidError
from pincus.host import files, tree
from pincus.reverter import Reverter
from pincus.storage import keys
from pincus.storage.base import CONTAINER_VOLUMES, IMAGE_VOLUMES, Pool


class DirPool(Pool):
    driver = "dir"
    keys = keys.DIR

    @property
    def source(self) -> Path | None:
        source = self.config.get("source")
        return Path(source) if source else None

    def create(self) -> None:
        if self.host(tree.exists, self.root) or self.root.is_symlink():
            raise InvalidError(f"{self.root} already exists: remove it, or give another pool name")
        with Reverter() as undo:
            self.host(files.ensure_dir, self.root.parent, 0o711)
            if self.source is None:
                self.host(tree.make_new_dir, self.root)
                undo.add(self.host, tree.remove_empty_dir, self.root)
            else:
                self._check_source(self.source)
                self.host(tree.symlink, self.source, self.root)
                undo.add(self.host, files.remove, self.root)
            for sub in (CONTAINER_VOLUMES, IMAGE_VOLUMES):
                self.host(tree.make_new_dir, self.root / sub)
                undo.add(self.host, tree.remove_empty_dir, self.root / sub)
            undo.success()

    def _check_source(self, source: Path) -> None:
        if not self.host(files.is_dir, source):
            raise InvalidError(f'Source "{source}" of {self.what} is not an existing directory')
        if not self.host(tree.is_empty_dir, source):
            raise InvalidError(
                f'Source "{source}" of {self.what} already holds data: give an empty directory'
            )

    def delete(self) -> None:
        for sub in (CONTAINER_VOLUMES, IMAGE_VOLUMES):
            self.host(tree.remove_empty_dir, self.root / sub)
        if self.source is None:
            self.host(tree.remove_empty_dir, self.root)
        else:
            self.host(files.remove, self.root)  # the symlink; the admin's directory stays

    def _new_volume(self, path: Path) -> None:
        self.host(tree.make_new_dir, path)

    def _clone(self, source: Path, target: Path) -> None:
        with Reverter() as undo:
            undo.add(self.host, tree.remove, target)  # a failed copy leaves part of it behind
            self.host(tree.copy, source, target)
            undo.success()

    def _delete_volume(self, path: Path) -> None:
        self.host(tree.remove, path)
