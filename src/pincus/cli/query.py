"""pincus query: one raw API request, as `incus query`."""

from __future__ import annotations

import json

from pincus.cli.client import ClientError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.client import Client


def _failed(doc: Any) -> str | None:
    """The error message of an error envelope, else None."""
    if isinstance(doc, dict) and doc.get("type") == "error":
        return str(doc.get("error") or f"request failed ({doc.get('error_code')})")
    return None


def _query(args: argparse.Namespace, c: Client) -> None:
    target = args.path.removeprefix("local:")
    if not target.startswith("/"):
        target = "/" + target
    body = None
    if args.data is not None:
        try:
            body = json.loads(args.data)
        except ValueError as e:
            raise ClientError(f"-d must be JSON: {e}") from None
    _, _, doc = c.raw_request(args.request.upper(), target, body)
    if (error := _failed(doc)) is not None:
        raise ClientError(error)
    if args.wait and isinstance(doc, dict) and doc.get("type") == "async":
        operation = doc.get("operation") or f"/1.0/operations/{(doc.get('metadata') or {}).get('id', '')}"
        _, _, doc = c.raw_request("GET", f"{operation}/wait", None)
        if (error := _failed(doc)) is not None:
            raise ClientError(error)
        op = doc.get("metadata") if isinstance(doc, dict) else None
        if isinstance(op, dict) and op.get("err"):
            raise ClientError(str(op["err"]))
    shown = doc if args.raw else (doc.get("metadata") if isinstance(doc, dict) else doc)
    if shown is not None:
        print(json.dumps(shown, indent="\t"))


def build_query(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("path", metavar="PATH", help="API path, e.g. /1.0/instances?recursion=1")
    x.add_argument("-X", "--request", default="GET", metavar="METHOD", help="HTTP method (default GET)")
    x.add_argument("-d", "--data", metavar="JSON", help="request body")
    x.add_argument("--wait", action="store_true", help="wait for a background operation; print it")
    x.add_argument("--raw", action="store_true", help="print the whole response, not only its metadata")
    x.set_defaults(func=_query)
