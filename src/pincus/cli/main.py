"""pincus: the command line client. Imports nothing of the server side.

Each command is a new process, so what it imports and builds is its latency: the top-level
commands are a static table, and only the module and parsers of the command given are
loaded and built (`common.add_commands`); `pincus --help` or a typo builds them all. A
command line that `fastparse` can read exactly as argparse would never imports argparse.
"""

from __future__ import annotations

import sys

from pincus.cli.client import Client, ClientError
from pincus.cli.common import add_commands

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.common import Builder, Command


def _info(args: argparse.Namespace, c: Client) -> None:
    if args.name:
        from pincus.cli.instance import info

        info(args, c)
    else:
        from pincus.cli.admin import server_info

        server_info(c)


def _build_info(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name", nargs="?")
    x.set_defaults(func=_info)


def _in(module: str, builder: str) -> Builder:
    """BUILDER of pincus.cli.MODULE, imported only when its command is built."""

    def build(x: argparse.ArgumentParser, words: list[str]) -> None:
        getattr(__import__(f"pincus.cli.{module}", fromlist=[builder]), builder)(x, words)

    return build


COMMANDS: tuple[Command, ...] = (
    ("init", (), "create an instance (stopped)", _in("instance", "build_init")),
    ("launch", (), "create and start an instance", _in("instance", "build_launch")),
    ("start", (), "start instances", _in("instance", "build_start")),
    ("stop", (), "stop instances", _in("instance", "build_stop")),
    ("restart", (), "restart instances", _in("instance", "build_restart")),
    ("delete", ("rm",), "delete instances", _in("instance", "build_delete")),
    (
        "move",
        ("mv",),
        "move a stopped instance to another cluster member, or rename it",
        _in("instance", "build_move"),
    ),
    ("rename", (), "rename an instance", _in("instance", "build_rename")),
    ("list", ("ls",), "list instances with their addresses", _in("instance", "build_list")),
    ("exec", (), "run a command inside an instance", _in("instance", "build_exec")),
    ("console", (), "show an instance's console log", _in("console", "build_console")),
    ("config", (), "manage an instance's config and devices", _in("config", "build_config")),
    ("network", (), "manage networks", _in("network", "build_network")),
    ("profile", (), "manage profiles", _in("profile", "build_profile")),
    ("image", (), "manage images", _in("image", "build_image")),
    ("storage", (), "manage storage pools and volumes", _in("storage", "build_storage")),
    ("monitor", (), "follow the daemon's events", _in("monitor", "build_monitor")),
    ("query", (), "send a raw API request", _in("query", "build_query")),
    ("admin", (), "daemon administration", _in("admin", "build_admin")),
    ("cluster", (), "manage the cluster's members", _in("cluster", "build_cluster")),
    ("version", (), "client and server versions", _in("admin", "build_version")),
    ("info", (), "server info, or an instance's state and NICs", _build_info),
)


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ARGV (default: every command's)."""
    from pincus.cli.argparser import Parser

    p = Parser(prog="pincus", description="Containers and VMs on the networks you have")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub, COMMANDS, argv or [])
    return p


def _parse_slowly(argv: list[str]) -> argparse.Namespace:
    """ARGV through argparse: help, usage errors, and what fastparse leaves to it."""
    p = parser(argv)
    args, extra = p.parse_known_args(argv)
    # KEY=VALUE pairs may follow options, as in `network create x --type=physical parent=eth1`.
    spill = getattr(args, "spill", None)
    if extra and spill and not any(e.startswith("-") for e in extra):
        setattr(args, spill, [*getattr(args, spill), *extra])
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    from pincus.cli.fastparse import parse

    # An argparse.Namespace or fastparse's Args: the commands read only attributes.
    args: Any = parse(COMMANDS, argv) or _parse_slowly(argv)
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
