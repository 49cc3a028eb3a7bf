"""pincus network ..."""

from __future__ import annotations

import sys

from pincus.cli.client import ClientError, q
from pincus.cli.common import add_format, key_values, positionals, read_stdin_yaml, subcommands, yaml_config
from pincus.cli.output import dump_yaml, render

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.client import Client
    from pincus.cli.common import Command


def _list(args: argparse.Namespace, c: Client) -> None:
    nets: list[dict[str, Any]] = c.request("GET", "/1.0/networks?recursion=1")
    rows = []
    for n in nets:
        cfg = n.get("config", {})
        rows.append(
            [
                n["name"],
                n["type"],
                "YES" if n.get("managed") else "NO",
                cfg.get("ipv4.address", "") if n.get("managed") else "",
                cfg.get("ipv6.address", "") if n.get("managed") else "",
                n.get("description", ""),
                str(len(n.get("used_by") or [])),
                str(n.get("status", "")).upper(),
            ]
        )
    headers = ["NAME", "TYPE", "MANAGED", "IPV4", "IPV6", "DESCRIPTION", "USED BY", "STATE"]
    render(args.format, headers, rows, nets)


def _create(args: argparse.Namespace, c: Client) -> None:
    body = {
        "name": args.name,
        "type": args.type,
        "description": args.description or "",
        "config": key_values(args.config, allow_pair=False),
    }
    c.request("POST", "/1.0/networks", body)
    print(f"Network {args.name} created")


def _show(args: argparse.Namespace, c: Client) -> None:
    n = c.request("GET", f"/1.0/networks/{q(args.name)}")
    sys.stdout.write(dump_yaml(n))


def _get(args: argparse.Namespace, c: Client) -> None:
    n = c.request("GET", f"/1.0/networks/{q(args.name)}")
    print(n.get("config", {}).get(args.key, ""))


def _set(args: argparse.Namespace, c: Client) -> None:
    c.request("PATCH", f"/1.0/networks/{q(args.name)}", {"config": key_values(args.config)})


def _unset(args: argparse.Namespace, c: Client) -> None:
    n = c.request("GET", f"/1.0/networks/{q(args.name)}")
    config = dict(n.get("config", {}))
    if args.key not in config:
        raise ClientError(f'Key "{args.key}" is not set on network "{args.name}"')
    del config[args.key]
    c.request(
        "PUT", f"/1.0/networks/{q(args.name)}", {"config": config, "description": n.get("description", "")}
    )


def _edit(args: argparse.Namespace, c: Client) -> None:
    doc = read_stdin_yaml()
    body = {"config": yaml_config(doc), "description": str(doc.get("description") or "")}
    if doc.get("type"):
        body["type"] = str(doc["type"])
    c.request("PUT", f"/1.0/networks/{q(args.name)}", body)


def _rename(args: argparse.Namespace, c: Client) -> None:
    c.request("POST", f"/1.0/networks/{q(args.name)}", {"name": args.new_name})
    print(f"Network {args.name} renamed to {args.new_name}")


def _delete(args: argparse.Namespace, c: Client) -> None:
    c.request("DELETE", f"/1.0/networks/{q(args.name)}")
    print(f"Network {args.name} deleted")


def _leases(args: argparse.Namespace, c: Client) -> None:
    leases: list[dict[str, Any]] = c.request("GET", f"/1.0/networks/{q(args.name)}/leases")
    rows = [
        [x.get("hostname", ""), x.get("hwaddr", ""), x.get("address", ""), x.get("type", "").upper()]
        for x in leases
    ]
    render(args.format, ["HOSTNAME", "MAC ADDRESS", "IP ADDRESS", "TYPE"], rows, leases)


# --- parsers -------------------------------------------------------------------------------------


def _build_list(x: argparse.ArgumentParser, words: list[str]) -> None:
    add_format(x)
    x.set_defaults(func=_list)


def _build_create(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("config", nargs="*", metavar="KEY=VALUE")
    x.add_argument("--type", "-t", default="bridge", help="network type (bridge or physical)")
    x.add_argument("--description", default="")
    x.set_defaults(func=_create, spill="config")


def _build_leases(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    add_format(x)
    x.set_defaults(func=_leases)


COMMANDS: tuple[Command, ...] = (
    ("list", ("ls",), "list networks, managed and the host's own", _build_list),
    ("create", (), "create a managed network", _build_create),
    ("show", (), "show a network as YAML", positionals(_show, "name")),
    ("get", (), "print one config key", positionals(_get, "name", "key")),
    ("set", (), "set config keys (KEY=VALUE... or KEY VALUE)", positionals(_set, "name", "config+")),
    ("unset", (), "remove a config key", positionals(_unset, "name", "key")),
    ("edit", (), "replace the config from YAML on stdin", positionals(_edit, "name")),
    ("rename", (), "rename an unused network", positionals(_rename, "name", "new_name")),
    ("delete", ("rm",), "delete an unused network", positionals(_delete, "name")),
    ("list-leases", (), "DHCP leases and static allocations of a managed bridge", _build_leases),
)


def build_network(p: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(p, "subcommand", COMMANDS, words)
