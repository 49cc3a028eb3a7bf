"""pincus admin ..., pincus version, pincus info (server)"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from pincus import __version__
from pincus.cli.client import Client, ClientError
from pincus.cli.output import dump_yaml


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
    while c.path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def server_info(c: Client) -> None:
    sys.stdout.write(dump_yaml(c.request("GET", "/1.0")))


def _version(args: argparse.Namespace, c: Client) -> None:
    print(f"Client version: {__version__}")
    try:
        env = c.request("GET", "/1.0").get("environment", {})
        print(f"Server version: {env.get('server_version', 'unknown')}")
    except ClientError:
        print("Server version: unreachable")


def register(sub: Any) -> None:
    p = sub.add_parser("admin", help="daemon administration")
    s = p.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    x = s.add_parser("waitready", help="wait until the daemon answers")
    x.add_argument("--timeout", type=float, default=30)
    x.set_defaults(func=_waitready)
    x = s.add_parser("shutdown", help="stop every instance cleanly, then the daemon")
    x.add_argument("--timeout", type=float, default=60)
    x.set_defaults(func=_shutdown)

    x = sub.add_parser("version", help="client and server versions")
    x.set_defaults(func=_version)
