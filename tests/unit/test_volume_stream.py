"""The volume stream between members: GNU tar in a chunked body whose last chunk says it is whole."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pincus.errors import HostError
from pincus.host import volume_stream


def _sent(path: Path) -> bytes:
    out = io.BytesIO()
    volume_stream.send(path, out)
    return out.getvalue()


def _unchunked(body: bytes) -> bytes:
    out = io.BytesIO()
    volume_stream._copy_chunks(io.BytesIO(body), out, "m1", "/internal/instances/c1/volume")
    return out.getvalue()


def test_a_whole_volume_arrives_as_the_tar_of_its_tree(tmp_path: Path) -> None:
    (tmp_path / "rootfs" / "root").mkdir(parents=True)
    (tmp_path / "rootfs" / "root" / "note").write_bytes(b"moved-along\n" * 100000)
    body = _sent(tmp_path)
    assert body.endswith(b"\r\n0\r\n\r\n") and body.count(b"\r\n") > 4  # more than one chunk
    with tarfile.open(fileobj=io.BytesIO(_unchunked(body))) as tf:
        member = tf.getmember("./rootfs/root/note")
        assert tf.extractfile(member).read() == b"moved-along\n" * 100000  # type: ignore[union-attr]


def test_a_stream_without_its_last_chunk_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    body = _sent(tmp_path)
    with pytest.raises(HostError, match="before its end"):
        _unchunked(body[: -len(b"0\r\n\r\n")])
    with pytest.raises(HostError, match="mid-chunk"):
        _unchunked(body[:100])


def test_a_sender_whose_tar_fails_never_writes_the_last_chunk(tmp_path: Path) -> None:
    out = io.BytesIO()
    with pytest.raises(HostError, match="tar of"):
        volume_stream.send(tmp_path / "missing", out)
    assert not out.getvalue().endswith(b"0\r\n\r\n")
