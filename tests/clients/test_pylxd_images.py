"""pylxd uploads and manages images on pincusd (it sends the raw image with Content-Length)."""

from __future__ import annotations

import pylxd

from tests import imagelib
from tests.pincus_testlib import Daemon


def test_pylxd_creates_lists_aliases_and_deletes_an_image(daemon: Daemon) -> None:
    client = pylxd.Client(endpoint=str(daemon.dir / "unix.socket"))
    data = imagelib.busybox_image().read_bytes()
    image = client.images.create(data, wait=True)
    fp = imagelib.sha256(imagelib.busybox_image())
    assert image.fingerprint == fp
    assert [i.fingerprint for i in client.images.all()] == [fp]
    image.add_alias("pyl", "from pylxd")
    again = client.images.get_by_alias("pyl")
    assert again.fingerprint == fp and again.architecture == "x86_64" and again.properties["os"] == "busybox"
    again.delete(wait=True)
    assert client.images.all() == []
    assert list((daemon.dir / "images").iterdir()) == []


def test_pylxd_creates_a_split_image(daemon: Daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = pylxd.Client(endpoint=str(daemon.dir / "unix.socket"))
    meta, rootfs = imagelib.split(tmp_path, "gzip")
    image = client.images.create(rootfs.read_bytes(), metadata=meta.read_bytes(), wait=True)
    assert image.fingerprint == imagelib.sha256(meta, rootfs)
