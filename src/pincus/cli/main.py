"""pincus: the command line client. Imports nothing of the server side."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from pincus.cli import admin, config, instance, monitor, network
from pincus.cli.client import Client, ClientError


def _info(args: argparse.Namespace, c: Client) -> None:
    if args.name:
        instance.info(args, c)
    else:
        admin.server_info(c)


class _Parser(argparse.ArgumentParser):
    """Usage errors follow the CLI contract too: `Error: ...` on stderr, exit 1."""

    def error(self, message: str) -> NoReturn:
        print(f"Error: {message}", file=sys.stderr)
        self.print_usage(sys.stderr)
        sys.exit(1)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pincus", description="Containers and VMs on the networks you have")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    instance.register(sub)
    config.register(sub)
    network.register(sub)
    monitor.register(sub)
    admin.register(sub)
    x = sub.add_parser("info", help="server info, or an instance's state and NICs")
    x.add_argument("name", nargs="?")
    x.set_defaults(func=_info)
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args, extra = p.parse_known_args(argv)
    # KEY=VALUE pairs may follow options, as in `network create x --type=physical parent=eth1`.
    spill = getattr(args, "spill", None)
    if extra and spill and not any(e.startswith("-") for e in extra):
        setattr(args, spill, [*getattr(args, spill), *extra])
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args, Client())
    except ClientError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
