"""Images against a real daemon: every format and compression imported with Incus's fingerprint,
hostile archives refused with nothing left behind, aliases, export, delete, and the unpack that
storage uses, checked on the filesystem itself."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import tarfile
from pathlib import Path

import pytest

from tests import imagelib
from tests.pincus_testlib import Daemon


def _store(daemon: Daemon) -> list[str]:
    return sorted(os.listdir(daemon.dir / "images"))


def _import(daemon: Daemon, *files: Path, alias: str = "") -> str:
    out = daemon.cli("image", "import", *map(str, files), *(["--alias", alias] if alias else [])).stdout
    assert out.startswith("Image imported with fingerprint: "), out
    return out.split(": ", 1)[1].strip()


@pytest.mark.parametrize("how", imagelib.COMPRESSIONS)
def test_unified_image_imports_with_the_sha256_of_its_file(daemon: Daemon, tmp_path: Path, how: str) -> None:
    image = imagelib.unified(tmp_path / f"busybox.{how}", how)
    fp = _import(daemon, image, alias="bb")
    assert fp == imagelib.sha256(image)
    assert _store(daemon) == [fp]
    assert (daemon.dir / "images" / fp).read_bytes() == image.read_bytes()
    info = json.loads(daemon.cli("image", "list", "--format", "json").stdout)
    assert [(i["fingerprint"], i["architecture"], i["type"]) for i in info] == [(fp, "x86_64", "container")]
    assert info[0]["properties"]["os"] == "busybox"
    assert [a["name"] for a in info[0]["aliases"]] == ["bb"]


@pytest.mark.parametrize(
    ("how", "rootfs_format"),
    [("gzip", "tar"), ("xz", "tar"), ("zstd", "tar"), ("xz", "squashfs"), ("zstd", "squashfs")],
)
def test_split_image_fingerprint_is_sha256_of_metadata_then_rootfs(
    daemon: Daemon, tmp_path: Path, how: str, rootfs_format: str
) -> None:
    meta, rootfs = imagelib.split(tmp_path, how, rootfs_format)
    fp = _import(daemon, meta, rootfs)
    assert fp == imagelib.sha256(meta, rootfs)
    assert _store(daemon) == [fp, f"{fp}.rootfs"]
    assert (daemon.dir / "images" / f"{fp}.rootfs").read_bytes() == rootfs.read_bytes()


def test_image_list_columns_and_info_as_incus(daemon: Daemon, tmp_path: Path) -> None:
    fp = _import(daemon, imagelib.busybox_image(), alias="busybox")
    daemon.cli("image", "alias", "create", "bb2", fp[:10])
    table = daemon.cli("image", "list").stdout.splitlines()
    assert [h.strip() for h in table[1].strip("|").split("|")] == [
        "ALIAS", "FINGERPRINT", "PUBLIC", "DESCRIPTION", "ARCHITECTURE", "TYPE", "SIZE", "UPLOAD DATE",
    ]  # fmt: skip
    row = [c.strip() for c in table[3].strip("|").split("|")]
    assert row[:3] == ["bb2 (1 more)", fp[:12], "no"]
    assert row[4:6] == ["x86_64", "CONTAINER"]
    assert row[6] == f"{os.path.getsize(imagelib.busybox_image()) / 1024 / 1024:.2f}MiB"
    info = daemon.cli("image", "info", "busybox").stdout
    assert f"Fingerprint: {fp}\n" in info and "Architecture: x86_64\n" in info and "    os: busybox\n" in info


def test_alias_create_rename_delete(daemon: Daemon, tmp_path: Path) -> None:
    fp = _import(daemon, imagelib.busybox_image())
    daemon.cli("image", "alias", "create", "one", fp[:8], "--description", "first")
    assert "already exists" in daemon.fails("image", "alias", "create", "one", fp)
    assert "not found" in daemon.fails("image", "alias", "create", "two", "0" * 12)
    daemon.cli("image", "alias", "rename", "one", "two")
    listed = json.loads(daemon.cli("image", "alias", "list", "--format", "json").stdout)
    assert listed == [{"name": "two", "description": "first", "target": fp, "type": "container"}]
    daemon.cli("image", "alias", "delete", "two")
    assert json.loads(daemon.cli("image", "alias", "list", "--format", "json").stdout) == []
    assert "not found" in daemon.fails("image", "alias", "delete", "two")
    assert "Invalid alias name" in daemon.fails("image", "alias", "create", "a/b", fp)


def test_export_gives_back_the_same_bytes(daemon: Daemon, tmp_path: Path) -> None:
    image = imagelib.busybox_image()
    fp = _import(daemon, image, alias="bb")
    out = tmp_path / "out"
    out.mkdir()
    daemon.cli("image", "export", "bb", str(out))
    (exported,) = out.iterdir()
    assert exported.name == f"{fp}.tar.xz"
    assert imagelib.sha256(exported) == fp

    meta, rootfs = imagelib.split(tmp_path, "gzip")
    split_fp = _import(daemon, meta, rootfs)
    split_out = tmp_path / "split-out"
    daemon.cli("image", "export", split_fp, str(split_out))
    assert sorted(f.name for f in split_out.iterdir()) == [f"{split_fp}.tar.gz", f"meta-{split_fp}.tar.gz"]
    assert (
        imagelib.sha256(split_out / f"meta-{split_fp}.tar.gz", split_out / f"{split_fp}.tar.gz") == split_fp
    )


def test_delete_removes_the_files_and_the_aliases(daemon: Daemon, tmp_path: Path) -> None:
    meta, rootfs = imagelib.split(tmp_path, "xz")
    fp = _import(daemon, meta, rootfs, alias="gone")
    daemon.cli("image", "delete", "gone")
    assert _store(daemon) == []
    assert json.loads(daemon.cli("image", "list", "--format", "json").stdout) == []
    assert json.loads(daemon.cli("image", "alias", "list", "--format", "json").stdout) == []
    assert "not found" in daemon.fails("image", "delete", fp)


def test_same_image_twice_is_a_conflict_and_leaves_one_copy(daemon: Daemon) -> None:
    fp = _import(daemon, imagelib.busybox_image())
    assert "already exists" in daemon.fails("image", "import", str(imagelib.busybox_image()))
    assert _store(daemon) == [fp]


@pytest.mark.parametrize("name", sorted(imagelib.HOSTILE))
def test_hostile_image_is_refused_and_leaves_nothing(daemon: Daemon, tmp_path: Path, name: str) -> None:
    members, word = imagelib.HOSTILE[name]
    before = daemon.db_dump()
    error = daemon.fails("image", "import", str(imagelib.tarball(tmp_path / "evil.tar.gz", members)))
    assert word in error and "Image member" in error, error
    assert _store(daemon) == []
    assert daemon.db_dump() == before
    assert not Path("/etc/pincus-evil").exists() and not Path("/tmp/pincus-evil").exists()


@pytest.mark.parametrize(
    ("metadata", "word"),
    [
        (b"creation_date: 1700000000\n", "no architecture"),
        (b"architecture: x86_64\n", "no creation_date"),
        (None, "no metadata.yaml"),
        (b"- a list\n", "must be a map"),
    ],
)
def test_metadata_without_architecture_or_creation_date_is_refused(
    daemon: Daemon, tmp_path: Path, metadata: bytes | None, word: str
) -> None:
    image = imagelib.tarball(tmp_path / "m.tar.gz", [], metadata=metadata)
    assert word in daemon.fails("image", "import", str(image))
    assert _store(daemon) == []


def test_not_an_archive_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello" * 100)
    assert "Unsupported image file format" in daemon.fails("image", "import", str(junk))
    assert _store(daemon) == []


def _raw_upload(
    daemon: Daemon, body: bytes, headers: dict[str, str], chunked: bool = False
) -> dict[str, object]:
    head = "POST /1.0/images HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    if chunked:
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:1000], body[1000:])) + b"0\r\n\r\n"
        head += "Transfer-Encoding: chunked\r\n"
    else:
        payload = body
        head += f"Content-Length: {len(body)}\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(daemon.dir / "unix.socket"))
        # Refused before the whole body was read: the answer is waiting all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(head.encode() + b"\r\n" + payload)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    envelope = json.loads(raw.partition(b"\r\n\r\n")[2])
    if envelope.get("type") == "async":
        return daemon.wait_op(envelope)
    return dict(envelope)


def test_chunked_upload_with_incus_headers(daemon: Daemon) -> None:
    body = imagelib.busybox_image().read_bytes()
    fp = imagelib.sha256(imagelib.busybox_image())
    op = _raw_upload(
        daemon, body, {"X-Incus-fingerprint": fp, "X-Incus-properties": "custom=yes&os=other",
                       "X-Incus-public": "true", "X-Incus-aliases": "alias=a1&alias=a2"}, chunked=True
    )  # fmt: skip
    assert op["status"] == "Success", op
    assert op["metadata"] == {"fingerprint": fp, "size": len(body)}
    _, doc = daemon.api("GET", f"/1.0/images/{fp}")
    image = doc["metadata"]
    assert (
        image["public"] is True
        and image["properties"]["custom"] == "yes"
        and image["properties"]["os"] == "other"
    )
    assert sorted(a["name"] for a in image["aliases"]) == ["a1", "a2"]


def test_upload_with_a_wrong_fingerprint_is_refused_and_leaves_nothing(daemon: Daemon) -> None:
    body = imagelib.busybox_image().read_bytes()
    op = _raw_upload(daemon, body, {"X-LXD-fingerprint": "0" * 64})
    assert op["status"] == "Failure" and "Fingerprints don't match" in str(op["err"]), op
    assert _store(daemon) == []


def test_upload_cut_short_leaves_nothing(daemon: Daemon) -> None:
    body = imagelib.busybox_image().read_bytes()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(daemon.dir / "unix.socket"))
        s.sendall(f"POST /1.0/images HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        s.sendall(body[: len(body) // 2])
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        answer = s.recv(65536)
    assert b" 400 " in answer.split(b"\r\n")[0], answer
    assert _store(daemon) == []


# --- unpack, as the storage helper calls it ------------------------------------------------------


def _server_images(tmp_path: Path) -> object:
    from pincus.db.store import Store
    from pincus.events import EventHub
    from pincus.server.images import Images
    from pincus.state import State

    state = State(tmp_path / "state", None, EventHub())  # type: ignore[arg-type]
    state.dir.mkdir()
    state.store = Store(state.dir / "pincus.db")
    images = Images(state)
    images.start()
    return images


def _add(images: object, path: Path, rootfs: Path | None = None) -> str:
    from pincus.host.image_upload import Part, Upload
    from pincus.server.images import Images

    assert isinstance(images, Images)
    # As an upload would leave them: copies in the store's directory.
    parts = []
    for name, p in (("metadata", path), ("rootfs", rootfs)) if rootfs else (("", path),):
        assert p is not None
        copy = images.dir / f".upload-{p.name}"
        copy.write_bytes(p.read_bytes())
        parts.append(Part(name, p.name, copy, copy.stat().st_size))
    fp = imagelib.sha256(path, *([rootfs] if rootfs else []))
    return str(images.add(Upload(tuple(parts), fp), {})["fingerprint"])


@pytest.mark.parametrize("layout", ["unified", "split-tar", "split-squashfs"])
def test_unpack_gives_metadata_rootfs_templates_with_owners_and_links(tmp_path: Path, layout: str) -> None:
    from pincus.server.images import Images

    images = _server_images(tmp_path)
    assert isinstance(images, Images)
    if layout == "unified":
        fp = _add(images, imagelib.busybox_image())
    else:
        src = tmp_path / "src"
        src.mkdir()
        fp = _add(images, *imagelib.split(src, "xz", layout.removeprefix("split-")))
    rec = images.resolve({"type": "image", "fingerprint": fp[:16]})
    assert rec.fingerprint == fp and rec.architecture == "x86_64" and rec.type == "container"
    target = tmp_path / "volume"
    target.mkdir()
    images.unpack(fp, target, skip_devices=True)
    assert sorted(os.listdir(target)) == ["metadata.yaml", "rootfs", "templates"]
    root = target / "rootfs"
    assert os.readlink(root / "bin" / "sh") == "/bin/busybox"
    assert os.readlink(root / "lib") == "usr/lib"
    assert (root / "etc" / "pincus-image-marker").is_file()
    st = os.lstat(root / "bin" / "busybox")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    assert stat.S_IMODE(os.lstat(root / "tmp").st_mode) == 0o1777
    assert sorted(os.listdir(target / "templates")) == ["hostname.tpl", "hosts.tpl"]
    assert not (root / "usr" / "bin").exists()


def test_unpack_keeps_uids_hardlinks_devices_and_xattrs(tmp_path: Path) -> None:
    from pincus.server.images import Images

    images = _server_images(tmp_path)
    assert isinstance(images, Images)
    owned, _ = imagelib.member("rootfs/owned", data=b"data", uid=1000, gid=1001, mode=0o4750)
    owned.pax_headers = {"SCHILY.xattr.user.pincus": "yes"}
    members = [
        (owned, b"data"),
        imagelib.member("rootfs/hard", tarfile.LNKTYPE, link="rootfs/owned"),
        imagelib.member("rootfs/null", tarfile.CHRTYPE, mode=0o666),
    ]
    members[2][0].devmajor, members[2][0].devminor = 1, 3
    good = imagelib.tarball(tmp_path / "good.tar.gz", members)
    fp = _add(images, good)
    for skip in (False, True):
        target = tmp_path / f"t{skip}"
        target.mkdir()
        images.unpack(fp, target, skip_devices=skip)
        st = os.lstat(target / "rootfs" / "owned")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o4750)
        assert os.lstat(target / "rootfs" / "hard").st_ino == st.st_ino
        assert os.getxattr(target / "rootfs" / "owned", "user.pincus") == b"yes"
        if skip:
            assert not (target / "rootfs" / "null").exists()
        else:
            dev = os.lstat(target / "rootfs" / "null")
            assert stat.S_ISCHR(dev.st_mode) and os.major(dev.st_rdev) == 1 and os.minor(dev.st_rdev) == 3
    from pincus.errors import InvalidError

    with pytest.raises(InvalidError, match="not empty"):
        images.unpack(fp, tmp_path / "tTrue", True)


def test_unpack_walk_never_writes_through_a_symlink(tmp_path: Path) -> None:
    """The extraction's own guard, without the member policy in front of it: a file under a
    symlinked directory is refused by the O_NOFOLLOW walk and nothing lands outside."""
    from pincus.errors import InvalidError
    from pincus.host import image_archive

    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    image = imagelib.tarball(
        tmp_path / "x.tar.gz",
        [
            imagelib.member("rootfs/escape", tarfile.SYMTYPE, link=str(outside)),
            imagelib.member("rootfs/escape/evil", data=b"x"),
        ],
    )

    class NoPolicy(image_archive._Checker):
        def _check_parents(self, member: tarfile.TarInfo, full: str) -> None:
            pass

    original = image_archive._Checker
    image_archive._Checker = NoPolicy  # type: ignore[misc]
    try:
        with pytest.raises(InvalidError, match="not a directory"):
            image_archive.extract_tar(image, target, image_archive.Limits(), True)
    finally:
        image_archive._Checker = original  # type: ignore[misc]
    assert list(outside.iterdir()) == []


def test_bomb_and_file_flood_are_refused(tmp_path: Path) -> None:
    from pincus.errors import InvalidError
    from pincus.host import image_archive

    bomb = imagelib.bomb(tmp_path / "bomb.tar.gz", 64 * 1024 * 1024)
    assert bomb.stat().st_size < 1024 * 1024
    with pytest.raises(InvalidError, match=r'"rootfs/zeros": the image unpacks to more than'):
        image_archive.scan_tar(bomb, image_archive.Limits(max_bytes=16 * 1024 * 1024))
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(InvalidError, match="more than 100 files"):
        image_archive.extract_tar(imagelib.busybox_image(), target, image_archive.Limits(max_files=100), True)


def test_daemon_refuses_a_bomb_past_its_configured_limit(daemon: Daemon, tmp_path: Path) -> None:
    daemon.stop()
    os.environ["PINCUS_IMAGE_MAX_BYTES"] = str(16 * 1024 * 1024)
    try:
        daemon.start()
    finally:
        del os.environ["PINCUS_IMAGE_MAX_BYTES"]
    error = daemon.fails("image", "import", str(imagelib.bomb(tmp_path / "bomb.tar.gz", 64 * 1024 * 1024)))
    assert "unpacks to more than 16777216 bytes" in error
    assert _store(daemon) == []


def test_launch_checks_refuse_another_architecture_or_a_vm_image(tmp_path: Path) -> None:
    from pincus.errors import InvalidError
    from pincus.server.images import Images

    images = _server_images(tmp_path)
    assert isinstance(images, Images)
    arm = imagelib.tarball(
        tmp_path / "arm.tar.gz", [], metadata=b"architecture: aarch64\ncreation_date: 1700000000\n"
    )
    fp = _add(images, arm)  # imported, as Incus does: only launching it is refused
    rec = images.resolve({"type": "image", "fingerprint": fp})
    with pytest.raises(InvalidError, match='architecture "aarch64"'):
        images.check_usable(rec, "container")
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(InvalidError, match='architecture "aarch64"'):
        images.unpack(fp, target, True)
    assert list(target.iterdir()) == []
    busybox = images.resolve({"type": "image", "fingerprint": _add(images, imagelib.busybox_image())})
    with pytest.raises(InvalidError, match="is a container image and cannot make a virtual-machine"):
        images.check_usable(busybox, "virtual-machine")
    with pytest.raises(InvalidError, match="Remote image servers"):
        images.resolve({"type": "image", "alias": "x", "server": "https://images.linuxcontainers.org"})
    with pytest.raises(Exception, match='alias "nope" not found'):
        images.resolve({"type": "image", "alias": "nope"})


def test_import_and_export_show_progress_only_on_a_terminal(daemon: Daemon, tmp_path: Path) -> None:
    import pty
    import subprocess

    from tests.pincus_testlib import BIN

    def run(*args: str) -> tuple[str, str]:
        leader, follower = pty.openpty()
        try:
            r = subprocess.run(
                [str(BIN / "pincus"), *args], env=daemon.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=follower, text=True, timeout=120, check=True,
            )  # fmt: skip
            os.close(follower)
            follower = -1
            seen = b""
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the terminal's other end is closed and drained
                    break
                if not chunk:
                    break
                seen += chunk
        finally:
            os.close(leader)
            if follower >= 0:
                os.close(follower)
        return r.stdout, seen.decode(errors="replace")

    out, terminal = run("image", "import", str(imagelib.busybox_image()), "--alias", "p")
    assert out.startswith("Image imported with fingerprint: ")
    assert "Transferring image: 100%" in terminal and "MB/s)" in terminal, terminal
    assert "Transferring" not in daemon.cli("image", "export", "p", str(tmp_path)).stderr  # not a terminal
    _, terminal = run("image", "export", "p", str(tmp_path / "again.tar.xz"))
    assert "Exporting the image: 100%" in terminal, terminal


def test_edit_properties_public_expiry_with_etag(daemon: Daemon) -> None:
    fp = _import(daemon, imagelib.busybox_image(), alias="e")
    status, headers, doc = daemon.api_full("GET", f"/1.0/images/{fp}")
    etag = headers["etag"]
    daemon.cli(
        "image", "edit", "e",
        stdin="properties:\n  os: edited\npublic: true\nexpires_at: '2030-01-02T03:04:05Z'\n",
    )  # fmt: skip
    _, image = daemon.api("GET", f"/1.0/images/{fp}")
    assert image["metadata"]["properties"] == {"os": "edited"}
    assert image["metadata"]["public"] is True
    assert image["metadata"]["expires_at"].startswith("2030-01-02T03:04:05")
    status, _, doc = daemon.api_full("PATCH", f"/1.0/images/{fp}", {"public": False}, {"If-Match": etag})
    assert status == 412, doc
    status, doc = daemon.api("PATCH", f"/1.0/images/{fp[:12]}", {"properties": {"release": "1"}})
    assert status == 200, doc
    _, image = daemon.api("GET", f"/1.0/images/{fp}")
    assert image["metadata"]["properties"] == {"os": "edited", "release": "1"} and image["metadata"]["public"]
    status, doc = daemon.api("PATCH", f"/1.0/images/{fp}", {"expires_at": "soon"})
    assert status == 400 and "expires_at" in doc["error"]
    info = daemon.cli("image", "info", "e").stdout
    assert "Public: yes" in info and "    release: 1" in info and "Expires: never" not in info


def test_an_interrupted_upload_is_removed_when_the_daemon_starts(daemon: Daemon) -> None:
    leftover = daemon.dir / "images" / ".upload-0123456789abcdef"
    leftover.write_bytes(b"half an image")
    daemon.stop()
    daemon.start()
    assert _store(daemon) == []


def test_upload_limits_too_large_or_stalled_leave_nothing(daemon: Daemon) -> None:
    daemon.stop()
    os.environ.update(PINCUS_IMAGE_MAX_UPLOAD=str(256 * 1024), PINCUS_IMAGE_UPLOAD_IDLE="1")
    try:
        daemon.start()
    finally:
        del os.environ["PINCUS_IMAGE_MAX_UPLOAD"], os.environ["PINCUS_IMAGE_UPLOAD_IDLE"]
    body = imagelib.busybox_image().read_bytes()  # 860 KiB: over the 256 KiB cap
    refused = _raw_upload(daemon, body, {})
    assert refused["error_code"] == 413 and "too large" in str(refused["error"]), refused
    refused = _raw_upload(daemon, body, {}, chunked=True)  # no length up front: cut off on the way
    assert refused["error_code"] == 413, refused
    assert _store(daemon) == []

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(daemon.dir / "unix.socket"))
        s.sendall(b"POST /1.0/images HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + body[:1000])
        s.settimeout(30)
        answer = s.recv(65536)  # the client stays silent: pincusd gives up after a second
    assert b" 408 " in answer.split(b"\r\n")[0], answer
    assert _store(daemon) == []
