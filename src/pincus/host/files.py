"""State-directory files of the daemon."""

from __future__ import annotations

import shutil
from pathlib import Path


def ensure_dir(path: Path, mode: int = 0o700) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=mode)


def remove_tree(path: Path) -> None:
    """Remove a directory of ours; a netns handle still mounted inside makes rmtree skip it, not fail."""
    shutil.rmtree(path, ignore_errors=True)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def write_text(path: Path, text: str) -> None:
    """Atomically: a crash leaves the old content or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
