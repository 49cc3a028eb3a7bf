"""Where a pool keeps an instance's volume (stand-in until the storage branch merges)."""

from __future__ import annotations

from pathlib import Path


def instance_volume(state_dir: Path, pool: str, name: str) -> Path:
    """The instance volume: holds metadata.yaml, rootfs/ and templates/."""
    return state_dir / "storage-pools" / pool / "containers" / name
