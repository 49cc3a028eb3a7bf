"""Directory trees of storage volumes: copy with everything a root file system holds, remove, measure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pincus.errors import HostError


def copy(source: Path, target: Path) -> None:
    """TARGET (absent) becomes a copy of directory SOURCE: owners, modes, symlinks, hard links,
    xattrs, device nodes and times kept; file data shared (reflink) where the file system can."""
    try:
        r = subprocess.run(
            ["cp", "-a", "--reflink=auto", "--", str(source), str(target)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as e:
        raise HostError(f"copy {source} to {target}: {e.strerror or e}") from e
    if r.returncode != 0:
        raise HostError(f"copy {source} to {target}: {r.stderr.strip().splitlines()[-1:] or r.returncode}")


def remove(path: Path) -> None:
    """Remove directory tree PATH (a missing one is fine); unlike files.remove_tree, a failure is an error."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise HostError(f"remove {path}: {e.strerror or e}") from e


def make_new_dir(path: Path, mode: int = 0o711) -> None:
    """Create PATH, which must not exist."""
    try:
        path.mkdir(mode=mode)
    except OSError as e:
        raise HostError(f"create {path}: {e.strerror or e}") from e


def rename(path: Path, new_path: Path) -> None:
    if new_path.exists():
        raise HostError(f"rename {path} to {new_path}: the target exists")
    try:
        os.rename(path, new_path)
    except OSError as e:
        raise HostError(f"rename {path} to {new_path}: {e.strerror or e}") from e


def is_empty_dir(path: Path) -> bool:
    """Whether PATH is an existing directory holding nothing (lost+found of a fresh file system aside)."""
    try:
        return all(e.name == "lost+found" for e in os.scandir(path))
    except OSError:
        return False


def exists(path: Path) -> bool:
    return path.exists()


def space(path: Path) -> tuple[int, int]:
    """(used, total) bytes of the file system holding PATH."""
    try:
        st = os.statvfs(path)
    except OSError as e:
        raise HostError(f"statvfs {path}: {e.strerror or e}") from e
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize


def make_sparse_file(path: Path, size: int) -> None:
    """A new file of SIZE bytes that takes no space until written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise HostError(f"create {path}: {e.strerror or e}") from e
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise HostError(f"size {path} to {size} bytes: {e.strerror or e}") from e
    os.close(fd)


def remove_empty_dir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise HostError(f"remove {path}: {e.strerror or e}") from e


def symlink(target: Path, path: Path) -> None:
    """PATH becomes a symlink to TARGET."""
    try:
        os.symlink(target, path)
    except OSError as e:
        raise HostError(f"symlink {path} to {target}: {e.strerror or e}") from e


def entries(path: Path) -> list[Path]:
    """What directory PATH holds (nothing if it is missing)."""
    try:
        return sorted(path / name for name in os.listdir(path))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HostError(f"list {path}: {e.strerror or e}") from e
