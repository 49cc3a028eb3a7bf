"""The upload receiver cuts a multipart body at its boundaries whatever the read sizes, hashes the
parts in order (Incus's split fingerprint), and leaves no file behind when the body is bad."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pincus.errors import InvalidError
from pincus.host import image_upload
from pincus.images import upload_headers


class Trickle:
    """A body handed over N bytes at a time, so boundaries fall across reads."""

    def __init__(self, data: bytes, n: int) -> None:
        self.data, self.n = data, n

    def read(self, size: int) -> bytes:
        out, self.data = self.data[: min(size, self.n)], self.data[min(size, self.n) :]
        return out


def _form(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    body = b""
    for name, data in parts:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("n", [1, 7, 64, 1 << 20])
def test_multipart_parts_and_fingerprint_whatever_the_read_size(tmp_path: Path, n: int) -> None:
    boundary = "XyZ-boundary"
    # Data that nearly holds the delimiter: a CRLF and dashes, the boundary without its dashes.
    meta = b"meta\r\n-" + b"XyZ-boundary" + os.urandom(300)
    rootfs = os.urandom(5000) + b"\r\n--XyZ-boundar"
    up = image_upload.receive_multipart(Trickle(_form(boundary, [("metadata", meta), ("rootfs", rootfs)]), n),
                                        boundary, tmp_path)  # fmt: skip
    assert [(p.name, p.filename, p.size) for p in up.parts] == [
        ("metadata", "metadata.bin", len(meta)),
        ("rootfs", "rootfs.bin", len(rootfs)),
    ]
    assert up.parts[0].path.read_bytes() == meta and up.parts[1].path.read_bytes() == rootfs
    assert up.sha256 == hashlib.sha256(meta + rootfs).hexdigest()


def test_a_cut_off_multipart_body_leaves_no_file(tmp_path: Path) -> None:
    body = _form("b", [("metadata", b"x" * 100), ("rootfs", b"y" * 1000)])
    with pytest.raises(InvalidError, match='part "rootfs" is cut off'):
        image_upload.receive_multipart(Trickle(body[:-200], 50), "b", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_raw_body_is_hashed_while_written(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    up = image_upload.receive_raw(Trickle(data, 100_000), tmp_path)
    assert up.sha256 == hashlib.sha256(data).hexdigest() and up.size == len(data)
    assert up.parts[0].path.read_bytes() == data and up.parts[0].path.parent == tmp_path


def test_upload_headers_as_incus_clients_send_them() -> None:
    assert upload_headers.boundary_of('multipart/form-data; boundary="abc"') == "abc"
    with pytest.raises(InvalidError):
        upload_headers.boundary_of("multipart/form-data")
    assert upload_headers.aliases("alias=a&alias=b") == ["a", "b"]
    assert upload_headers.aliases("plain") == ["plain"]
    assert upload_headers.properties("os=x&release=1") == {"os": "x", "release": "1"}
