"""Config keys of storage pools, per driver, with Incus's meaning."""

from __future__ import annotations

import os

from pincus.config import validators as v
from pincus.config.keys import Key, KeyTable

MIN_LOOP_SIZE = 120 * 2**20  # below this mkfs.btrfs cannot make a usable file system


def is_absolute_path(value: str) -> None:
    """An absolute, normalised path: no NUL, no "." or ".." steps, no doubled or trailing slash."""
    if "\0" in value:
        raise ValueError("a path may not contain a NUL byte")
    if not value.startswith("/"):
        raise ValueError(f'"{value}" is not an absolute path')
    if os.path.normpath(value) != value or value.startswith("//"):
        raise ValueError(f'"{value}" is not a normalised path (no "..", ".", "//" or trailing "/")')
    if len(value) > 4095:
        raise ValueError("the path is longer than 4095 bytes")


def is_loop_size(value: str) -> None:
    size = v.parse_size(value)
    if size < MIN_LOOP_SIZE:
        raise ValueError(f'"{value}" is below the smallest btrfs pool, 120MiB')


DIR: KeyTable = {
    "source": Key(
        is_absolute_path, "An existing empty directory to hold the pool (default: under PINCUS_DIR)"
    ),
}

BTRFS: KeyTable = {
    "size": Key(is_loop_size, "Size of the loop file holding the pool (default 5GiB, sparse)"),
    "source": Key(is_absolute_path, "The loop file (set by pincus; existing devices are not supported)"),
}
