"""An image upload streamed from the request body into files of the image store, hashed on the way.

The body is never held in memory: a raw body (a unified image) goes straight to one file; a
multipart/form-data body (a split image: `metadata`, then `rootfs` or `rootfs.img`) is cut at its
boundaries into one file per part. The sha256 runs over the parts' bytes in order, which is how
Incus fingerprints a split image (metadata file, then rootfs file).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pincus.errors import HostError, InvalidError

CHUNK = 1024 * 1024
MAX_PART_HEADERS = 16 * 1024
UPLOAD_PREFIX = ".upload-"


class Body(Protocol):
    def read(self, n: int) -> bytes: ...


@dataclass(frozen=True)
class Part:
    name: str  # the form field: "metadata", "rootfs", "rootfs.img"; "" for a raw body
    filename: str
    path: Path
    size: int


@dataclass(frozen=True)
class Upload:
    parts: tuple[Part, ...]
    sha256: str

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)


def _new_file(directory: Path) -> tuple[Path, int]:
    path = directory / f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise HostError(f"create {path}: {e.strerror}") from e
    return path, fd


def _write(fd: int, data: bytes | memoryview, path: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as e:
        raise HostError(f"write {path}: {e.strerror}") from e


def remove(upload_paths: list[Path]) -> None:
    for p in upload_paths:
        p.unlink(missing_ok=True)


def receive_raw(body: Body, directory: Path) -> Upload:
    """The whole body into one new file under DIRECTORY (the image store: a rename publishes it)."""
    path, fd = _new_file(directory)
    digest = hashlib.sha256()
    size = 0
    try:
        while chunk := body.read(CHUNK):
            digest.update(chunk)
            _write(fd, chunk, path)
            size += len(chunk)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return Upload((Part("", "", path, size),), digest.hexdigest())


_DISPOSITION = re.compile(r'(\w+)="([^"]*)"')


class _Buffered:
    def __init__(self, body: Body) -> None:
        self.body = body
        self.buf = b""
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.body.read(CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def until(self, marker: bytes, limit: int, what: str) -> bytes:
        """Bytes before MARKER (consumed with it), when they are at most LIMIT long."""
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out, self.buf = self.buf[:i], self.buf[i + len(marker) :]
                return out
            if len(self.buf) > limit or not self.fill():
                raise InvalidError(f"Invalid multipart image: {what}")


def receive_multipart(body: Body, boundary: str, directory: Path) -> Upload:
    """Each part of a multipart/form-data body into a file of its own under DIRECTORY."""
    stream = _Buffered(body)
    delimiter = b"\r\n--" + boundary.encode()
    stream.buf = b"\r\n"  # the first delimiter has no CRLF before it
    stream.until(delimiter, MAX_PART_HEADERS, "no opening boundary")
    digest = hashlib.sha256()
    parts: list[Part] = []
    try:
        while True:
            while len(stream.buf) < 2 and stream.fill():
                pass
            if stream.buf.startswith(b"--"):
                break  # the closing delimiter
            if not stream.buf.startswith(b"\r\n"):
                raise InvalidError("Invalid multipart image: malformed boundary line")
            stream.buf = stream.buf[2:]
            headers = stream.until(b"\r\n\r\n", MAX_PART_HEADERS, "part headers too long or cut off")
            name, filename = _disposition(headers)
            parts.append(_receive_part(stream, delimiter, directory, name, filename, digest))
    except BaseException:
        remove([p.path for p in parts])
        raise
    return Upload(tuple(parts), digest.hexdigest())


def _disposition(headers: bytes) -> tuple[str, str]:
    for line in headers.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            fields = dict(_DISPOSITION.findall(value))
            return fields.get("name", ""), fields.get("filename", "")
    raise InvalidError("Invalid multipart image: a part has no Content-Disposition")


def _receive_part(
    stream: _Buffered, delimiter: bytes, directory: Path, name: str, filename: str, digest: hashlib._Hash
) -> Part:
    path, fd = _new_file(directory)
    size = 0
    try:
        while True:
            i = stream.buf.find(delimiter)
            if i >= 0:
                data, stream.buf = stream.buf[:i], stream.buf[i + len(delimiter) :]
            else:
                # Keep what could be the start of a delimiter split across two reads.
                keep = len(delimiter) - 1
                cut = max(0, len(stream.buf) - keep)
                data, stream.buf = stream.buf[:cut], stream.buf[cut:]
            digest.update(data)
            _write(fd, data, path)
            size += len(data)
            if i >= 0:
                break
            if not stream.fill():
                raise InvalidError(f'Invalid multipart image: part "{name}" is cut off')
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return Part(name, filename, path, size)


def leftovers(directory: Path) -> list[Path]:
    """Uploads a previous daemon did not finish (it stopped mid-upload)."""
    try:
        return [directory / n for n in os.listdir(directory) if n.startswith(UPLOAD_PREFIX)]
    except FileNotFoundError:
        return []
