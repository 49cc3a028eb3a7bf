"""pincus image ... and pincus image alias ...: Incus's commands and output shapes."""

from __future__ import annotations

import sys
import time

from pincus.cli.client import Client, ClientError, q
from pincus.cli.common import add_format, edit_yaml, subcommands
from pincus.cli.output import dump_yaml, render

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from typing import Any

    from pincus.cli.common import Command

CHUNK = 1024 * 1024
DATE_LAYOUT = "%Y/%m/%d %H:%M %Z"  # Incus's dateLayout "2006/01/02 15:04 MST"


class _Progress:
    """`Transferring image: 45% (12.34MB/s)` on stderr, only when it is a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.shown = 0.0
        self.on = sys.stderr.isatty()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if not self.on or (now - self.shown < 0.1 and self.done != self.total):
            return
        self.shown = now
        rate = self.done / max(now - self.start, 1e-6) / 1e6
        pct = f"{self.done * 100 // self.total}%" if self.total else f"{self.done / 1e6:.2f}MB"
        sys.stderr.write(f"\r{self.label}: {pct} ({rate:.2f}MB/s)\033[K")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.on:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _file_size(path: str) -> int:
    import os  # only the commands that use it pay for it

    try:
        return os.stat(path).st_size
    except OSError as e:
        raise ClientError(f"Cannot read {path}: {e.strerror}") from None


def _chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _upload(c: Client, pieces: list[bytes | str], content_type: str, headers: dict[str, str]) -> Any:
    """POST /1.0/images with a body made of PIECES (bytes as they are, str: a file's content)."""
    total = sum(len(p) if isinstance(p, bytes) else _file_size(p) for p in pieces)
    progress = _Progress("Transferring image", total)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST /1.0/images HTTP/1.1\r\nHost: pincus\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {total}\r\n{extra}Connection: close\r\n\r\n"
    )
    sock = c.connect()
    try:
        sock.sendall(head.encode())
        try:
            for piece in pieces:
                for chunk in [piece] if isinstance(piece, bytes) else _chunks(piece):
                    sock.sendall(chunk)
                    progress.add(len(chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # pincusd refused the upload early: its answer says why
        from pincus.cli.client import _reader

        f = _reader(sock)
        _, response_headers = c.read_head(f)
        metadata = c.decode(f.read(int(response_headers.get("content-length", "0"))))
    finally:
        progress.clear()
        sock.close()
    location = response_headers.get("location", "")
    if location.startswith("/1.0/operations/"):
        return c.wait(location)
    return metadata


def _import(args: argparse.Namespace, c: Client) -> None:
    import os  # only the commands that use it pay for it

    headers: dict[str, str] = {}
    if args.public:
        headers["X-Incus-public"] = "true"
    if args.rootfs is None:
        pieces: list[bytes | str] = [args.file]
        content_type = "application/octet-stream"
        headers["X-Incus-filename"] = os.path.basename(args.file)
    else:
        boundary = f"pincus-{os.urandom(12).hex()}"
        rootfs_name = "rootfs.img" if args.rootfs.endswith((".img", ".qcow2")) else "rootfs"

        def part(name: str, path: str, first: bool) -> bytes:
            lead = "" if first else "\r\n"
            return (
                f'{lead}--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{os.path.basename(path)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()

        pieces = [
            part("metadata", args.file, True),
            args.file,
            part(rootfs_name, args.rootfs, False),
            args.rootfs,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
        content_type = f"multipart/form-data; boundary={boundary}"
    for p in (args.file, args.rootfs):
        if p is not None and not os.path.isfile(p):
            raise ClientError(f"{p} is not a file")
    result = _upload(c, pieces, content_type, headers)
    fp = str(result.get("fingerprint", ""))
    for alias in args.alias:
        c.request("POST", "/1.0/images/aliases", {"name": alias, "target": fp, "description": ""})
    print(f"Image imported with fingerprint: {fp}")


def resolve(c: Client, name: str) -> str:
    """An alias's target, else NAME as a fingerprint (prefix), as Incus dereferences an image."""
    code, _, doc = c.raw_request("GET", f"/1.0/images/aliases/{q(name)}")
    if code == 200 and isinstance(doc.get("metadata"), dict):
        return str(doc["metadata"].get("target", name))
    return name


def _image(c: Client, name: str) -> dict[str, Any]:
    image: dict[str, Any] = c.request("GET", f"/1.0/images/{q(resolve(c, name))}")
    return image


def _date(text: str) -> str:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone().strftime(DATE_LAYOUT)
    except ValueError:
        return text


def _never(text: str) -> bool:
    return not text or text.startswith("0001-01-01")


def _list(args: argparse.Namespace, c: Client) -> None:
    images: list[dict[str, Any]] = c.request("GET", "/1.0/images?recursion=1")
    if args.filter:
        images = [
            i
            for i in images
            if any(
                f in i["fingerprint"] or any(f in a["name"] for a in i.get("aliases") or [])
                for f in args.filter
            )
        ]
    rows = []
    for i in images:
        names = [a["name"] for a in i.get("aliases") or []]
        alias = min(names, key=len) if names else ""
        if len(names) > 1:
            alias = f"{alias} ({len(names) - 1} more)"
        rows.append(
            [
                alias,
                i["fingerprint"][:12],
                "yes" if i.get("public") else "no",
                (i.get("properties") or {}).get("description", ""),
                i.get("architecture", ""),
                (i.get("type") or "container").upper(),
                f"{i.get('size', 0) / 1024 / 1024:.2f}MiB",
                _date(i.get("uploaded_at", "")),
            ]
        )
    headers = ["ALIAS", "FINGERPRINT", "PUBLIC", "DESCRIPTION", "ARCHITECTURE", "TYPE", "SIZE", "UPLOAD DATE"]
    render(args.format, headers, rows, images)


def _show(args: argparse.Namespace, c: Client) -> None:
    sys.stdout.write(dump_yaml(_image(c, args.image)))


def info_text(i: dict[str, Any]) -> str:
    lines = [
        f"Fingerprint: {i['fingerprint']}",
        f"Size: {i.get('size', 0) / 1024 / 1024:.2f}MiB",
        f"Architecture: {i.get('architecture', '')}",
        f"Type: {i.get('type') or 'container'}",
        f"Public: {'yes' if i.get('public') else 'no'}",
        "Timestamps:",
    ]
    if not _never(i.get("created_at", "")):
        lines.append(f"    Created: {_date(i['created_at'])}")
    lines.append(f"    Uploaded: {_date(i.get('uploaded_at', ''))}")
    expires, used = i.get("expires_at", ""), i.get("last_used_at", "")
    lines.append(f"    Expires: {'never' if _never(expires) else _date(expires)}")
    lines.append(f"    Last used: {'never' if _never(used) else _date(used)}")
    lines.append("Properties:")
    lines += [f"    {k}: {v}" for k, v in (i.get("properties") or {}).items()]
    lines.append("Aliases:")
    for a in i.get("aliases") or []:
        lines.append(
            f"    - {a['name']} ({a['description']})" if a.get("description") else f"    - {a['name']}"
        )
    lines.append(f"Cached: {'yes' if i.get('cached') else 'no'}")
    lines.append(f"Auto update: {'enabled' if i.get('auto_update') else 'disabled'}")
    profiles = i.get("profiles") or []
    lines += ["Profiles:", *(f"    - {p}" for p in profiles)] if profiles else ["Profiles: []"]
    return "\n".join(lines)


def _info(args: argparse.Namespace, c: Client) -> None:
    print(info_text(_image(c, args.image)))


def _delete(args: argparse.Namespace, c: Client) -> None:
    for name in args.images:
        c.request("DELETE", f"/1.0/images/{q(resolve(c, name))}")


def _edit(args: argparse.Namespace, c: Client) -> None:
    fp = resolve(c, args.image)
    image, headers = c.request_with_headers("GET", f"/1.0/images/{q(fp)}")
    keys = ("auto_update", "properties", "public", "expires_at", "profiles")
    doc = edit_yaml({k: image.get(k) for k in keys})
    body = {k: doc[k] for k in keys if k in doc}
    if isinstance(body.get("properties"), dict):
        body["properties"] = {str(k): str(v) for k, v in body["properties"].items()}
    c.request("PUT", f"/1.0/images/{q(image['fingerprint'])}", body, if_match=headers.get("etag"))


def _export(args: argparse.Namespace, c: Client) -> None:
    import os  # only the commands that use it pay for it

    fp = str(_image(c, args.image)["fingerprint"])
    target = args.target or "."
    sock = c.connect()
    try:
        c.send(sock, "GET", f"/1.0/images/{q(fp)}/export", None, "Connection: close\r\n")
        from pincus.cli.client import _reader

        f = _reader(sock)
        code, headers = c.read_head(f)
        length = int(headers.get("content-length", "0"))
        if code != 200:
            c.decode(f.read(length))
            raise ClientError(f"export failed ({code})")
        content_type = headers.get("content-type", "")
        progress = _Progress("Exporting the image", length)
        if content_type.startswith("multipart/form-data"):
            _save_parts(f, content_type, length, target, progress)
        else:
            name = _disposition_name(headers.get("content-disposition", "")) or fp
            path = os.path.join(target, name) if os.path.isdir(target) else target
            _save(f, path, length, progress)
        progress.clear()
    finally:
        sock.close()
    print("Image exported successfully!")


def _disposition_name(value: str) -> str:
    import re

    m = re.search(r'filename="([^"/]+)"', value)
    return m.group(1) if m and m.group(1) not in (".", "..") else ""


def _save(f: Any, path: str, length: int, progress: _Progress) -> None:
    with open(path, "wb") as out:
        left = length
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                raise ClientError("pincusd closed the connection during the export")
            out.write(chunk)
            left -= len(chunk)
            progress.add(len(chunk))


def _save_parts(f: Any, content_type: str, length: int, target: str, progress: _Progress) -> None:
    """A split image's multipart export, streamed: each part to TARGET/<its file name>."""
    import os  # only the commands that use it pay for it
    import re

    m = re.search(r"boundary=([^;]+)", content_type)
    if m is None:
        raise ClientError("pincusd sent a multipart export without a boundary")
    delimiter = b"\r\n--" + m.group(1).strip('"').encode()
    left = length

    def more() -> bytes:
        nonlocal left
        chunk = f.read(min(CHUNK, left)) if left else b""
        left -= len(chunk)
        return chunk

    os.makedirs(target, exist_ok=True)
    buf = b"\r\n"  # the first delimiter has no CRLF before it
    while True:
        while delimiter not in buf and (chunk := more()):
            buf += chunk
        _, sep, buf = buf.partition(delimiter)
        if not sep:
            raise ClientError("pincusd's export ended inside its multipart framing")
        while len(buf) < 2 and (chunk := more()):
            buf += chunk
        if buf.startswith(b"--"):
            return
        while b"\r\n\r\n" not in buf and (chunk := more()):
            buf += chunk
        headers, _, buf = buf[2:].partition(b"\r\n\r\n")
        name = _disposition_name(headers.decode("utf-8", "replace")) or "part"
        with open(os.path.join(target, name), "wb") as out:
            while True:
                i = buf.find(delimiter)
                if i >= 0:
                    out.write(buf[:i])
                    progress.add(i)
                    buf = buf[i:]
                    break
                keep = max(0, len(buf) - len(delimiter) + 1)
                out.write(buf[:keep])
                progress.add(keep)
                buf = buf[keep:]
                chunk = more()
                if not chunk:
                    raise ClientError("pincusd closed the connection during the export")
                buf += chunk


# --- aliases -------------------------------------------------------------------------------------


def _alias_create(args: argparse.Namespace, c: Client) -> None:
    body = {"name": args.alias, "target": resolve(c, args.target), "description": args.description or ""}
    fp = c.request("GET", f"/1.0/images/{q(body['target'])}")["fingerprint"]
    body["target"] = fp
    c.request("POST", "/1.0/images/aliases", body)


def _alias_delete(args: argparse.Namespace, c: Client) -> None:
    c.request("DELETE", f"/1.0/images/aliases/{q(args.alias)}")


def _alias_rename(args: argparse.Namespace, c: Client) -> None:
    c.request("POST", f"/1.0/images/aliases/{q(args.alias)}", {"name": args.new_name})


def _alias_list(args: argparse.Namespace, c: Client) -> None:
    aliases: list[dict[str, Any]] = c.request("GET", "/1.0/images/aliases?recursion=1")
    if args.filter:
        aliases = [a for a in aliases if any(f in a["name"] for f in args.filter)]
    rows = [
        [a["name"], a["target"][:12], (a.get("type") or "container").upper(), a.get("description", "")]
        for a in aliases
    ]
    render(args.format, ["ALIAS", "FINGERPRINT", "TYPE", "DESCRIPTION"], rows, aliases)


def _build_alias(p: argparse.ArgumentParser, words: list[str]) -> None:
    def create(x: argparse.ArgumentParser, w: list[str]) -> None:
        x.add_argument("alias")
        x.add_argument("target", metavar="FINGERPRINT")
        x.add_argument("--description", default="")
        x.set_defaults(func=_alias_create)

    def delete(x: argparse.ArgumentParser, w: list[str]) -> None:
        x.add_argument("alias")
        x.set_defaults(func=_alias_delete)

    def rename(x: argparse.ArgumentParser, w: list[str]) -> None:
        x.add_argument("alias")
        x.add_argument("new_name")
        x.set_defaults(func=_alias_rename)

    def list_(x: argparse.ArgumentParser, w: list[str]) -> None:
        x.add_argument("filter", nargs="*")
        add_format(x)
        x.set_defaults(func=_alias_list)

    commands: tuple[Command, ...] = (
        ("create", (), "create an alias", create),
        ("delete", ("rm",), "delete an alias", delete),
        ("list", ("ls",), "list aliases", list_),
        ("rename", ("mv",), "rename an alias", rename),
    )
    subcommands(p, "alias_command", commands, words)


def build_image(p: argparse.ArgumentParser, words: list[str]) -> None:
    def import_(x: argparse.ArgumentParser, w: list[str]) -> None:
        x.add_argument("file", metavar="FILE")
        x.add_argument("rootfs", metavar="ROOTFS", nargs="?")
        x.add_argument("--alias", action="append", default=[], help="alias to give the image (repeatable)")
        x.add_argument("--public", action="store_true")
        x.set_defaults(func=_import)

    def one(func: Any) -> Any:
        def build(x: argparse.ArgumentParser, w: list[str]) -> None:
            x.add_argument("image", metavar="IMAGE")
            x.set_defaults(func=func)

        return build

    def list_(x: argparse.ArgumentParser, w: list[str]) -> None:
        x.add_argument("filter", nargs="*")
        add_format(x)
        x.set_defaults(func=_list)

    def delete(x: argparse.ArgumentParser, w: list[str]) -> None:
        x.add_argument("images", metavar="IMAGE", nargs="+")
        x.set_defaults(func=_delete)

    def export(x: argparse.ArgumentParser, w: list[str]) -> None:
        x.add_argument("image", metavar="IMAGE")
        x.add_argument("target", metavar="TARGET", nargs="?")
        x.set_defaults(func=_export)

    commands: tuple[Command, ...] = (
        ("import", (), "import an image file (unified, or split with ROOTFS)", import_),
        ("list", ("ls",), "list images", list_),
        ("show", (), "an image as YAML", one(_show)),
        ("info", (), "an image's details", one(_info)),
        ("edit", (), "edit an image's properties", one(_edit)),
        ("delete", ("rm",), "delete images", delete),
        ("export", (), "write an image's files to TARGET", export),
        ("alias", (), "manage image aliases", _build_alias),
    )
    subcommands(p, "image_command", commands, words)
