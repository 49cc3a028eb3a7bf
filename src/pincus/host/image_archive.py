"""Incus image files on disk: compression by magic bytes, a checked pass over a tarball or a
squashfs, and a safe unpack that preserves owners, modes, links, device nodes and xattrs.

Every member passes our own policy (not tarfile's `data` filter, which refuses the device nodes and
absolute symlinks a real root filesystem holds *inside* its root). Extraction walks each path
with openat(O_NOFOLLOW) from the target's own descriptor, so a symlink in the archive can never
carry a later member out of the target, whatever order the members come in.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import lzma
import os
import posixpath
import re
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pincus.errors import HostError, InvalidError

METADATA = "metadata.yaml"
MAX_METADATA = 1024 * 1024  # bytes: a metadata.yaml past this is not an image's
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one image may unpack to: caps a decompression bomb (bytes) and an inode flood (files)."""

    max_bytes: int = 64 * 1024**3
    max_files: int = 4_000_000


@dataclass
class Scan:
    """What a checked pass over an archive found."""

    metadata: bytes | None = None
    files: int = 0
    bytes: int = 0
    has_rootfs: bool = False
    has_templates: bool = False
    has_rootfs_img: bool = False


# --- formats -------------------------------------------------------------------------------------


def detect(path: Path) -> str:
    """ "gzip", "xz", "zstd", "bzip2", "squashfs", "tar" or "qcow2", from the file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise HostError(f"read {path}: {e.strerror}") from e
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"hsqs"):
        return "squashfs"
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head[257:262] == b"ustar":
        return "tar"
    raise InvalidError(
        "Unsupported image file format (not a tarball compressed with gzip, xz or zstd, nor a squashfs)"
    )


@contextlib.contextmanager
def _decompressed(path: Path) -> Iterator[IO[bytes]]:
    kind = detect(path)
    if kind == "gzip":
        with open(path, "rb") as f, gzip.GzipFile(fileobj=f, mode="rb") as g:
            yield g  # type: ignore[misc]
    elif kind == "xz":
        with lzma.open(path, "rb") as x:
            yield x
    elif kind == "bzip2":
        with bz2.open(path, "rb") as b:
            yield b
    elif kind == "tar":
        with open(path, "rb") as t:
            yield t
    elif kind == "zstd":
        # No zstd in Python 3.11's standard library: Debian's zstd tool streams it.
        proc = subprocess.Popen(
            ["zstd", "-dcq", "--", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None
        try:
            yield proc.stdout
        finally:
            proc.stdout.close()
            proc.kill()
            proc.wait()
    else:
        raise InvalidError(f"The image file is a {kind} file, not a tarball")


def _tar_members(path: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """The members in archive order, streamed (the archive is never seeked nor held in memory)."""
    with _decompressed(path) as raw:
        try:
            with tarfile.open(fileobj=raw, mode="r|") as tf:
                for member in tf:
                    yield tf, member
        except (tarfile.TarError, EOFError, lzma.LZMAError, OSError, gzip.BadGzipFile) as e:
            raise InvalidError(f"The image file is not a readable tarball: {e}") from None


# --- the member policy ---------------------------------------------------------------------------


def _clean(name: str, what: str) -> str:
    """NAME as a relative path without "." parts; refuses absolute paths, ".." and NUL."""
    if "\0" in name:
        raise InvalidError(f'Image member "{what}" has a NUL byte in its name')
    if name.startswith("/"):
        raise InvalidError(f'Image member "{what}" has an absolute path')
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidError(f'Image member "{what}" leads out of the image with ".."')
    return "/".join(parts)


@dataclass(frozen=True)
class _Area:
    """Where a member lands: ROOT (relative to the target) and whether it is the container's root."""

    root: str  # "" (the target itself) or "rootfs"
    is_rootfs: bool


def _area(name: str, split_rootfs: bool) -> _Area:
    if split_rootfs:
        return _Area("rootfs", True)
    if name == "rootfs" or name.startswith("rootfs/"):
        return _Area("rootfs", True)
    return _Area("", False)


def _climbs_out(base: list[str], link: str) -> bool:
    """Whether relative LINK, read in directory BASE (parts under a root), climbs above that root."""
    depth = len(base)
    for part in link.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _check_link(member: tarfile.TarInfo, name: str, area: _Area, split_rootfs: bool) -> str | None:
    """For a symlink or hardlink: its target (a hardlink's as a cleaned path under the target)."""
    link = member.linkname
    if "\0" in link:
        raise InvalidError(f'Image member "{member.name}" links to a name with a NUL byte')
    if member.issym():
        if link.startswith("/"):
            # Inside a container root an absolute link resolves inside that root; we never follow it.
            if not area.is_rootfs:
                raise InvalidError(f'Image member "{member.name}" is an absolute symlink outside rootfs/')
            return None
        full = posixpath.join("rootfs", name) if split_rootfs else name
        base = full.split("/")[:-1]
        if area.root:
            base = base[1:]  # resolved from the area's root: rootfs/ for the container's files
        if _climbs_out(base, link):
            raise InvalidError(f'Image member "{member.name}" is a symlink leading out of the image')
        return None
    target = _clean(link, member.name)
    full = posixpath.join("rootfs", target) if split_rootfs else target
    if _area(full, False) != area or not target:
        raise InvalidError(f'Image member "{member.name}" is a hardlink leading out of its tree')
    return full


class _Checker:
    """The policy over a stream of members: names, links, kinds and the totals against LIMITS."""

    def __init__(self, limits: Limits, split_rootfs: bool) -> None:
        self.limits = limits
        self.split_rootfs = split_rootfs
        self.scan = Scan()
        self.symlinks: set[str] = set()  # members that are symlinks now (a later member may replace one)

    def check(self, member: tarfile.TarInfo) -> tuple[str, _Area, str | None]:
        """(path under the target, its area, a hardlink's source under the target)."""
        name = _clean(member.name, member.name)
        full = posixpath.join("rootfs", name) if self.split_rootfs and name else (name or "")
        if not full:
            full = "rootfs" if self.split_rootfs else ""
        area = _area(full, self.split_rootfs)
        link: str | None = None
        if member.issym() or member.islnk():
            link = _check_link(member, name, area, self.split_rootfs)
        elif not (member.isreg() or member.isdir() or member.ischr() or member.isblk() or member.isfifo()):
            raise InvalidError(f'Image member "{member.name}" is of an unsupported kind')
        if not area.is_rootfs and not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise InvalidError(f'Image member "{member.name}" is a device or FIFO outside rootfs/')
        self._check_parents(member, full)
        s = self.scan
        s.files += 1
        s.bytes += max(member.size, 0)
        if s.files > self.limits.max_files:
            raise InvalidError(
                f'Image member "{member.name}": the image has more than {self.limits.max_files} files'
            )
        if s.bytes > self.limits.max_bytes:
            raise InvalidError(
                f'Image member "{member.name}": the image unpacks to more than {self.limits.max_bytes} bytes'
            )
        if full == "rootfs" or full.startswith("rootfs/"):
            s.has_rootfs = True
        if full.startswith("templates/"):
            s.has_templates = True
        if full == "rootfs.img":
            s.has_rootfs_img = True
        return full, area, link

    def _check_parents(self, member: tarfile.TarInfo, full: str) -> None:
        """A member under an earlier symlink would be written through it: refused here already (the
        unpack's O_NOFOLLOW walk refuses it again), whatever the link points at."""
        if self.symlinks:
            parts = full.split("/")
            for n in range(1, len(parts)):
                parent = "/".join(parts[:n])
                if parent in self.symlinks:
                    raise InvalidError(
                        f'Image member "{member.name}" lies under "{parent}", a symlink, not a directory'
                    )
        if member.issym():
            self.symlinks.add(full)
        else:
            self.symlinks.discard(full)


def scan_tar(path: Path, limits: Limits, split_rootfs: bool = False) -> Scan:
    """Check every member of a tarball against the policy, reading metadata.yaml on the way.

    SPLIT_ROOTFS: the archive is a split image's rootfs (its names are relative to rootfs/).
    """
    checker = _Checker(limits, split_rootfs)
    for tf, member in _tar_members(path):
        full, _, _ = checker.check(member)
        if full == METADATA and member.isreg():
            if member.size > MAX_METADATA:
                raise InvalidError(f"{METADATA} is larger than {MAX_METADATA} bytes")
            f = tf.extractfile(member)
            assert f is not None
            checker.scan.metadata = f.read()
    return checker.scan


# --- safe extraction -----------------------------------------------------------------------------


def _walk(root_fd: int, parts: list[str], member: str) -> int:
    """A descriptor of the directory PARTS under ROOT_FD, made where missing, never through a symlink."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise InvalidError(
                        f'Image member "{member}" lies under "{part}", which is not a directory'
                    ) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_room(parent: int, leaf: str, member: str, is_dir: bool) -> bool:
    """Clear LEAF for a new member (a later member replaces an earlier one, as tar does).
    True when a directory already stands there and the member is one too."""
    try:
        st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if is_dir:
            return True
        raise InvalidError(f'Image member "{member}" would replace a directory')
    os.unlink(leaf, dir_fd=parent)
    return False


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            # tarfile decodes pax values as UTF-8 with surrogateescape; give back the bytes.
            out[key.removeprefix("SCHILY.xattr.")] = value.encode("utf-8", "surrogateescape")
    return out


def _set_attrs(fd: int, member: tarfile.TarInfo) -> None:
    os.fchown(fd, member.uid, member.gid)
    os.fchmod(fd, member.mode & 0o7777)  # after chown: chown clears setuid bits
    for name, value in _xattrs(member).items():
        with contextlib.suppress(OSError):  # a filesystem without that namespace: the file stays
            os.setxattr(fd, name, value)


class _Writer:
    def __init__(self, root_fd: int, skip_devices: bool) -> None:
        self.root_fd = root_fd
        self.skip_devices = skip_devices
        self.dirs: list[tuple[list[str], float]] = []

    def write(self, tf: tarfile.TarFile, member: tarfile.TarInfo, full: str, link: str | None) -> None:
        if not full:
            return
        if (member.ischr() or member.isblk()) and self.skip_devices:
            return  # as Incus for an unprivileged container: it could not use them anyway
        parts = full.split("/")
        parent = _walk(self.root_fd, parts[:-1], member.name)
        leaf = parts[-1]
        try:
            self._write_leaf(tf, member, parent, leaf, link)
        finally:
            os.close(parent)
        if member.isdir():
            self.dirs.append((parts, float(member.mtime)))

    def _write_leaf(
        self, tf: tarfile.TarFile, member: tarfile.TarInfo, parent: int, leaf: str, link: str | None
    ) -> None:
        exists = _make_room(parent, leaf, member.name, member.isdir())
        flags = os.O_NOFOLLOW | os.O_CLOEXEC
        if member.isdir():
            if not exists:
                os.mkdir(leaf, 0o700, dir_fd=parent)
            fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | flags, dir_fd=parent)
            try:
                _set_attrs(fd, member)
            finally:
                os.close(fd)
        elif member.isreg():
            fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | flags, 0o600, dir_fd=parent)
            try:
                src = tf.extractfile(member)
                assert src is not None
                while chunk := src.read(CHUNK):
                    _write_all(fd, chunk)
                _set_attrs(fd, member)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)
        elif member.issym():
            os.symlink(member.linkname, leaf, dir_fd=parent)
            os.chown(leaf, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        elif member.islnk():
            assert link is not None
            src_parts = link.split("/")
            src_parent = _walk(self.root_fd, src_parts[:-1], member.name)
            try:
                os.link(src_parts[-1], leaf, src_dir_fd=src_parent, dst_dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise InvalidError(
                    f'Image member "{member.name}" is a hardlink to "{member.linkname}", not in the image'
                ) from None
            finally:
                os.close(src_parent)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            os.mknod(leaf, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent)
            os.chown(leaf, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
            os.chmod(leaf, member.mode & 0o7777, dir_fd=parent, follow_symlinks=False)

    def finish(self) -> None:
        """Directory times last: every member written inside one has changed it."""
        for parts, mtime in reversed(self.dirs):
            parent = _walk(self.root_fd, parts[:-1], "/".join(parts))
            try:
                with contextlib.suppress(OSError):
                    os.utime(parts[-1], (mtime, mtime), dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def extract_tar(
    path: Path, target: Path, limits: Limits, skip_devices: bool, split_rootfs: bool = False
) -> Scan:
    """Unpack a tarball into TARGET (an existing directory) member by member, each checked first.

    SPLIT_ROOTFS: the tarball is a split image's rootfs and lands in TARGET/rootfs. Raises
    InvalidError on a hostile member; what was written stays for the caller to remove.
    """
    checker = _Checker(limits, split_rootfs)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        writer = _Writer(root_fd, skip_devices)
        for tf, member in _tar_members(path):
            full, _, link = checker.check(member)
            try:
                writer.write(tf, member, full, link)
            except OSError as e:
                raise HostError(f'Unpacking image member "{member.name}" into {target}: {e.strerror}') from e
        writer.finish()
    finally:
        os.close(root_fd)
    return checker.scan


# --- squashfs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SquashEntry:
    mode: str  # "drwxr-xr-x", "lrwxrwxrwx", "crw-r--r--", ...
    size: int
    path: str  # under the squashfs root, "" for the root itself
    link: str


_SQUASH_LINE = re.compile(r"^(?P<mode>\S{10}) +\d+/\d+ +(?:(?P<size>\d+)|\d+, *\d+) +\S+ +\S+ ?(?P<path>.*)$")


def _squash_listing(path: Path) -> list[SquashEntry]:
    try:
        out = subprocess.run(
            ["unsquashfs", "-lln", "-n", "-d", "", str(path)],
            capture_output=True,
            check=False,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HostError(f"unsquashfs -lln {path}: {e}") from e
    if out.returncode != 0:
        raise InvalidError(
            f"{path.name}: not a readable squashfs: {out.stderr.decode(errors='replace').strip()}"
        )
    entries = []
    for raw in out.stdout.decode("utf-8", "surrogateescape").splitlines():
        # "drwxr-xr-x 0/0 27 2024-01-01 00:00 /bin" ; a device: "crw-r--r-- 0/0  1,  3 date time /dev/null"
        m = _SQUASH_LINE.match(raw)
        if m is None or not m["path"]:
            continue  # the root itself, or a line that is not an entry
        name, link = m["path"].removeprefix("/"), ""
        if m["mode"][0] == "l":
            name, _, link = name.partition(" -> ")
        entries.append(SquashEntry(m["mode"], int(m["size"] or 0), name, link))
    return entries


def scan_squashfs(path: Path, limits: Limits) -> Scan:
    """Check a squashfs rootfs from unsquashfs's own listing: links, sizes and counts."""
    scan = Scan(has_rootfs=True)
    for e in _squash_listing(path):
        name = _clean(e.path, e.path)
        if e.mode[0] == "l":
            if "\0" in e.link:
                raise InvalidError(f'Image member "{e.path}" links to a name with a NUL byte')
            if not e.link.startswith("/") and _climbs_out(name.split("/")[:-1], e.link):
                raise InvalidError(f'Image member "{e.path}" is a symlink leading out of the image')
        scan.files += 1
        scan.bytes += e.size
        if scan.files > limits.max_files:
            raise InvalidError(f'Image member "{e.path}": the image has more than {limits.max_files} files')
        if scan.bytes > limits.max_bytes:
            raise InvalidError(
                f'Image member "{e.path}": the image unpacks to more than {limits.max_bytes} bytes'
            )
    return scan


def extract_squashfs(path: Path, target: Path, limits: Limits, skip_devices: bool) -> Scan:
    """Unpack a squashfs into TARGET/rootfs (which must not exist yet) after checking its listing."""
    scan = scan_squashfs(path, limits)
    dest = target / "rootfs"
    try:
        out = subprocess.run(
            ["unsquashfs", "-n", "-d", str(dest), str(path)], capture_output=True, check=False, timeout=3600
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HostError(f"unsquashfs {path} into {dest}: {e}") from e
    if out.returncode != 0:
        raise HostError(f"unsquashfs {path} into {dest}: {out.stderr.decode(errors='replace').strip()}")
    if skip_devices:
        for entry in _squash_listing(path):
            if entry.mode[0] in "cb":
                (dest / _clean(entry.path, entry.path)).unlink(missing_ok=True)
    return scan


# --- files of the store --------------------------------------------------------------------------


def publish(tmp: Path, final: Path) -> None:
    """Move a finished upload into place atomically (same directory, so one rename)."""
    try:
        os.rename(tmp, final)
    except OSError as e:
        raise HostError(f"rename {tmp} to {final}: {e.strerror}") from e


def open_read(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as e:
        raise HostError(f"open {path}: {e.strerror}") from e


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as e:
        raise HostError(f"stat {path}: {e.strerror}") from e


def exists(path: Path) -> bool:
    return os.path.lexists(path)


def list_dir(path: Path, keep: Callable[[str], bool]) -> list[str]:
    try:
        return sorted(n for n in os.listdir(path) if keep(n))
    except FileNotFoundError:
        return []
