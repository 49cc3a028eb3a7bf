"""Images for tests: the busybox image (built once by scripts/build-image.sh), the other formats made
from it, and hostile tarballs, each built with the standard library so the test sees its bytes."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "pincus-test-images"
COMPRESSIONS = ("gzip", "xz", "zstd")

METADATA = (
    b"architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: test\n  description: test image\n"
)


def busybox_image() -> Path:
    """The unified busybox image, built once per machine (the script skips an up-to-date build)."""
    prebuilt = os.environ.get("PINCUS_TEST_IMAGE")  # the test guest's, built on its host
    if prebuilt:
        return Path(prebuilt)
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers build it once
        subprocess.run([str(ROOT / "scripts" / "build-image.sh"), str(CACHE)], check=True)
    return CACHE / "busybox.tar.xz"


def debian_image() -> Path:
    """Debian 12 with systemd (scripts/build-debian-image.sh: debootstrap from the apt mirror, about a
    minute), built once per machine."""
    prebuilt = os.environ.get("PINCUS_TEST_DEBIAN_IMAGE")
    if prebuilt:
        return Path(prebuilt)
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / ".lock-debian", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([str(ROOT / "scripts" / "build-debian-image.sh"), str(CACHE)], check=True)
    return CACHE / "debian-systemd.tar.zst"


def sha256(*paths: Path) -> str:
    """Incus's fingerprint, computed here on its own: the file, or metadata then rootfs."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "xz":
        return lzma.compress(data)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    if how == "none":
        return data
    raise ValueError(how)


def _decompress(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(["zstd", "-dq", "-c"], input=data, capture_output=True, check=True).stdout
    return data


def unified(out: Path, how: str) -> Path:
    """The busybox image recompressed with HOW."""
    out.write_bytes(compress(_decompress(busybox_image().read_bytes()), how))
    return out


def split(out_dir: Path, how: str, rootfs_format: str = "tar") -> tuple[Path, Path]:
    """The busybox image as a split image: metadata tarball + rootfs tarball (or squashfs)."""
    src = tarfile.open(fileobj=io.BytesIO(_decompress(busybox_image().read_bytes())))  # noqa: SIM115
    meta_buf, root_buf = io.BytesIO(), io.BytesIO()
    with (
        tarfile.open(fileobj=meta_buf, mode="w", format=tarfile.PAX_FORMAT) as meta,
        tarfile.open(fileobj=root_buf, mode="w", format=tarfile.PAX_FORMAT) as root,
    ):
        for m in src.getmembers():
            data = src.extractfile(m) if m.isreg() else None
            if m.name == "rootfs" or m.name.startswith("rootfs/"):
                m.name = "." + m.name.removeprefix("rootfs")
                root.addfile(m, data)
            else:
                meta.addfile(m, data)
    meta_path = out_dir / "meta.tar"
    meta_path.write_bytes(compress(meta_buf.getvalue(), how))
    if rootfs_format == "squashfs":
        tree = out_dir / "tree"
        tree.mkdir()
        with tarfile.open(fileobj=io.BytesIO(root_buf.getvalue())) as t:
            # Our own tarball: trusted. Debian 12's Python (3.11.2) predates extraction filters.
            trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
            t.extractall(tree, **trusted)  # type: ignore[arg-type]
        rootfs_path = out_dir / "rootfs.squashfs"
        comp = {"gzip": "gzip", "xz": "xz", "zstd": "zstd"}[how]
        subprocess.run(
            ["mksquashfs", str(tree), str(rootfs_path), "-noappend", "-quiet", "-comp", comp, "-all-root"],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(tree)
    else:
        rootfs_path = out_dir / "rootfs.tar"
        rootfs_path.write_bytes(compress(root_buf.getvalue(), how))
    return meta_path, rootfs_path


# --- hand-made tarballs --------------------------------------------------------------------------


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    link: str = "",
    size: int | None = None,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.linkname = link
    info.size = len(data) if size is None else size
    info.mtime = 1700000000
    return info, data


def tarball(
    out: Path,
    members: list[tuple[tarfile.TarInfo, bytes]],
    how: str = "gzip",
    metadata: bytes | None = METADATA,
) -> Path:
    """A unified image of MEMBERS (after metadata.yaml unless METADATA is None), compressed with HOW."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        if metadata is not None:
            info, _ = member("metadata.yaml", data=metadata)
            t.addfile(info, io.BytesIO(metadata))
        t.addfile(member("rootfs", tarfile.DIRTYPE, mode=0o755)[0])
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    out.write_bytes(compress(buf.getvalue(), how))
    return out


def bomb(out: Path, size: int) -> Path:
    """A gzip tarball whose one rootfs file of SIZE zero bytes squeezes to almost nothing."""
    info, _ = member("rootfs/zeros", size=size)
    raw = gzip.GzipFile(out, "wb", mtime=0)
    try:
        head = io.BytesIO()
        t = tarfile.open(fileobj=head, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115  (never closed: no end blocks)
        t.addfile(member("metadata.yaml", data=METADATA)[0], io.BytesIO(METADATA))
        t.addfile(member("rootfs", tarfile.DIRTYPE, mode=0o755)[0])
        raw.write(head.getvalue())  # before close() adds the end-of-archive blocks
        raw.write(info.tobuf(tarfile.PAX_FORMAT))
        zeros = bytes(1024 * 1024)
        left = size
        while left:
            n = min(left, len(zeros))
            raw.write(zeros[:n])
            left -= n
        raw.write(bytes((-size) % tarfile.BLOCKSIZE) + bytes(2 * tarfile.BLOCKSIZE))
    finally:
        raw.close()
    return out


# Each hostile image: (what the test calls it, members, a word the refusal must carry).
HOSTILE: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes]], str]] = {
    "absolute-path": ([member("/etc/pincus-evil", data=b"x")], "absolute path"),
    "dot-dot": ([member("rootfs/../../pincus-evil", data=b"x")], '".."'),
    "symlink-then-file-through-it": (
        [
            member("rootfs/escape", tarfile.SYMTYPE, link="../.."),
            member("rootfs/escape/pincus-evil", data=b"x"),
        ],
        "symlink leading out",
    ),
    "absolute-symlink-dir-then-file": (
        # Legal in a root filesystem (/escape -> /tmp inside the container); a file "through" it must
        # not land in the host's /tmp.
        [
            member("rootfs/escape", tarfile.SYMTYPE, link="/tmp"),
            member("rootfs/escape/pincus-evil", data=b"x"),
        ],
        "not a directory",
    ),
    "hardlink-out": ([member("rootfs/passwd", tarfile.LNKTYPE, link="../../../etc/passwd")], '".."'),
    "hardlink-absolute": ([member("rootfs/passwd", tarfile.LNKTYPE, link="/etc/passwd")], "absolute path"),
    "template-symlink-out": (
        [member("templates/x.tpl", tarfile.SYMTYPE, link="/etc/shadow")],
        "absolute symlink",
    ),
}
