"""The image store: import (from a streamed upload), resolve, unpack, aliases, export, delete.

Files live as Incus keeps them: $PINCUS_DIR/images/<fingerprint> (a unified tarball, or a split
image's metadata tarball) and <fingerprint>.rootfs (a split image's rootfs tarball or squashfs).
An import is checked in full before it is published: every member passes the unpack policy, so
a hostile archive is refused at import and nothing of it stays in the store.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pincus.db import images as db_images
from pincus.db.images import AliasRecord, ImageRecord
from pincus.errors import ConflictError, HostError, InvalidError, NotFoundError
from pincus.host import files, image_archive, image_upload
from pincus.host.facade import Host
from pincus.host.image_archive import Limits
from pincus.host.image_upload import Upload
from pincus.images import metadata as image_metadata
from pincus.images import upload_headers
from pincus.images.names import check_alias, check_fingerprint, is_prefix
from pincus.server import etag
from pincus.state import State

__all__ = ["ImageRecord", "Images"]

log = logging.getLogger(__name__)

CONTAINER, VM = "container", "virtual-machine"


def limits_from_env() -> Limits:
    """PINCUS_IMAGE_MAX_BYTES / PINCUS_IMAGE_MAX_FILES lower (or raise) the unpack caps."""
    default = Limits()
    try:
        return Limits(
            int(os.environ.get("PINCUS_IMAGE_MAX_BYTES") or default.max_bytes),
            int(os.environ.get("PINCUS_IMAGE_MAX_FILES") or default.max_files),
        )
    except ValueError:
        log.warning("Ignoring a non-numeric PINCUS_IMAGE_MAX_BYTES/PINCUS_IMAGE_MAX_FILES")
        return default


def _now() -> str:
    return datetime.now(UTC).isoformat()


def image_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What a PUT of an image replaces (its ETag covers these)."""
    return {k: doc.get(k) for k in ("auto_update", "properties", "public", "expires_at", "profiles")}


class ImageVolumes(Protocol):
    """What the store needs of the storage pools: the unpacked copies of an image go with it."""

    def delete_image_volumes(self, fp: str) -> None: ...

    def forget_image_volumes_here(self, fp: str) -> None: ...


class Images:
    def __init__(
        self, state: State, volumes: ImageVolumes | None = None, limits: Limits | None = None
    ) -> None:
        self.state = state
        self.volumes = volumes
        self.limits = limits or limits_from_env()
        self.lock = threading.Lock()
        # On a cluster member (the server wires them): get an image's files from the member that has
        # them (fingerprint, main file, rootfs file), and tell the others an image is gone.
        self.fetch: Callable[[str, Path, Path], None] | None = None
        self.on_delete: Callable[[str], None] | None = None

    @property
    def host(self) -> Host:
        return self.state.host

    @property
    def dir(self) -> Path:
        return self.state.dir / "images"

    def start(self) -> None:
        """The store's directory, without what an interrupted upload or delete left."""
        self.host(files.ensure_dir, self.dir)
        self.host(image_upload.remove, self.host(image_upload.leftovers, self.dir))
        known = set(self.fingerprints())
        for name in self.host(image_archive.list_dir, self.dir, _is_image_file):
            if name.removesuffix(".rootfs") not in known:
                self.host(files.remove, self.dir / name)

    # --- reading ---------------------------------------------------------------------------------

    def find(self, name: str) -> ImageRecord:
        """The image with fingerprint (or unique fingerprint prefix) NAME."""
        if not is_prefix(name):
            raise NotFoundError(f'Image "{name}" not found')
        matches = db_images.by_prefix(self.state.store, name)
        if not matches:
            raise NotFoundError(f'Image "{name}" not found')
        if len(matches) > 1:
            raise InvalidError(f'More than one image matches "{name}": give more of the fingerprint')
        rec = db_images.get(self.state.store, matches[0])
        if rec is None:
            raise NotFoundError(f'Image "{name}" not found')
        return rec

    def resolve(self, source: dict[str, Any]) -> ImageRecord:
        """An instance's "source" {"type": "image", "alias": A} or {..., "fingerprint": F}."""
        if source.get("type") != "image":
            raise InvalidError(f'Source type "{source.get("type")}" is not an image')
        if source.get("server") or source.get("protocol") not in (None, "", "incus", "lxd"):
            raise InvalidError("Remote image servers are not supported: import the image first")
        alias, fp = source.get("alias"), source.get("fingerprint")
        if isinstance(alias, str) and alias:
            a = db_images.alias(self.state.store, alias)
            if a is None:
                raise NotFoundError(f'Image alias "{alias}" not found')
            return self.find(a.fingerprint)
        if isinstance(fp, str) and fp:
            return self.find(fp)
        raise InvalidError('An image source needs an "alias" or a "fingerprint"')

    @staticmethod
    def check_usable(rec: ImageRecord, instance_type: str) -> None:
        """Refuse, at launch, an image this host cannot run as INSTANCE_TYPE ("container" or
        "virtual-machine"): another architecture, or the other kind of image."""
        if rec.architecture not in image_metadata.HOST_ARCHITECTURES:
            raise InvalidError(
                f'Image "{rec.fingerprint[:12]}" is for architecture "{rec.architecture}", '
                f"this host runs {', '.join(sorted(image_metadata.HOST_ARCHITECTURES))}"
            )
        if rec.type != instance_type:
            raise InvalidError(
                f'Image "{rec.fingerprint[:12]}" is a {rec.type} image and cannot make a {instance_type}'
            )

    def to_api(self, rec: ImageRecord) -> dict[str, Any]:
        return {
            "fingerprint": rec.fingerprint,
            "filename": rec.filename,
            "size": rec.size,
            "type": rec.type,
            "architecture": rec.architecture,
            "public": rec.public,
            "auto_update": rec.auto_update,
            "cached": False,
            "properties": rec.properties,
            "aliases": [{"name": a, "description": rec.alias_descriptions.get(a, "")} for a in rec.aliases],
            "profiles": ["default"],
            "created_at": rec.created_at,
            "expires_at": rec.expires_at or "0001-01-01T00:00:00Z",
            "last_used_at": rec.last_used_at or "0001-01-01T00:00:00Z",
            "uploaded_at": rec.uploaded_at,
            "update_source": None,
            "project": "default",
        }

    def get(self, name: str) -> dict[str, Any]:
        return self.to_api(self.find(name))

    def list_all(self) -> list[dict[str, Any]]:
        return [self.to_api(r) for r in db_images.list_all(self.state.store)]

    def fingerprints(self) -> list[str]:
        return [r.fingerprint for r in db_images.list_all(self.state.store)]

    def files(self, rec: ImageRecord) -> tuple[Path, Path | None]:
        """The image's file, and its rootfs file when it is a split image."""
        main = self.dir / check_fingerprint(rec.fingerprint)
        rootfs = self.dir / f"{rec.fingerprint}.rootfs"
        return main, rootfs if self.host(image_archive.exists, rootfs) else None

    # --- import ----------------------------------------------------------------------------------

    def receive(self, body: image_upload.Body, content_type: str) -> Upload:
        """The request body into the store's directory (not yet published), as Incus clients send it."""
        self.host(files.ensure_dir, self.dir)
        if content_type.split(";")[0].strip().lower() == "multipart/form-data":
            boundary = upload_headers.boundary_of(content_type)
            return self.host(image_upload.receive_multipart, body, boundary, self.dir)
        return self.host(image_upload.receive_raw, body, self.dir)

    def discard(self, upload: Upload) -> None:
        self.host(image_upload.remove, [p.path for p in upload.parts])

    def add(self, upload: Upload, headers: dict[str, str]) -> dict[str, Any]:
        """Check an upload, publish its files and record it. HEADERS: X-Incus-*/X-LXD-* (lower-case
        names without the prefix: fingerprint, properties, public, aliases, filename)."""
        try:
            return self._add(upload, headers)
        finally:
            # Published files were renamed away; whatever is left is an upload to drop.
            self.discard(upload)

    def _add(self, upload: Upload, headers: dict[str, str]) -> dict[str, Any]:
        fp = upload.sha256
        expected = headers.get("fingerprint", "")
        if expected and expected != fp:
            raise InvalidError(f"Fingerprints don't match, got {fp} expected {expected}")
        if len(upload.parts) == 1 and not upload.parts[0].name:
            meta_file, rootfs_file, image_type = upload.parts[0].path, None, ""
            filename = headers.get("filename", "")
        else:
            names = [p.name for p in upload.parts]
            if len(names) != 2 or names[0] != "metadata" or names[1] not in ("rootfs", "rootfs.img"):
                raise InvalidError(
                    "Invalid multipart image: expected a metadata part, then rootfs or rootfs.img"
                )
            meta_file, rootfs_file = upload.parts[0].path, upload.parts[1].path
            image_type = CONTAINER if names[1] == "rootfs" else VM
            filename = upload.parts[1].filename
        meta, image_type = self._check(meta_file, rootfs_file, image_type)
        properties = dict(meta.properties)
        properties.update(upload_headers.properties(headers.get("properties", "")))
        aliases = upload_headers.aliases(headers.get("aliases", ""))
        for a in aliases:
            check_alias(a)
        rec = ImageRecord(
            fingerprint=fp,
            type=image_type,
            architecture=meta.architecture,
            filename=filename,
            size=upload.size,
            properties=properties,
            aliases=aliases,
            created_at=meta.created_at,
            uploaded_at=_now(),
            public=upload_headers.is_true(headers.get("public", "")),
            expires_at=(
                datetime.fromtimestamp(meta.expiry_date, UTC).isoformat() if meta.expiry_date else ""
            ),
        )
        with self.lock:
            if db_images.get(self.state.store, fp) is not None:
                raise ConflictError(f'Image with same fingerprint already exists ("{fp}")')
            for a in aliases:
                if db_images.alias(self.state.store, a) is not None:
                    raise ConflictError(f'Alias "{a}" already exists')
            if rootfs_file is not None:
                self.host(image_archive.publish, rootfs_file, self.dir / f"{fp}.rootfs")
            self.host(image_archive.publish, meta_file, self.dir / fp)
            try:
                db_images.create(self.state.store, rec)
            except BaseException:
                self._remove_files(fp)
                raise
        log.info("Imported image %s", fp, extra={"ctx": {"fingerprint": fp}})
        self.state.events.lifecycle("image-created", f"/1.0/images/{fp}")
        return {"fingerprint": fp, "size": upload.size}

    def _check(
        self, meta_file: Path, rootfs_file: Path | None, image_type: str
    ) -> tuple[image_metadata.ImageMetadata, str]:
        """Every member through the unpack policy; the metadata parsed; the image's type."""
        if rootfs_file is None:
            kind = self.host(image_archive.detect, meta_file)
            if kind == "squashfs":
                raise InvalidError(
                    "A squashfs is a split image's rootfs: import it with its metadata tarball"
                )
            scan = self.host(image_archive.scan_tar, meta_file, self.limits)
            meta = image_metadata.parse(scan.metadata)
            # A unified VM image holds rootfs.img where a container image has rootfs/.
            return meta, VM if scan.has_rootfs_img and not scan.has_rootfs else CONTAINER
        scan = self.host(image_archive.scan_tar, meta_file, self.limits)
        meta = image_metadata.parse(scan.metadata)
        if scan.has_rootfs:
            raise InvalidError("The metadata tarball of a split image holds a rootfs/")
        if image_type == CONTAINER:
            kind = self.host(image_archive.detect, rootfs_file)
            if kind == "squashfs":
                self.host(image_archive.scan_squashfs, rootfs_file, self.limits)
            else:
                self.host(image_archive.scan_tar, rootfs_file, self.limits, True)
        return meta, image_type

    # --- unpack ----------------------------------------------------------------------------------

    def unpack(self, fingerprint: str, target: Path, skip_devices: bool) -> None:
        """TARGET (an existing empty directory) gets metadata.yaml, rootfs/ and templates/.

        Owners are kept as the archive has them; device nodes are left out when SKIP_DEVICES.
        A hostile archive raises InvalidError; the caller removes TARGET on any failure.
        """
        rec = self.find(fingerprint)
        self.check_usable(rec, CONTAINER)
        main, rootfs = self.files(rec)
        if self.fetch is not None and not self.host(image_archive.exists, main):
            # A cluster member: the image was imported on another one.
            self.host(files.ensure_dir, self.dir)
            self.fetch(rec.fingerprint, main, self.dir / f"{rec.fingerprint}.rootfs")
            main, rootfs = self.files(rec)
        if self.host(image_archive.list_dir, target, lambda n: True):
            raise InvalidError(f"{target} is not empty: an image unpacks into an empty directory")
        if rootfs is None:
            self.host(image_archive.extract_tar, main, target, self.limits, skip_devices)
        else:
            self.host(image_archive.extract_tar, main, target, self.limits, skip_devices)
            if self.host(image_archive.detect, rootfs) == "squashfs":
                self.host(image_archive.extract_squashfs, rootfs, target, self.limits, skip_devices)
            else:
                self.host(image_archive.extract_tar, rootfs, target, self.limits, skip_devices, True)
        self.host(files.ensure_dir, target / "rootfs", 0o755)
        self.host(files.ensure_dir, target / "templates", 0o755)

    # --- changes ---------------------------------------------------------------------------------

    def update(self, name: str, body: dict[str, Any], patch: bool, if_match: str | None) -> None:
        with self.lock:
            rec = self.find(name)
            doc = self.to_api(rec)
            etag.check_if_match(if_match, image_fields(doc))
            props = body.get("properties") or {}
            if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
                raise InvalidError('"properties" must be a map of strings')
            # PATCH merges key by key, as Incus; PUT replaces.
            properties = {**rec.properties, **props} if patch else dict(props)
            public = _bool(body, "public", rec.public if patch else False)
            auto_update = _bool(body, "auto_update", rec.auto_update if patch else False)
            expires = body.get("expires_at", rec.expires_at if patch else "")
            if not isinstance(expires, str):
                raise InvalidError('"expires_at" must be a date')
            if expires.startswith("0001-01-01"):
                expires = ""  # Go's zero time: never
            elif expires:
                try:
                    datetime.fromisoformat(expires.replace("Z", "+00:00"))
                except ValueError:
                    raise InvalidError(f'Invalid "expires_at" date "{expires}"') from None
            db_images.update(
                self.state.store,
                rec.fingerprint,
                public,
                auto_update,
                {str(k): str(v) for k, v in properties.items()},
                expires,
            )
        self.state.events.lifecycle("image-updated", f"/1.0/images/{rec.fingerprint}")

    def delete(self, name: str) -> None:
        """As Incus: the image's volume on every pool first (an instance made from it keeps its
        own copy or snapshot), then the record, then the files. A failure on a pool leaves the
        image in place, so the delete can be tried again; once the record is gone, files that
        fail to go are left to the next daemon start (start())."""
        with self.lock:
            rec = self.find(name)
            if self.volumes is not None:
                self.volumes.delete_image_volumes(rec.fingerprint)
            db_images.delete(self.state.store, rec.fingerprint)
            try:
                self._remove_files(rec.fingerprint)
            except (HostError, OSError) as e:
                log.warning("Image %s: its files stay until the next daemon start: %s", rec.fingerprint, e)
        if self.on_delete is not None:
            self.on_delete(rec.fingerprint)
        log.info("Deleted image %s", rec.fingerprint, extra={"ctx": {"fingerprint": rec.fingerprint}})
        self.state.events.lifecycle("image-deleted", f"/1.0/images/{rec.fingerprint}")

    def _remove_files(self, fp: str) -> None:
        check_fingerprint(fp)
        self.host(files.remove, self.dir / f"{fp}.rootfs")
        self.host(files.remove, self.dir / fp)

    def local_file(self, fp: str, part: str) -> Path:
        """This member's copy of image FP's PART ("main" or "rootfs"), for another member."""
        main, rootfs = self.files(self.find(fp))
        path = main if part == "main" else rootfs if part == "rootfs" else None
        if path is None or not self.host(image_archive.exists, path):
            raise NotFoundError(f'Image "{fp}" has no {part} file on this member')
        return path

    def remove_local_files(self, fp: str) -> None:
        """Another member deleted image FP: this member's copy of its files goes too."""
        if self.fetch is None:
            raise ConflictError(f'Image "{fp}": this server is not clustered (image delete removes an image)')
        if self.volumes is not None:
            self.volumes.forget_image_volumes_here(fp)
        self._remove_files(fp)

    def export_files(self, name: str) -> tuple[ImageRecord, Path, Path | None]:
        rec = self.find(name)
        main, rootfs = self.files(rec)
        return rec, main, rootfs

    # --- aliases ---------------------------------------------------------------------------------

    @staticmethod
    def alias_to_api(a: AliasRecord) -> dict[str, Any]:
        return {"name": a.name, "description": a.description, "target": a.fingerprint, "type": a.type}

    def aliases(self) -> list[dict[str, Any]]:
        return [self.alias_to_api(a) for a in db_images.aliases(self.state.store)]

    def alias(self, name: str) -> dict[str, Any]:
        a = db_images.alias(self.state.store, name)
        if a is None:
            raise NotFoundError(f'Image alias "{name}" not found')
        return self.alias_to_api(a)

    def create_alias(self, body: dict[str, Any]) -> None:
        name = check_alias(body.get("name"))
        description = _text(body, "description")
        target = body.get("target")
        if not isinstance(target, str) or not target:
            raise InvalidError('An alias needs a "target" fingerprint')
        with self.lock:
            rec = self.find(target)
            if db_images.alias(self.state.store, name) is not None:
                raise ConflictError(f'Alias "{name}" already exists')
            db_images.put_alias(self.state.store, name, rec.fingerprint, description)
        self.state.events.lifecycle("image-alias-created", f"/1.0/images/aliases/{name}")

    def update_alias(self, name: str, body: dict[str, Any], patch: bool, if_match: str | None) -> None:
        with self.lock:
            old = self.alias(name)
            etag.check_if_match(if_match, alias_fields(old))
            target = body.get("target", old["target"] if patch else None)
            if not isinstance(target, str) or not target:
                raise InvalidError(f'Alias "{name}" needs a "target" fingerprint')
            description = _text(body, "description", old["description"] if patch else "")
            rec = self.find(target)
            db_images.put_alias(self.state.store, name, rec.fingerprint, description)
        self.state.events.lifecycle("image-alias-updated", f"/1.0/images/aliases/{name}")

    def rename_alias(self, name: str, body: dict[str, Any]) -> None:
        new_name = check_alias(body.get("name"))
        with self.lock:
            self.alias(name)
            if db_images.alias(self.state.store, new_name) is not None:
                raise ConflictError(f'Alias "{new_name}" already exists')
            db_images.rename_alias(self.state.store, name, new_name)
        self.state.events.lifecycle("image-alias-renamed", f"/1.0/images/aliases/{new_name}", old_name=name)

    def delete_alias(self, name: str) -> None:
        with self.lock:
            self.alias(name)
            db_images.delete_alias(self.state.store, name)
        self.state.events.lifecycle("image-alias-deleted", f"/1.0/images/aliases/{name}")


def _is_image_file(name: str) -> bool:
    """An image's file in the store: its fingerprint, or its fingerprint and ".rootfs"."""
    try:
        check_fingerprint(name.removesuffix(".rootfs"))
    except InvalidError:
        return False
    return True


def alias_fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("description", "target")}


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise InvalidError(f'"{key}" must be true or false')
    return value


def _text(body: dict[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidError(f'"{key}" must be a string')
    return value
