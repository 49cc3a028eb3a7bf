"""pincus network ..."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pincus.cli.client import Client, ClientError, q
from pincus.cli.common import add_format, command, key_values, read_stdin_yaml, yaml_config
from pincus.cli.output import dump_yaml, render


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


def register(sub: Any) -> None:
    p = sub.add_parser("network", help="manage networks")
    s = p.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")

    x = s.add_parser("list", aliases=["ls"], help="list networks, managed and the host's own")
    add_format(x)
    x.set_defaults(func=_list)

    x = s.add_parser("create", help="create a managed network")
    x.add_argument("name")
    x.add_argument("config", nargs="*", metavar="KEY=VALUE")
    x.add_argument("--type", "-t", default="bridge", help="network type (bridge or physical)")
    x.add_argument("--description", default="")
    x.set_defaults(func=_create, spill="config")

    command(s, "show", "show a network as YAML", _show, "name")
    command(s, "get", "print one config key", _get, "name", "key")
    command(s, "set", "set config keys (KEY=VALUE... or KEY VALUE)", _set, "name", "config+")
    command(s, "unset", "remove a config key", _unset, "name", "key")
    command(s, "edit", "replace the config from YAML on stdin", _edit, "name")

    x = s.add_parser("rename", help="rename an unused network")
    x.add_argument("name")
    x.add_argument("new_name")
    x.set_defaults(func=_rename)

    x = s.add_parser("delete", aliases=["rm"], help="delete an unused network")
    x.add_argument("name")
    x.set_defaults(func=_delete)

    x = s.add_parser("list-leases", help="DHCP leases and static allocations of a managed bridge")
    x.add_argument("name")
    add_format(x)
    x.set_defaults(func=_leases)
