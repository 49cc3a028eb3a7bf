"""Storage pools and instance volumes against the real kernel and file systems: dir and btrfs
(on a loop file) pools through the CLI, snapshots checked with btrfs's own tools, nothing left
behind (mounts, loop devices, files), a full disk during unpack rolled back."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

import yaml

from tests.imagelib import member
from tests.pincus_testlib import Daemon
from tests.storagelib import (
    file_member,
    in_daemon_ns,
    loop_devices_of,
    make_image,
    mounts_of,
    seen_by_daemon,
    subvolume_show,
)


def _pool_dir(daemon: Daemon, pool: str) -> Path:
    return daemon.dir / "storage-pools" / pool


def _mounted(daemon: Daemon, path: Path) -> list[dict[str, str]]:
    return [m for m in mounts_of(daemon) if m["target"] == str(path)]


def _pools(daemon: Daemon) -> list[dict[str, Any]]:
    return list(json.loads(daemon.cli("storage", "list", "--format", "json").stdout))


def test_dir_pool_is_created_listed_shown_and_deleted_through_the_cli(daemon: Daemon) -> None:
    assert "Storage pool p1 created" in daemon.cli("storage", "create", "p1", "dir").stdout
    root = _pool_dir(daemon, "p1")
    assert sorted(p.name for p in root.iterdir()) == ["containers", "images"]
    table = daemon.cli("storage", "list").stdout
    assert "NAME" in table and "DRIVER" in table and "p1" in table and "dir" in table
    shown = yaml.safe_load(daemon.cli("storage", "show", "p1").stdout)
    assert shown["name"] == "p1" and shown["driver"] == "dir" and shown["used_by"] == []
    assert "already exists" in daemon.fails("storage", "create", "p1", "dir")
    daemon.cli("storage", "delete", "p1")
    assert not root.exists() and _pools(daemon) == []


def test_a_dir_pool_source_that_holds_data_is_refused_and_an_empty_one_is_used(
    daemon: Daemon, tmp_path: Path
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "precious").write_text("keep")
    before = daemon.db_dump()
    assert "already holds data" in daemon.fails("storage", "create", "p1", "dir", f"source={full}")
    assert daemon.db_dump() == before
    assert sorted(p.name for p in full.iterdir()) == ["precious"]
    assert not _pool_dir(daemon, "p1").exists() and not _pool_dir(daemon, "p1").is_symlink()
    assert "absolute path" in daemon.fails("storage", "create", "p1", "dir", "source=rel/dir")
    assert "normalised" in daemon.fails("storage", "create", "p1", "dir", f"source={full}/../full")

    empty = tmp_path / "empty"
    empty.mkdir()
    daemon.cli("storage", "create", "p1", "dir", f"source={empty}")
    assert sorted(p.name for p in empty.iterdir()) == ["containers", "images"]
    daemon.cli("init", "c1", "--empty", "-s", "p1")
    assert (empty / "containers" / "c1" / "rootfs").is_dir()
    daemon.cli("delete", "c1")
    daemon.cli("storage", "delete", "p1")
    assert empty.is_dir() and list(empty.iterdir()) == []


def test_btrfs_pool_on_a_loop_file_leaves_nothing_after_delete(daemon: Daemon) -> None:
    daemon.cli("storage", "create", "fast", "btrfs", "size=200MiB")
    root, img = _pool_dir(daemon, "fast"), daemon.dir / "disks" / "fast.img"
    [mount] = _mounted(daemon, root)
    assert mount["fstype"] == "btrfs"
    [loop] = loop_devices_of(img)
    assert mount["source"] == loop["name"] and loop["autoclear"]
    assert img.stat().st_size == 200 * 2**20
    shown = yaml.safe_load(daemon.cli("storage", "show", "fast").stdout)
    assert shown["config"] == {"size": "200MiB", "source": str(img)}
    err = daemon.fails(
        "query", "-X", "PATCH", "-d", '{"config": {"size": "300MiB"}}', "/1.0/storage-pools/fast"
    )
    assert 'key "size" cannot be changed after creation' in err
    daemon.cli("query", "-X", "PATCH", "-d", '{"description": "quick"}', "/1.0/storage-pools/fast")
    assert yaml.safe_load(daemon.cli("storage", "show", "fast").stdout)["description"] == "quick"
    daemon.cli("storage", "delete", "fast")
    assert _mounted(daemon, root) == [] and loop_devices_of(img) == []
    assert not img.exists() and not root.exists()


def test_btrfs_instance_volume_is_a_snapshot_of_the_image_volume(daemon: Daemon) -> None:
    fp = make_image(daemon, "tiny", [file_member("etc/marker", b"from the image\n")])
    daemon.cli("storage", "create", "fast", "btrfs", "size=200MiB")
    daemon.cli("init", "tiny", "c1", "-s", "fast")
    daemon.cli("init", fp[:12], "c2", "-s", "fast")
    root = _pool_dir(daemon, "fast")
    image = subvolume_show(daemon, root / "images" / fp)
    for name in ("c1", "c2"):
        vol = subvolume_show(daemon, root / "containers" / name)
        assert vol["Parent UUID"] == image["UUID"], name
    marker = seen_by_daemon(daemon, root / "containers" / "c1" / "rootfs" / "etc" / "marker")
    assert marker.read_bytes() == b"from the image\n"
    vols = json.loads(daemon.cli("storage", "volume", "list", "fast", "--format", "json").stdout)
    assert sorted((v["type"], v["name"]) for v in vols) == [
        ("container", "c1"),
        ("container", "c2"),
        ("image", fp),
    ]
    code, doc = daemon.api("GET", "/1.0/storage-pools/fast/volumes/container/c1")
    assert code == 200 and doc["metadata"]["used_by"] == ["/1.0/instances/c1"]
    assert "currently in use" in daemon.fails("storage", "delete", "fast")
    daemon.cli("delete", "c1", "c2")
    daemon.cli("storage", "delete", "fast")  # the image volume goes with the pool
    assert loop_devices_of(daemon.dir / "disks" / "fast.img") == []


def test_btrfs_pool_is_mounted_again_when_the_daemon_starts(daemon: Daemon) -> None:
    make_image(daemon, "tiny", [file_member("etc/marker", b"x")])
    daemon.cli("storage", "create", "fast", "btrfs", "size=200MiB")
    daemon.cli("init", "tiny", "c1", "-s", "fast")
    img, root = daemon.dir / "disks" / "fast.img", _pool_dir(daemon, "fast")
    daemon.stop()  # its mount namespace goes with it, as a reboot takes the host's mounts
    assert loop_devices_of(img) == []
    daemon.start()
    assert [m["fstype"] for m in _mounted(daemon, root)] == ["btrfs"]
    assert len(loop_devices_of(img)) == 1
    assert subvolume_show(daemon, root / "containers" / "c1")["Name"] == "c1"


def test_a_full_disk_during_unpack_is_rolled_back(daemon: Daemon) -> None:
    make_image(daemon, "big", [file_member("filler", os.urandom(1 << 20) * 200)], how="zstd")
    daemon.cli("storage", "create", "tiny", "btrfs", "size=120MiB")
    before = daemon.db_dump()
    err = daemon.fails("init", "big", "c1", "-s", "tiny")
    assert "No space left on device" in err, err
    assert daemon.db_dump() == before
    root = seen_by_daemon(daemon, _pool_dir(daemon, "tiny"))
    assert list((root / "images").iterdir()) == [] and list((root / "containers").iterdir()) == []
    vols = json.loads(daemon.cli("storage", "volume", "list", "tiny", "--format", "json").stdout)
    assert vols == []
    daemon.cli("storage", "delete", "tiny")


def test_create_rename_delete_move_the_instance_volume_on_the_default_pool(daemon: Daemon) -> None:
    assert _pools(daemon) == []
    make_image(daemon, "tiny")
    daemon.cli("init", "tiny", "c1")  # no pool yet: the default one is made on first need
    [pool] = _pools(daemon)
    assert pool["name"] == "default" and pool["driver"] == "dir"
    assert yaml.safe_load(daemon.cli("config", "show", "c1").stdout)["devices"] == {}
    containers = _pool_dir(daemon, "default") / "containers"
    assert (containers / "c1" / "rootfs").is_dir()
    daemon.cli("query", "-X", "POST", "-d", '{"name": "c2"}', "--wait", "/1.0/instances/c1")
    assert sorted(p.name for p in containers.iterdir()) == ["c2"]
    code, doc = daemon.api("GET", "/1.0/storage-pools/default/volumes/container/c2")
    assert code == 200 and doc["metadata"]["name"] == "c2"
    daemon.cli("delete", "c2")
    assert list(containers.iterdir()) == []
    vols = json.loads(daemon.cli("storage", "volume", "list", "default", "--format", "json").stdout)
    assert [v["type"] for v in vols] == ["image"]  # the unpacked image stays for the next create


def test_dir_instance_volume_is_a_copy_keeping_owners_modes_and_links(daemon: Daemon) -> None:
    make_image(
        daemon,
        "tiny",
        [
            file_member("bin/tool", b"#!/bin/sh\n", uid=1234, gid=5678, mode=0o4755),
            member("rootfs/bin/hard", tarfile.LNKTYPE, link="rootfs/bin/tool"),
            member("rootfs/bin/soft", tarfile.SYMTYPE, link="tool"),
        ],
    )
    daemon.cli("storage", "create", "p1", "dir")
    daemon.cli("init", "tiny", "c1", "-s", "p1", "-c", "security.privileged=true")
    copy = _pool_dir(daemon, "p1") / "containers" / "c1" / "rootfs" / "bin"
    st = (copy / "tool").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o4755)
    assert (copy / "hard").stat().st_ino == st.st_ino
    assert os.readlink(copy / "soft") == "tool"
    (copy / "tool").write_bytes(b"changed")
    [image] = list((_pool_dir(daemon, "p1") / "images").iterdir())
    assert (image / "rootfs" / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"  # a copy, not the image's


def test_an_image_of_the_wrong_type_or_architecture_is_refused_and_nothing_is_created(daemon: Daemon) -> None:
    make_image(daemon, "arm", architecture="aarch64")
    make_image(daemon, "tiny")
    before = daemon.db_dump()
    assert 'is for architecture "aarch64"' in daemon.fails("init", "arm", "c1")
    assert "doesn't match instance's type" in daemon.fails("init", "tiny", "v1", "--vm")
    assert daemon.db_dump() == before
    assert not (daemon.dir / "storage-pools" / "default").exists()


def test_disk_devices_are_validated(daemon: Daemon, tmp_path: Path) -> None:
    daemon.cli("storage", "create", "p1", "dir")
    for bad, message in (
        ("source=relative path=/mnt", "not an absolute path"),
        (f"source={tmp_path}/../x path=/mnt", "normalised"),
        (f"source={tmp_path} path=mnt", "not an absolute path"),
        (f"source={tmp_path}/missing path=/mnt", "does not exist"),
        ("path=/ pool=nopool", 'storage pool "nopool" not found'),
        ("path=/ pool=p1", "more than one root disk"),
    ):
        daemon.cli("init", "c1", "--empty", "-s", "p1")
        err = daemon.fails("config", "device", "add", "c1", "d1", "disk", *bad.split())
        assert message in err, (bad, err)
        daemon.cli("delete", "c1")
    make_image(daemon, "tiny")
    daemon.cli("init", "tiny", "c1")  # on the default pool
    err = daemon.fails("config", "device", "add", "c1", "root", "disk", "path=/", "pool=p1")
    assert 'its root volume is on storage pool "default"; moving it to pool "p1" is not supported' in err
    daemon.cli("delete", "c1")
    assert "cannot limit a volume's size" in daemon.fails(
        "init", "c1", "--empty", "-d", "root,size=1GiB", "-s", "p1"
    )
    daemon.cli("init", "c1", "--empty", "-s", "p1")
    daemon.cli(
        "config", "device", "add", "c1", "d1", "disk", f"source={tmp_path}", "path=/mnt", "readonly=true"
    )
    daemon.cli("delete", "c1")


def test_admin_init_auto_and_preseed_create_pools_and_the_root_disk(daemon: Daemon) -> None:
    daemon.cli("admin", "init", "--auto")
    [pool] = _pools(daemon)
    assert pool["name"] == "default" and pool["driver"] == "dir"
    profile = yaml.safe_load(daemon.cli("profile", "show", "default").stdout)
    assert profile["devices"]["root"] == {"type": "disk", "path": "/", "pool": "default"}
    preseed = {
        "storage_pools": [{"name": "fast", "driver": "btrfs", "config": {"size": "150MiB"}}],
        "profiles": [{"name": "quick", "devices": {"root": {"type": "disk", "path": "/", "pool": "fast"}}}],
    }
    daemon.cli("admin", "init", "--preseed", stdin=yaml.safe_dump(preseed))
    assert sorted(p["name"] for p in _pools(daemon)) == ["default", "fast"]
    daemon.cli("init", "c1", "--empty", "-p", "quick")
    vols = json.loads(daemon.cli("storage", "volume", "list", "fast", "--format", "json").stdout)
    assert [v["name"] for v in vols] == ["c1"]
    # A failing preseed undoes the pool it made.
    bad = {
        "storage_pools": [{"name": "p3", "driver": "dir"}],
        "profiles": [{"name": "x", "devices": {"r": {"type": "disk", "path": "/", "pool": "nope"}}}],
    }
    daemon.fails("admin", "init", "--preseed", stdin=yaml.safe_dump(bad))
    assert sorted(p["name"] for p in _pools(daemon)) == ["default", "fast"]
    daemon.cli("delete", "c1")


def test_btrfs_root_disk_size_is_a_quota_the_kernel_enforces(daemon: Daemon) -> None:
    daemon.cli("storage", "create", "fast", "btrfs", "size=300MiB")
    daemon.cli("init", "c1", "--empty", "-s", "fast", "-d", "root,size=20MiB")
    code, doc = daemon.api("GET", "/1.0/storage-pools/fast/volumes/container/c1")
    assert code == 200 and doc["metadata"]["config"] == {"size": "20MiB"}
    rootfs = _pool_dir(daemon, "fast") / "containers" / "c1" / "rootfs"
    r = in_daemon_ns(daemon, "dd", "if=/dev/urandom", f"of={rootfs}/big", "bs=1M", "count=40", check=False)
    assert r.returncode != 0 and "Disk quota exceeded" in r.stderr, r.stderr
    daemon.cli("init", "c2", "--empty", "-s", "fast")  # no size: no limit
    r = in_daemon_ns(
        daemon, "dd", "if=/dev/urandom", f"of={rootfs.parent.parent}/c2/rootfs/big", "bs=1M", "count=40"
    )
    daemon.cli("delete", "c1", "c2")
    daemon.cli("storage", "delete", "fast")


def test_image_delete_removes_its_volume_from_every_pool_and_instances_keep_their_root(
    daemon: Daemon,
) -> None:
    fp = make_image(daemon, "tiny", [file_member("etc/marker", b"from the image\n")])
    daemon.cli("storage", "create", "plain", "dir")
    daemon.cli("storage", "create", "fast", "btrfs", "size=200MiB")
    daemon.cli("init", "tiny", "c1", "-s", "plain")
    daemon.cli("init", "tiny", "c2", "-s", "fast")
    plain, fast = _pool_dir(daemon, "plain"), seen_by_daemon(daemon, _pool_dir(daemon, "fast"))
    assert (plain / "images" / fp / "rootfs" / "etc" / "marker").is_file()
    assert (fast / "images" / fp / "rootfs" / "etc" / "marker").is_file()
    daemon.cli("image", "delete", "tiny")
    assert list((plain / "images").iterdir()) == []
    assert list((fast / "images").iterdir()) == []
    gone = in_daemon_ns(daemon, "btrfs", "subvolume", "list", str(_pool_dir(daemon, "fast"))).stdout
    assert f"images/{fp}" not in gone and "containers/c2" in gone, gone
    for pool in ("plain", "fast"):
        vols = json.loads(daemon.cli("storage", "volume", "list", pool, "--format", "json").stdout)
        assert [v["type"] for v in vols] == ["container"], pool
    # The instances' own roots do not depend on the image's volume (a copy; a btrfs snapshot).
    assert (plain / "containers" / "c1" / "rootfs" / "etc" / "marker").read_bytes() == b"from the image\n"
    assert (fast / "containers" / "c2" / "rootfs" / "etc" / "marker").read_bytes() == b"from the image\n"
    assert subvolume_show(daemon, _pool_dir(daemon, "fast") / "containers" / "c2")["Name"] == "c2"
    daemon.cli("delete", "c1", "c2")
    daemon.cli("storage", "delete", "plain")
    daemon.cli("storage", "delete", "fast")  # nothing of the image held the pools
    assert not plain.exists()


def test_image_delete_through_the_api_and_orphan_volumes_and_files_go_at_daemon_start(daemon: Daemon) -> None:
    import sqlite3

    fp = make_image(daemon, "tiny", [file_member("etc/marker", b"x")])
    daemon.cli("init", "tiny", "c1")
    images = _pool_dir(daemon, "default") / "images"
    assert [p.name for p in images.iterdir()] == [fp]
    code, doc = daemon.api("DELETE", f"/1.0/images/{fp}")
    assert code == 202 and daemon.wait_op(doc)["status"] == "Success"
    assert list(images.iterdir()) == []
    # A volume whose image record is gone (a daemon killed between the two) goes at the next start.
    other = make_image(daemon, "other", [file_member("etc/marker", b"y")])
    daemon.cli("init", "other", "c2")
    assert (daemon.dir / "images" / other).is_file()
    daemon.stop()
    conn = sqlite3.connect(daemon.dir / "pincus.db")
    with conn:
        conn.execute("PRAGMA foreign_keys = ON")  # its aliases and properties go with it
        conn.execute("DELETE FROM images WHERE fingerprint = ?", (other,))
    conn.close()
    daemon.start()
    assert list(images.iterdir()) == []
    assert not (daemon.dir / "images" / other).exists()  # nor its file in the store
    vols = json.loads(daemon.cli("storage", "volume", "list", "default", "--format", "json").stdout)
    assert sorted((v["type"], v["name"]) for v in vols) == [("container", "c1"), ("container", "c2")]
    assert (_pool_dir(daemon, "default") / "containers" / "c2" / "rootfs" / "etc" / "marker").is_file()


def test_a_put_without_devices_is_refused_when_it_would_drop_the_only_root_disk(daemon: Daemon) -> None:
    daemon.cli("storage", "create", "plain", "dir")
    daemon.cli("init", "c1", "--empty", "-s", "plain")
    code, doc = daemon.api("GET", "/1.0/instances/c1")
    body = {k: doc["metadata"][k] for k in ("config", "profiles", "description")}
    before = daemon.db_dump()
    code, doc = daemon.api("PUT", "/1.0/instances/c1", body)  # as a hand-written PUT: no "devices"
    assert code == 202, doc
    op = daemon.wait_op(doc)
    assert op["status"] == "Failure", op
    assert 'would have no root disk: keep device "root"' in op["err"], op
    assert daemon.db_dump() == before
    # Dropping the profiles is no way round it when the root disk is the profile's.
    daemon.cli("profile", "create", "rooted")
    daemon.cli("profile", "device", "add", "rooted", "root", "disk", "path=/", "pool=plain")
    daemon.cli("init", "c2", "--empty", "-p", "rooted")
    assert "would have no root disk" in daemon.fails("profile", "remove", "c2", "rooted")
    assert "would have no root disk" in daemon.fails("profile", "device", "remove", "rooted", "root")
    daemon.cli("delete", "c1", "c2")


def test_a_put_without_devices_keeps_the_profiles_root_disk_and_the_instance_starts(daemon: Daemon) -> None:
    daemon.image()
    daemon.cli("admin", "init", "--auto")  # a root disk on "default" in the default profile
    daemon.cli("init", "busybox", "c1", "-d", "root,pool=default")  # and one of its own
    assert yaml.safe_load(daemon.cli("config", "show", "c1").stdout)["devices"]["root"]["pool"] == "default"
    code, doc = daemon.api("GET", "/1.0/instances/c1")
    body = {k: doc["metadata"][k] for k in ("config", "profiles", "description")}
    code, doc = daemon.api("PUT", "/1.0/instances/c1", body)
    assert code == 202, doc
    assert daemon.wait_op(doc)["status"] == "Success"
    shown = yaml.safe_load(daemon.cli("config", "show", "c1", "--expanded").stdout)
    assert shown["devices"]["root"] == {"type": "disk", "path": "/", "pool": "default"}
    assert yaml.safe_load(daemon.cli("config", "show", "c1").stdout)["devices"] == {}
    daemon.cli("start", "c1")
    assert daemon.cli("exec", "c1", "--", "cat", "/etc/hostname").stdout.strip() == "c1"
    daemon.cli("delete", "-f", "c1")
