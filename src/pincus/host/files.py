"""Files in the daemon's state directory: directories, and small records written atomically
(a reader, or a daemon restarted after a crash, sees the old record or the new, never half)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import IO, Any

from pincus.errors import ConflictError, HostError


def ensure_dir(path: Path, mode: int = 0o700) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as e:
        raise HostError(f"mkdir {path}: {e.strerror or e}") from e


def is_dir(path: Path) -> bool:
    return os.path.isdir(path)


def remove_tree(path: Path) -> None:
    """Remove a directory of ours; a netns handle still mounted inside makes rmtree skip it, not fail."""
    shutil.rmtree(path, ignore_errors=True)


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
    """Replace the record at path, making its directory (traversable, for dnsmasq's sake) if needed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
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


def lock_pidfile(path: Path) -> IO[str]:
    """Hold an exclusive lock on path for as long as the returned file stays open, with our pid in
    it; ConflictError naming the holder's pid if another process has it."""
    f = open(path, "a+")  # noqa: SIM115 - the caller holds it open: that is the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise ConflictError(f"{path} is held by pid {pid}") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def set_owner_mode(path: Path, uid: int, gid: int, mode: int) -> None:
    """chown (-1 keeps that id) and chmod."""
    os.chown(path, uid, gid)
    os.chmod(path, mode)
