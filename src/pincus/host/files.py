"""State-directory files of the daemon."""

from __future__ import annotations

import shutil
from pathlib import Path


def ensure_dir(path: Path, mode: int = 0o700) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=mode)


def remove_tree(path: Path) -> None:
    """Remove a directory of ours; a netns handle still mounted inside makes rmtree skip it, not fail."""
    shutil.rmtree(path, ignore_errors=True)
