"""pincus profile ..."""

from __future__ import annotations

import sys

from pincus.cli.client import ClientError
from pincus.cli.common import (
    add_format,
    edit_yaml,
    key_values,
    positionals,
    subcommands,
    yaml_config,
    yaml_devices,
)
from pincus.cli.devices import INSTANCE, PROFILE, commands
from pincus.cli.output import dump_yaml, render

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.client import Client
    from pincus.cli.common import Command


def _list(args: argparse.Namespace, c: Client) -> None:
    profiles: list[dict[str, Any]] = c.request("GET", "/1.0/profiles?recursion=1")
    rows = [[p["name"], p.get("description", ""), str(len(p.get("used_by") or []))] for p in profiles]
    render(args.format, ["NAME", "DESCRIPTION", "USED BY"], rows, profiles)


def _show(args: argparse.Namespace, c: Client) -> None:
    sys.stdout.write(dump_yaml(c.request("GET", PROFILE.path(args.name))))


def _create(args: argparse.Namespace, c: Client) -> None:
    body: dict[str, Any] = {"name": args.name, "description": args.description or ""}
    if not sys.stdin.isatty() and args.from_stdin:
        from pincus.cli.common import read_stdin_yaml

        doc = read_stdin_yaml()
        body.update(config=yaml_config(doc), devices=yaml_devices(doc))
        body["description"] = str(doc.get("description") or body["description"])
    c.request("POST", "/1.0/profiles", body)
    print(f"Profile {args.name} created")


def _copy(args: argparse.Namespace, c: Client) -> None:
    src = c.request("GET", PROFILE.path(args.name))
    body = {k: src.get(k) for k in ("description", "config", "devices")}
    c.request("POST", "/1.0/profiles", {"name": args.new_name, **body})


def _rename(args: argparse.Namespace, c: Client) -> None:
    c.request("POST", PROFILE.path(args.name), {"name": args.new_name})
    print(f"Profile {args.name} renamed to {args.new_name}")


def _delete(args: argparse.Namespace, c: Client) -> None:
    c.request("DELETE", PROFILE.path(args.name))
    print(f"Profile {args.name} deleted")


def _edit(args: argparse.Namespace, c: Client) -> None:
    p, headers = c.request_with_headers("GET", PROFILE.path(args.name))
    doc = edit_yaml({k: p.get(k) for k in ("name", "description", "config", "devices")})
    body = {
        "config": yaml_config(doc),
        "devices": yaml_devices(doc),
        "description": str(doc.get("description") or ""),
    }
    c.request("PUT", PROFILE.path(args.name), body, if_match=headers.get("etag"))


def _get(args: argparse.Namespace, c: Client) -> None:
    print((c.request("GET", PROFILE.path(args.name)).get("config") or {}).get(args.key, ""))


def _set(args: argparse.Namespace, c: Client) -> None:
    # PATCH merges config maps: exactly the keys given change; an empty value unsets.
    c.request("PATCH", PROFILE.path(args.name), {"config": key_values(args.config)})


def _unset(args: argparse.Namespace, c: Client) -> None:
    c.request("PATCH", PROFILE.path(args.name), {"config": {args.key: ""}})


# --- an instance's profiles ----------------------------------------------------------------------


def _set_profiles(c: Client, name: str, change: Any) -> None:
    inst, etag = INSTANCE.get(c, name)
    profiles = change(list(inst.get("profiles") or []))
    body = {"profiles": profiles}
    c.request("PATCH", INSTANCE.path(name), body, if_match=etag)


def _add(args: argparse.Namespace, c: Client) -> None:
    def add(profiles: list[str]) -> list[str]:
        if args.profile in profiles:
            raise ClientError(f'Profile "{args.profile}" is already applied to instance "{args.instance}"')
        return [*profiles, args.profile]

    _set_profiles(c, args.instance, add)
    print(f"Profile {args.profile} added to {args.instance}")


def _remove(args: argparse.Namespace, c: Client) -> None:
    def remove(profiles: list[str]) -> list[str]:
        if args.profile not in profiles:
            raise ClientError(
                f'Profile "{args.profile}" isn\'t currently applied to instance "{args.instance}"'
            )
        return [p for p in profiles if p != args.profile]

    _set_profiles(c, args.instance, remove)
    print(f"Profile {args.profile} removed from {args.instance}")


def _assign(args: argparse.Namespace, c: Client) -> None:
    wanted = [p for p in args.profiles.split(",") if p]
    _set_profiles(c, args.instance, lambda profiles: wanted)
    if wanted:
        print(f"Profiles {', '.join(wanted)} applied to {args.instance}")
    else:
        print(f"Profiles removed from {args.instance}")


# --- parsers -------------------------------------------------------------------------------------


def _build_list(x: argparse.ArgumentParser, words: list[str]) -> None:
    add_format(x)
    x.set_defaults(func=_list)


def _build_create(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("--description", default="")
    x.set_defaults(func=_create, from_stdin=True)


def _build_device(p: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(p, "device_command", commands(PROFILE), words)


COMMANDS: tuple[Command, ...] = (
    ("list", ("ls",), "list profiles", _build_list),
    ("show", (), "show a profile as YAML", positionals(_show, "name")),
    ("create", (), "create a profile (YAML on stdin gives its config and devices)", _build_create),
    ("copy", ("cp",), "copy a profile", positionals(_copy, "name", "new_name")),
    ("rename", ("mv",), "rename a profile", positionals(_rename, "name", "new_name")),
    ("delete", ("rm",), "delete an unused profile", positionals(_delete, "name")),
    ("edit", (), "edit a profile as YAML ($EDITOR, or stdin)", positionals(_edit, "name")),
    ("get", (), "print one config key", positionals(_get, "name", "key")),
    (
        "set",
        (),
        "set config keys (KEY=VALUE... or KEY VALUE; KEY= unsets)",
        positionals(_set, "name", "config+"),
    ),
    ("unset", (), "remove a config key", positionals(_unset, "name", "key")),
    ("add", (), "add a profile to an instance", positionals(_add, "instance", "profile")),
    ("remove", (), "remove a profile from an instance", positionals(_remove, "instance", "profile")),
    (
        "assign",
        (),
        "set an instance's profiles (P1,P2; empty for none)",
        positionals(_assign, "instance", "profiles"),
    ),
    ("device", (), "manage a profile's devices", _build_device),
)


def build_profile(p: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(p, "subcommand", COMMANDS, words)
