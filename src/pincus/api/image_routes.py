"""/1.0/images and /1.0/images/aliases, in Incus's shapes.

An upload's body is streamed into the image store while the request is read (the connection
must stay with us until then); checking and publishing it run as the background operation that
answers, whose metadata carries the fingerprint.
"""

from __future__ import annotations

import os
from typing import Any

from pincus.api.http import Async, BodyLimits, BodyReader, Raw, Request, Router, Tagged
from pincus.api.instance_routes import body_of
from pincus.errors import InvalidError
from pincus.host import image_archive
from pincus.server import etag
from pincus.server.images import alias_fields, image_fields
from pincus.server.server import Server

# An upload: far above any real image, still a cap; a client silent for a minute is dropped.
# PINCUS_IMAGE_MAX_UPLOAD (bytes) and PINCUS_IMAGE_UPLOAD_IDLE (seconds) change them.
UPLOAD_LIMITS = BodyLimits(
    max_bytes=int(os.environ.get("PINCUS_IMAGE_MAX_UPLOAD") or 64 * 1024**3),
    idle=float(os.environ.get("PINCUS_IMAGE_UPLOAD_IDLE") or 60.0),
)
EXPORT_CHUNK = 1024 * 1024
HEADER_PREFIXES = ("x-incus-", "x-lxd-")


def _upload_headers(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in req.handler.headers.items():
        low = key.lower()
        for prefix in HEADER_PREFIXES:
            if low.startswith(prefix):
                name = low.removeprefix(prefix)
                # X-Incus-properties may come more than once: each is a query string.
                out[name] = f"{out[name]}&{value}" if name == "properties" and name in out else value
    return out


def add(r: Router, server: Server) -> None:
    images = server.images

    def background(description: str, fp: str, work: Any) -> Async:
        resources = {"images": [f"/1.0/images/{fp}"]} if fp else {}
        return Async(server.operations.start(description, resources, lambda op: work()).to_api())

    def list_images(req: Request) -> Any:
        if req.query.get("recursion", "0") != "0":
            return images.list_all()
        return [f"/1.0/images/{fp}" for fp in images.fingerprints()]

    def create_image(req: Request) -> Any:
        body = req.body
        assert isinstance(body, BodyReader)
        content_type = req.handler.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() == "application/json":
            raise InvalidError("Only image uploads are supported (no remote or instance sources)")
        upload = images.receive(body, content_type)
        headers = _upload_headers(req)
        try:
            return background("Uploading image", "", lambda: images.add(upload, headers))
        except BaseException:
            images.discard(upload)
            raise

    def get_image(req: Request) -> Tagged:
        doc = images.get(req.params["fingerprint"])
        return Tagged(doc, etag.etag(image_fields(doc)))

    def update_image(req: Request, patch: bool) -> Any:
        images.update(req.params["fingerprint"], body_of(req), patch, req.if_match)
        return {}

    def delete_image(req: Request) -> Async:
        fp = images.find(req.params["fingerprint"]).fingerprint
        return background("Deleting image", fp, lambda: images.delete(fp))

    def export_image(req: Request) -> Raw:
        rec, main, rootfs = images.export_files(req.params["fingerprint"])
        if rootfs is None:
            _send_file(req, server, main, f"{rec.fingerprint}{_extension(server, main)}")
        else:
            _send_split(req, server, rec.fingerprint, main, rootfs, rec.type)
        return Raw()

    # Aliases first: "/1.0/images/aliases" would otherwise read as an image named "aliases".
    def list_aliases(req: Request) -> Any:
        items = images.aliases()
        if req.query.get("recursion", "0") != "0":
            return items
        return [f"/1.0/images/aliases/{a['name']}" for a in items]

    def create_alias(req: Request) -> Any:
        images.create_alias(body_of(req))
        return {}

    def get_alias(req: Request) -> Tagged:
        doc = images.alias(req.params["name"])
        return Tagged(doc, etag.etag(alias_fields(doc)))

    def update_alias(req: Request, patch: bool) -> Any:
        images.update_alias(req.params["name"], body_of(req), patch, req.if_match)
        return {}

    def rename_alias(req: Request) -> Any:
        images.rename_alias(req.params["name"], body_of(req))
        return {}

    def delete_alias(req: Request) -> Any:
        images.delete_alias(req.params["name"])
        return {}

    r.add("GET", "/1.0/images/aliases", list_aliases)
    r.add("POST", "/1.0/images/aliases", create_alias)
    r.add("GET", "/1.0/images/aliases/{name}", get_alias)
    r.add("PUT", "/1.0/images/aliases/{name}", lambda req: update_alias(req, patch=False))
    r.add("PATCH", "/1.0/images/aliases/{name}", lambda req: update_alias(req, patch=True))
    r.add("POST", "/1.0/images/aliases/{name}", rename_alias)
    r.add("DELETE", "/1.0/images/aliases/{name}", delete_alias)

    r.add("GET", "/1.0/images", list_images)
    r.add("POST", "/1.0/images", create_image, stream=UPLOAD_LIMITS)
    r.add("GET", "/1.0/images/{fingerprint}", get_image)
    r.add("PUT", "/1.0/images/{fingerprint}", lambda req: update_image(req, patch=False))
    r.add("PATCH", "/1.0/images/{fingerprint}", lambda req: update_image(req, patch=True))
    r.add("DELETE", "/1.0/images/{fingerprint}", delete_image)
    r.add("GET", "/1.0/images/{fingerprint}/export", export_image)

    def member_copy(req: Request) -> Raw:
        fp = req.params["fingerprint"]
        _send_file(req, server, images.local_file(fp, req.params["part"]), fp)
        return Raw()

    def forget_copy(req: Request) -> Any:
        images.remove_local_files(req.params["fingerprint"])
        return {}

    r.add("GET", "/internal/images/{fingerprint}/{part}", member_copy)
    r.add("DELETE", "/internal/images/{fingerprint}", forget_copy)


_EXTENSIONS = {
    "gzip": ".tar.gz",
    "xz": ".tar.xz",
    "zstd": ".tar.zst",
    "bzip2": ".tar.bz2",
    "tar": ".tar",
    "squashfs": ".squashfs",
    "qcow2": ".qcow2",
}


def _extension(server: Server, path: Any) -> str:
    return _EXTENSIONS.get(server.host(image_archive.detect, path), "")


def _copy(req: Request, server: Server, path: Any) -> None:
    with server.host(image_archive.open_read, path) as f:
        while chunk := f.read(EXPORT_CHUNK):
            req.handler.wfile.write(chunk)


def _size(server: Server, path: Any) -> int:
    return server.host(image_archive.file_size, path)


def _send_file(req: Request, server: Server, path: Any, filename: str) -> None:
    h = req.handler
    h.send_response(200)
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("Content-Disposition", f'attachment; filename="{filename}"')
    h.send_header("Content-Length", str(_size(server, path)))
    h.send_header("Connection", "close")
    h.end_headers()
    _copy(req, server, path)
    h.wfile.flush()


def _send_split(req: Request, server: Server, fp: str, main: Any, rootfs: Any, image_type: str) -> None:
    """A split image as Incus sends it: multipart/form-data with the metadata and rootfs parts."""
    boundary = f"pincus-{fp[:32]}"
    rootfs_name = "rootfs" if image_type == "container" else "rootfs.img"
    heads = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"; '
            f'filename="meta-{fp}{_extension(server, main)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode(),
        (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="{rootfs_name}"; '
            f'filename="{fp}{_extension(server, rootfs)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode(),
    ]
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = sum(map(len, heads)) + len(tail) + _size(server, main) + _size(server, rootfs)
    h = req.handler
    h.send_response(200)
    h.send_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    h.send_header("Content-Length", str(length))
    h.send_header("Connection", "close")
    h.end_headers()
    for head, path in zip(heads, (main, rootfs), strict=True):
        h.wfile.write(head)
        _copy(req, server, path)
    h.wfile.write(tail)
    h.wfile.flush()
