"""Small records a driver keeps in its own directory under $PINCUS_DIR (JSON), and moving
such a directory. Atomic: a reader sees the old record or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from pincus.errors import HostError


def read_json(path: Path) -> Any:
    """The record at path, or None if there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostError(f"read {path}: {e.strerror or e}") from e
    try:
        return json.loads(text)
    except ValueError as e:
        raise HostError(f"read {path}: not JSON: {e}") from None


def write_json(path: Path, data: Any) -> None:
    """Replace the record at path (its directory must exist)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(json.dumps(data, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise HostError(f"write {path}: {e.strerror or e}") from e


def remove(path: Path) -> None:
    """Remove the record at path; a missing one is fine."""
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise HostError(f"remove {path}: {e.strerror or e}") from e


def move_dir(path: Path, new_path: Path) -> None:
    """Rename a directory; a missing source is fine, an existing target is an error."""
    if not path.exists():
        return
    if new_path.exists():
        raise HostError(f"move {path} to {new_path}: the target exists")
    try:
        os.rename(path, new_path)
    except OSError as e:
        raise HostError(f"move {path} to {new_path}: {e.strerror or e}") from e
