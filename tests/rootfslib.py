"""A minimal container root built from Debian's busybox-static, for tests on real containers.

/bin/busybox with a symlink per applet, /sbin/init (busybox init) with an inittab, lib -> usr/lib
and lib64 -> usr/lib64 as in Debian, and a marker file naming the root. The images branch builds
the real image (scripts/build-image.sh); the merge shares one builder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
MARKER = "pincus-test-rootfs"
INITTAB = "::sysinit:/bin/mkdir -p /run/booted\n::shutdown:/bin/touch /run/halted\n"

_applets: list[str] | None = None


def applets() -> list[str]:
    global _applets
    if _applets is None:
        out = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True)
        _applets = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return _applets


def build_rootfs(root: Path, marker: str = MARKER, init: bool = True) -> Path:
    """A busybox root at ROOT (created); ROOT/etc/marker holds MARKER. Returns ROOT."""
    root.mkdir(parents=True, exist_ok=True)
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "etc",
        "root",
        "tmp",
        "proc",
        "sys",
        "dev",
        "run",
        "var/log",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.symlink("usr/lib", root / "lib")
    os.symlink("usr/lib64", root / "lib64")
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in applets():
        if applet == "sbin/init" and not init:
            continue
        target = root / applet
        if applet != "bin/busybox" and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink("/bin/busybox", target)
    (root / "etc/inittab").write_text(INITTAB)
    (root / "etc/marker").write_text(marker + "\n")
    (root / "etc/hostname").write_text("image\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    return root


def build_volume(
    volume: Path,
    marker: str = MARKER,
    init: bool = True,
    templates: dict[str, str] | None = None,
    metadata_templates: str = "",
) -> Path:
    """An instance volume as the storage driver leaves it: metadata.yaml, rootfs/, templates/."""
    volume.mkdir(parents=True, exist_ok=True)
    build_rootfs(volume / "rootfs", marker, init)
    (volume / "templates").mkdir(exist_ok=True)
    for name, text in (templates or {}).items():
        (volume / "templates" / name).write_text(text)
    (volume / "metadata.yaml").write_text(
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n"
        + (f"templates:\n{metadata_templates}" if metadata_templates else "")
    )
    return volume
