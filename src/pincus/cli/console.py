"""pincus console NAME --show-log: what an instance's console has shown (Incus's console log)."""

from __future__ import annotations

import argparse
import sys

from pincus.cli.client import Client, ClientError, q


def _console(args: argparse.Namespace, c: Client) -> None:
    if not args.show_log:
        raise ClientError(
            "pincus console attaches to nothing yet, only --show-log: "
            f"for a shell, pincus exec {args.name} -t -- sh"
        )
    sys.stdout.buffer.write(c.get_bytes(f"/1.0/instances/{q(args.name)}/console"))
    sys.stdout.flush()


def build_console(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("--show-log", action="store_true", help="print the console log and exit")
    x.set_defaults(func=_console)
