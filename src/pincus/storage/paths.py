"""Where volumes live: pure functions of the daemon's state dir, shared with the instance drivers."""

from __future__ import annotations

from pathlib import Path


def pools_dir(state_dir: Path) -> Path:
    return state_dir / "storage-pools"


def pool_dir(state_dir: Path, pool: str) -> Path:
    """The pool's root: a directory (dir), a symlink to a dir pool's `source`, or a btrfs mount point."""
    return pools_dir(state_dir) / pool


def instance_volume(state_dir: Path, pool: str, name: str) -> Path:
    """An instance's root volume: holds metadata.yaml, rootfs/ and templates/."""
    return pool_dir(state_dir, pool) / "containers" / name


def image_volume(state_dir: Path, pool: str, fingerprint: str) -> Path:
    """An image unpacked once on a pool, the source of every instance volume made from it."""
    return pool_dir(state_dir, pool) / "images" / fingerprint


def loop_file(state_dir: Path, pool: str) -> Path:
    """The file holding a loop-backed pool's file system."""
    return state_dir / "disks" / f"{pool}.img"
