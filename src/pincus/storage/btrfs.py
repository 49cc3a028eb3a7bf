"""The btrfs driver: a pool is a btrfs file system in a loop file, an image volume a subvolume,
and an instance volume a snapshot of it (no data copied)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pincus.config.validators import parse_size
from pincus.errors import InvalidError
from pincus.host import btrfs, files, loopdev, mounts, tree
from pincus.reverter import Reverter
from pincus.storage import keys, paths
from pincus.storage.base import Pool

DEFAULT_SIZE = "5GiB"
MIN_VOLUME_SIZE = 2**20


class BtrfsPool(Pool):
    driver = "btrfs"
    keys = keys.BTRFS

    @property
    def loop_file(self) -> Path:
        return paths.loop_file(self.state.dir, self.name)

    def validate_config(self) -> None:
        super().validate_config()
        source = self.config.get("source")
        if source and source != str(self.loop_file):
            raise InvalidError(
                f'{self.what}: "source" (an existing device or file system) is not supported; '
                "leave it out for a loop file of the given size"
            )

    def filled_config(self) -> dict[str, str]:
        return {**self.config, "size": self.config.get("size", DEFAULT_SIZE), "source": str(self.loop_file)}

    def create(self) -> None:
        if self.host(tree.exists, self.root) or self.host(tree.exists, self.loop_file):
            raise InvalidError(f"{self.root} or {self.loop_file} already exists: give another pool name")
        size = parse_size(self.config.get("size", DEFAULT_SIZE))
        with Reverter() as undo:
            self.host(files.ensure_dir, self.loop_file.parent, 0o700)
            self.host(tree.make_sparse_file, self.loop_file, size)
            undo.add(self.host, files.remove, self.loop_file)
            self.host(btrfs.mkfs, self.loop_file, self.name)
            self.host(files.ensure_dir, self.root.parent, 0o711)
            self.host(tree.make_new_dir, self.root)
            undo.add(self.host, tree.remove_empty_dir, self.root)
            self._attach_and_mount()
            undo.add(self.unmount)
            self._make_layout()
            undo.success()

    def _attach_and_mount(self) -> None:
        self.host(loopdev.mount_file, self.loop_file, self.root, "btrfs")

    def mount(self) -> None:
        if self.host(mounts.is_mount_point, self.root):
            return
        if not self.host(tree.exists, self.loop_file):
            raise InvalidError(f"{self.what}: its loop file {self.loop_file} is missing")
        self.host(files.ensure_dir, self.root, 0o711)
        self._attach_and_mount()

    def unmount(self) -> None:
        self.host(mounts.unmount, self.root)
        self.host(loopdev.wait_detached, self.loop_file)

    def delete(self) -> None:
        self.unmount()
        self.host(files.remove, self.loop_file)
        self.host(tree.remove_empty_dir, self.root)

    def check_instance_size(self, size: str | None) -> None:
        """btrfs limits a volume with a quota group on its subvolume (what it refers to, shared
        data included, as Incus's btrfs driver)."""
        if size and parse_size(size) < MIN_VOLUME_SIZE:
            raise InvalidError(f'{self.what}: a root volume\'s "size" must be at least 1MiB, not "{size}"')

    def create_instance_volume(self, name: str, image_fp: str | None, size: str | None = None) -> None:
        super().create_instance_volume(name, image_fp, size)
        self._limit(name, size)

    def _limit(self, name: str, size: str | None) -> None:
        if size:
            with Reverter() as undo:
                undo.add(self.delete_instance_volume, name)
                self.host(btrfs.enable_quota, self.root)  # once per file system; again is a no-op
                self.host(btrfs.limit_subvolume, self.instance_path(name), parse_size(size))
                undo.success()

    def receive_instance_volume(
        self, name: str, fill: Callable[[Path], None], size: str | None = None
    ) -> None:
        super().receive_instance_volume(name, fill, size)
        self._limit(name, size)

    def _new_volume(self, path: Path) -> None:
        self.host(btrfs.create_subvolume, path)

    def _clone(self, source: Path, target: Path) -> None:
        self.host(btrfs.snapshot, source, target)

    def _delete_volume(self, path: Path) -> None:
        if self.host(btrfs.is_subvolume, path):
            self.host(btrfs.delete_subvolume, path)
        else:
            self.host(tree.remove, path)
