"""pincus cluster enable|add|list|show|rename|remove|list-tokens|revoke-token"""

from __future__ import annotations

import sys
import time

from pincus.cli.client import ClientError, q
from pincus.cli.common import add_format, positionals, subcommands
from pincus.cli.output import dump_yaml, render

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.client import Client
    from pincus.cli.common import Command

RESTART_TIMEOUT = 90.0  # seconds for pincusd to come back on the cluster database


def wait_clustered(c: Client, timeout: float = RESTART_TIMEOUT) -> None:
    """pincusd restarts after enabling or joining: wait until the new daemon says it is clustered."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            if c.request("GET", "/1.0/cluster").get("enabled"):
                return
        except ClientError as e:
            last = str(e)
        time.sleep(0.1)
    raise ClientError(f"pincusd did not come back clustered within {timeout:g} s ({last}); see its log")


def _enable(args: argparse.Namespace, c: Client) -> None:
    c.request("PUT", "/1.0/cluster", {"server_name": args.name, "enabled": True})
    wait_clustered(c)
    print("Clustering enabled")


def _add(args: argparse.Namespace, c: Client) -> None:
    doc = c.request("POST", "/1.0/cluster/members", {"server_name": args.name})
    print(f"Member {args.name} join token:")
    print(doc["token"])


def _list(args: argparse.Namespace, c: Client) -> None:
    members: list[dict[str, Any]] = c.request("GET", "/1.0/cluster/members?recursion=1")
    headers = ["NAME", "URL", "ROLES", "ARCHITECTURE", "FAILURE DOMAIN", "DESCRIPTION", "STATUS", "MESSAGE"]
    rows = [[m["server_name"], m["url"], "\n".join(m.get("roles") or []), m.get("architecture", ""),
             m.get("failure_domain", ""), m.get("description", ""), m["status"], m.get("message", "")]
            for m in members]  # fmt: skip
    render(args.format, headers, rows, members)


def _show(args: argparse.Namespace, c: Client) -> None:
    sys.stdout.write(dump_yaml(c.request("GET", f"/1.0/cluster/members/{q(args.name)}")))


def _rename(args: argparse.Namespace, c: Client) -> None:
    c.request("POST", f"/1.0/cluster/members/{q(args.name)}", {"server_name": args.new_name})
    print(f"Member {args.name} renamed to {args.new_name}")


def _remove(args: argparse.Namespace, c: Client) -> None:
    c.request("DELETE", f"/1.0/cluster/members/{q(args.name)}" + ("?force=1" if args.force else ""))
    print(f"Member {args.name} removed")


def _evacuate(args: argparse.Namespace, c: Client) -> None:
    c.request("POST", f"/1.0/cluster/members/{q(args.name)}/state", {"action": "evacuate"})


def _restore(args: argparse.Namespace, c: Client) -> None:
    c.request("POST", f"/1.0/cluster/members/{q(args.name)}/state", {"action": "restore"})


def _list_tokens(args: argparse.Namespace, c: Client) -> None:
    tokens: list[dict[str, Any]] = c.request("GET", "/internal/cluster/tokens")
    when = [time.strftime("%Y/%m/%d %H:%M %Z", time.localtime(t["expires_at"])) for t in tokens]
    rows = [[t["server_name"], t["token"], w] for t, w in zip(tokens, when, strict=True)]
    render(args.format, ["NAME", "TOKEN", "EXPIRES AT"], rows, tokens)


def _revoke_token(args: argparse.Namespace, c: Client) -> None:
    c.request("DELETE", f"/internal/cluster/tokens/{q(args.name)}")


def _build_list(x: argparse.ArgumentParser, words: list[str]) -> None:
    add_format(x)
    x.set_defaults(func=_list)


def _build_list_tokens(x: argparse.ArgumentParser, words: list[str]) -> None:
    add_format(x)
    x.set_defaults(func=_list_tokens)


def _build_remove(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("--force", "-f", action="store_true", help="remove even if it would leave no quorum")
    x.set_defaults(func=_remove)


def _build_evacuate(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("--force", action="store_true", help="do not ask (pincus never asks)")
    x.set_defaults(func=_evacuate)


COMMANDS: tuple[Command, ...] = (
    ("enable", (), "make this server the first member of a new cluster", positionals(_enable, "name")),
    ("add", (), "print a join token for a new member", positionals(_add, "name")),
    ("list", ("ls",), "list the cluster's members", _build_list),
    ("show", (), "a member's details as YAML", positionals(_show, "name")),
    ("rename", (), "rename a member", positionals(_rename, "name", "new_name")),
    ("remove", ("rm",), "remove a member", _build_remove),
    ("evacuate", (), "stop a member's instances and take it out of placement", _build_evacuate),
    ("restore", (), "start again what evacuate stopped", positionals(_restore, "name")),
    ("list-tokens", (), "list the join tokens not used yet", _build_list_tokens),
    ("revoke-token", (), "revoke the join token of a member to be", positionals(_revoke_token, "name")),
)


def build_cluster(p: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(p, "subcommand", COMMANDS, words)
