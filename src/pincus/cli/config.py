"""pincus config show/get/set/unset/edit and pincus config device ..."""

from __future__ import annotations

import sys

from pincus.cli.client import ClientError
from pincus.cli.common import edit_yaml, key_values, positionals, subcommands, yaml_config, yaml_devices
from pincus.cli.instance import path
from pincus.cli.output import dump_yaml

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.client import Client
    from pincus.cli.common import Command


def _get_instance(c: Client, name: str) -> dict[str, Any]:
    inst: dict[str, Any] = c.request("GET", path(name))
    return inst


# --- config --------------------------------------------------------------------------------------


def _show(args: argparse.Namespace, c: Client) -> None:
    inst = _get_instance(c, args.name)
    prefix = "expanded_" if args.expanded else ""
    config_key, devices_key = f"{prefix}config", f"{prefix}devices"
    doc: dict[str, Any] = {}
    if inst.get("architecture"):
        doc["architecture"] = inst["architecture"]
    doc.update(
        config=inst.get(config_key) or {},
        devices=inst.get(devices_key) or {},
        ephemeral=bool(inst.get("ephemeral", False)),
        profiles=inst.get("profiles") or [],
        stateful=bool(inst.get("stateful", False)),
        description=inst.get("description", ""),
    )
    sys.stdout.write(dump_yaml(doc))


def _config_get(args: argparse.Namespace, c: Client) -> None:
    print((_get_instance(c, args.name).get("config") or {}).get(args.key, ""))


def _config_set(args: argparse.Namespace, c: Client) -> None:
    # PATCH merges config maps: exactly the keys given change.
    c.request("PATCH", path(args.name), {"config": key_values(args.config)})


def _config_unset(args: argparse.Namespace, c: Client) -> None:
    path(args.name)
    if args.key.startswith("volatile."):
        # The daemon keeps a volatile key that a PUT leaves out; refuse rather than pretend.
        raise ClientError(f'Key "{args.key}" is managed by pincus and cannot be unset')
    # An empty value unsets (the daemon drops it); an absent key is no error, as with Incus.
    c.request("PATCH", path(args.name), {"config": {args.key: ""}})


def _edit(args: argparse.Namespace, c: Client) -> None:
    inst, headers = c.request_with_headers("GET", path(args.name))
    current = {
        k: inst.get(k)
        for k in ("architecture", "config", "devices", "ephemeral", "profiles", "stateful", "description")
    }
    doc = edit_yaml(current)
    body = {
        "config": yaml_config(doc),
        "devices": yaml_devices(doc),
        "description": str(doc.get("description") or ""),
    }
    if isinstance(doc.get("profiles"), list):
        body["profiles"] = [str(p) for p in doc["profiles"]]
    c.request("PUT", path(args.name), body, if_match=headers.get("etag"))


# --- parsers -------------------------------------------------------------------------------------


def _build_show(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("--expanded", action="store_true", help="show the expanded config and devices")
    x.set_defaults(func=_show)


def _build_device(p: argparse.ArgumentParser, words: list[str]) -> None:
    from pincus.cli import devices

    subcommands(p, "device_command", devices.commands(devices.INSTANCE), words)


COMMANDS: tuple[Command, ...] = (
    ("show", (), "the instance's config as YAML", _build_show),
    ("get", (), "print one config key", positionals(_config_get, "name", "key")),
    ("set", (), "set config keys (KEY=VALUE... or KEY VALUE)", positionals(_config_set, "name", "config+")),
    ("unset", (), "remove a config key", positionals(_config_unset, "name", "key")),
    ("edit", (), "edit config and devices as YAML ($EDITOR, or stdin)", positionals(_edit, "name")),
    ("device", (), "manage an instance's devices", _build_device),
)


def build_config(p: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(p, "subcommand", COMMANDS, words)
