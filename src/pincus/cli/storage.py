"""pincus storage list|show|create|delete, pincus storage volume list"""

from __future__ import annotations

import sys

from pincus.cli.client import q
from pincus.cli.common import add_format, key_values, positionals, subcommands
from pincus.cli.output import dump_yaml, render

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.client import Client
    from pincus.cli.common import Command


def _list(args: argparse.Namespace, c: Client) -> None:
    pools: list[dict[str, Any]] = c.request("GET", "/1.0/storage-pools?recursion=1")
    rows = [
        [
            p["name"],
            p.get("driver", ""),
            p.get("description", ""),
            str(len(p.get("used_by") or [])),
            str(p.get("status", "")).upper(),
        ]
        for p in pools
    ]
    render(args.format, ["NAME", "DRIVER", "DESCRIPTION", "USED BY", "STATE"], rows, pools)


def _show(args: argparse.Namespace, c: Client) -> None:
    sys.stdout.write(dump_yaml(c.request("GET", f"/1.0/storage-pools/{q(args.name)}")))


def _create(args: argparse.Namespace, c: Client) -> None:
    body = {
        "name": args.name,
        "driver": args.driver,
        "description": args.description or "",
        "config": key_values(args.config, allow_pair=False),
    }
    c.request("POST", "/1.0/storage-pools", body)
    print(f"Storage pool {args.name} created")


def _delete(args: argparse.Namespace, c: Client) -> None:
    c.request("DELETE", f"/1.0/storage-pools/{q(args.name)}")
    print(f"Storage pool {args.name} deleted")


def _volume_list(args: argparse.Namespace, c: Client) -> None:
    vols: list[dict[str, Any]] = c.request("GET", f"/1.0/storage-pools/{q(args.pool)}/volumes?recursion=1")
    rows = [
        [
            v.get("type", ""),
            v["name"],
            v.get("description", ""),
            v.get("content_type", ""),
            str(len(v.get("used_by") or [])),
        ]
        for v in vols
    ]
    render(args.format, ["TYPE", "NAME", "DESCRIPTION", "CONTENT-TYPE", "USED BY"], rows, vols)


def _build_list(x: argparse.ArgumentParser, words: list[str]) -> None:
    add_format(x)
    x.set_defaults(func=_list)


def _build_create(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("driver", help="dir or btrfs")
    x.add_argument("config", nargs="*", metavar="KEY=VALUE")
    x.add_argument("--description", default="")
    x.set_defaults(func=_create, spill="config")


def _build_volume_list(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("pool")
    add_format(x)
    x.set_defaults(func=_volume_list)


VOLUME_COMMANDS: tuple[Command, ...] = (("list", ("ls",), "list the volumes of a pool", _build_volume_list),)


def _build_volume(x: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(x, "volume_command", VOLUME_COMMANDS, words)


COMMANDS: tuple[Command, ...] = (
    ("list", ("ls",), "list storage pools", _build_list),
    ("show", (), "show a storage pool as YAML", positionals(_show, "name")),
    ("create", (), "create a storage pool (POOL DRIVER [KEY=VALUE...])", _build_create),
    ("delete", ("rm",), "delete an unused storage pool", positionals(_delete, "name")),
    ("volume", (), "storage volumes", _build_volume),
)


def build_storage(p: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(p, "subcommand", COMMANDS, words)
