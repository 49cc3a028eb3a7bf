"""pincus admin ..., pincus version, pincus info (server)"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from pincus import __version__
from pincus.cli.client import ClientError
from pincus.cli.common import subcommands
from pincus.cli.output import dump_yaml

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from pincus.cli.client import Client
    from pincus.cli.common import Command


def _waitready(args: argparse.Namespace, c: Client) -> None:
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            c.request("GET", "/1.0")
            return
        except ClientError as e:
            if time.monotonic() >= deadline:
                raise ClientError(f"pincusd not ready after {args.timeout:g} s: {e}") from None
            time.sleep(0.05)


def _shutdown(args: argparse.Namespace, c: Client) -> None:
    c.request("PUT", f"/internal/shutdown?timeout={args.timeout}")
    deadline = time.monotonic() + args.timeout + 10
    while os.path.exists(c.path) and time.monotonic() < deadline:
        time.sleep(0.05)


def _line(d: dict[str, Any]) -> str:
    line = f"{d['owner']}: {d['kind']} {d['name']}: expected {d['expected']}, found {d['found']}"
    return line if d.get("repairable", True) else f"{line} (not repaired: not pincus's to re-make)"


def _check(args: argparse.Namespace, c: Client) -> None:
    """Exit 0 when the host has what the database says (after --repair: when all was put back)."""
    if args.repair:
        doc = c.request("POST", "/internal/pincus/check", {"repair": True})
        remaining = doc.get("remaining") or []
        lines = [f"Repaired: {_line(d)}" for d in doc.get("repaired") or []]
        lines += [f"Remaining: {_line(d)}" for d in remaining]
    else:
        doc = c.request("GET", "/internal/pincus/check")
        remaining = doc.get("differences") or []
        lines = [_line(d) for d in remaining]
    if args.format == "json":
        print(json.dumps(doc))
    elif args.format == "yaml":
        sys.stdout.write(dump_yaml(doc))
    else:
        print("\n".join(lines) if lines else "No drift found")
    if remaining:
        sys.exit(1)


def server_info(c: Client) -> None:
    sys.stdout.write(dump_yaml(c.request("GET", "/1.0")))


def _version(args: argparse.Namespace, c: Client) -> None:
    print(f"Client version: {__version__}")
    try:
        env = c.request("GET", "/1.0").get("environment", {})
        print(f"Server version: {env.get('server_version', 'unknown')}")
    except ClientError:
        print("Server version: unreachable")


# --- parsers (main.COMMANDS names `admin` and `version`) ----------------------------------------


def _build_waitready(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("--timeout", type=float, default=30)
    x.set_defaults(func=_waitready)


def _build_shutdown(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("--timeout", type=float, default=60)
    x.set_defaults(func=_shutdown)


def _build_check(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("--repair", action="store_true", help="put back what pincus owns and found changed")
    x.add_argument("--format", "-f", default="table", choices=["table", "json", "yaml"], help="output format")
    x.set_defaults(func=_check)


def _init(args: argparse.Namespace, c: Client) -> None:
    from pincus.cli.init import init

    init(args, c)


def _build_init(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("--preseed", action="store_true", help="read Incus-style preseed YAML from stdin")
    x.add_argument(
        "--auto", action="store_true", help="a default storage pool and the default profile's root disk"
    )
    x.add_argument(
        "--storage-backend", default="dir", choices=["dir", "btrfs"], help="driver of the --auto pool"
    )
    x.set_defaults(func=_init)


COMMANDS: tuple[Command, ...] = (
    ("init", (), "set up pools, networks and the default profile (--preseed: YAML on stdin)", _build_init),
    ("waitready", (), "wait until the daemon answers", _build_waitready),
    ("shutdown", (), "stop every instance cleanly, then the daemon", _build_shutdown),
    ("check", (), "compare what pincus owns with the kernel (--repair: put it back)", _build_check),
)


def build_admin(p: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(p, "subcommand", COMMANDS, words)


def build_version(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.set_defaults(func=_version)
