"""Helpers for storage tests: imported images, and what the daemon's mount namespace holds.

The test daemon runs in a private mount namespace (pincus.host.nsexec), so its pool mounts are
seen through /proc/<pid>/mountinfo and commands enter it with nsenter.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from tests import imagelib
from tests.imagelib import member
from tests.pincus_testlib import Daemon


def make_image(
    daemon: Daemon,
    alias: str,
    members: list[tuple[tarfile.TarInfo, bytes]] | None = None,
    architecture: str = "x86_64",
    how: str = "gzip",
) -> str:
    """A unified image of MEMBERS (paths under rootfs/) imported with ALIAS: its fingerprint."""
    out = daemon.dir.parent / f"{daemon.dir.name}-{alias}.tar"
    metadata = f"architecture: {architecture}\ncreation_date: 1700000000\n".encode()
    dirs = sorted({str(Path(info.name).parent) for info, _ in members or []} - {"rootfs", "."})
    parents = [member(d, tarfile.DIRTYPE, mode=0o755) for d in dirs]
    try:
        imagelib.tarball(out, parents + (members or []), how=how, metadata=metadata)
        printed = daemon.cli("image", "import", str(out), "--alias", alias).stdout
    finally:
        out.unlink(missing_ok=True)
    return printed.strip().rsplit(" ", 1)[-1]


def file_member(rel: str, data: bytes, **kw: Any) -> tuple[tarfile.TarInfo, bytes]:
    return member(f"rootfs/{rel}", data=data, **kw)


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
