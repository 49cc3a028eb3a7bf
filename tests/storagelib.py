"""Helpers for storage tests: stand-in images, and what the daemon's mount namespace holds.

The test daemon runs in a private mount namespace (pincus.host.nsexec), so its pool mounts are
seen through /proc/<pid>/mountinfo and commands enter it with nsenter.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.pincus_testlib import Daemon


def make_standin_image(
    daemon: Daemon,
    fingerprint: str,
    alias: str | None = None,
    files: dict[str, bytes] | None = None,
    type_: str = "container",
    architecture: str = "x86_64",
) -> None:
    """An image as the stand-in image store reads it (stand-in until the images branch merges:
    then tests build a real image tarball with tests/imagelib.py and import it)."""
    images = daemon.dir / "images"
    root = images / fingerprint
    (root / "rootfs").mkdir(parents=True)
    (root / "templates").mkdir()
    (root / "metadata.yaml").write_text(f"architecture: {architecture}\ncreation_date: 0\n")
    for rel, data in (files or {}).items():
        path = root / "rootfs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    meta = {"type": type_, "architecture": architecture, "aliases": [alias] if alias else []}
    (images / f"{fingerprint}.json").write_text(json.dumps(meta))


def daemon_pid(daemon: Daemon) -> int:
    assert daemon.proc is not None
    return daemon.proc.pid


def mounts_of(daemon: Daemon) -> list[dict[str, str]]:
    """The daemon's mounts: mount point, file system type and source."""
    out = []
    for line in Path(f"/proc/{daemon_pid(daemon)}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        out.append({"target": fields[4], "fstype": tail[0], "source": tail[1]})
    return out


def in_daemon_ns(daemon: Daemon, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "-t", str(daemon_pid(daemon)), "-m", *argv], capture_output=True, text=True, check=check
    )


def loop_devices_of(backing: Path) -> list[dict[str, Any]]:
    """What `losetup -J` lists with BACKING as its file."""
    out = subprocess.run(["losetup", "-J"], capture_output=True, text=True, check=True).stdout
    devices = json.loads(out)["loopdevices"] if out.strip() else []
    return [d for d in devices if d.get("back-file", "").removesuffix(" (deleted)") == str(backing)]


def subvolume_show(daemon: Daemon, path: Path) -> dict[str, str]:
    """`btrfs subvolume show PATH` in the daemon's mount namespace, as a dict."""
    text = in_daemon_ns(daemon, "btrfs", "subvolume", "show", str(path)).stdout
    fields = {}
    for line in text.splitlines()[1:]:
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def write_filler(path: Path, size: int) -> None:
    """A file of SIZE bytes of real data (not sparse: a copy must write every block)."""
    chunk = os.urandom(1 << 20)
    with path.open("wb") as f:
        for _ in range(size >> 20):
            f.write(chunk)


def seen_by_daemon(daemon: Daemon, path: Path) -> Path:
    """PATH as the daemon sees it (through its mount namespace's root)."""
    return Path(f"/proc/{daemon_pid(daemon)}/root") / path.relative_to("/")
