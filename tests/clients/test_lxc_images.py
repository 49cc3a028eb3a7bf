"""Debian's LXD 5.0.2 client `lxc` imports, lists, aliases, exports and deletes images on pincusd.

lxc uploads a unified image as a chunked raw body, a split one as multipart/form-data, and
adds `--alias` through /1.0/images/aliases once the upload's operation has ended.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import imagelib
from tests.clients.test_lxc_client import _CONFIG, LXC, Lxc
from tests.pincus_testlib import Daemon

pytestmark = pytest.mark.skipif(not Path(LXC).exists(), reason="lxc (Debian lxd-client) is not installed")


@pytest.fixture
def lxc(daemon: Daemon, tmp_path: Path) -> Lxc:
    conf = tmp_path / "lxd-conf"
    conf.mkdir()
    (conf / "config.yml").write_text(_CONFIG)
    return Lxc(daemon, conf)


def test_lxc_imports_a_unified_image_with_an_alias_and_lists_it(lxc: Lxc) -> None:
    image = imagelib.busybox_image()
    out = lxc.run("image", "import", str(image), "--alias", "bb").stdout
    fp = imagelib.sha256(image)
    assert fp in out
    (listed,) = lxc.json("image", "list")
    assert listed["fingerprint"] == fp and listed["architecture"] == "x86_64"
    assert [a["name"] for a in listed["aliases"]] == ["bb"]
    assert listed["properties"]["os"] == "busybox"
    table = lxc.run("image", "list").stdout
    assert "| bb " in table and fp[:12] in table
    assert sorted((lxc.daemon.dir / "images").iterdir()) == [lxc.daemon.dir / "images" / fp]


def test_lxc_imports_a_split_image_and_exports_it_back(lxc: Lxc, tmp_path: Path) -> None:
    meta, rootfs = imagelib.split(tmp_path, "xz", "squashfs")
    lxc.run("image", "import", str(meta), str(rootfs), "--alias", "split")
    fp = imagelib.sha256(meta, rootfs)
    info = lxc.run("image", "info", "split").stdout
    assert f"Fingerprint: {fp}" in info
    out = tmp_path / "export"
    out.mkdir()
    lxc.run("image", "export", "split", str(out / "x"))
    # lxc names a split export TARGET (metadata) and TARGET.root (rootfs).
    assert sorted(f.name for f in out.iterdir()) == ["x", "x.root"]
    assert imagelib.sha256(out / "x", out / "x.root") == fp


def test_lxc_alias_rename_and_image_delete(lxc: Lxc) -> None:
    lxc.run("image", "import", str(imagelib.busybox_image()), "--alias", "a")
    lxc.run("image", "alias", "rename", "a", "b")
    assert [a["name"] for a in lxc.json("image", "alias", "list")] == ["b"]
    lxc.run("image", "delete", "b")
    assert lxc.json("image", "list") == []
    assert list((lxc.daemon.dir / "images").iterdir()) == []
