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


# As Incus: without an instance name the keys are the server's. `get KEY` and `unset KEY` have one
# word; `set` has no instance when its first word is KEY=VALUE or it is exactly `KEY VALUE`.


def _config_get(args: argparse.Namespace, c: Client) -> None:
    if len(args.words) == 1:
        print((c.request("GET", "/1.0").get("config") or {}).get(args.words[0], ""))
        return
    if len(args.words) != 2:
        raise ClientError("Usage: pincus config get [INSTANCE] KEY")
    args.name, args.key = args.words
    print((_get_instance(c, args.name).get("config") or {}).get(args.key, ""))


def _config_set(args: argparse.Namespace, c: Client) -> None:
    words = args.words
    if "=" in words[0] or (len(words) == 2 and "=" not in words[1]):
        c.request("PATCH", "/1.0", {"config": key_values(words)})
        return
    if len(words) < 2:
        raise ClientError("Usage: pincus config set [INSTANCE] KEY=VALUE...")
    # PATCH merges config maps: exactly the keys given change.
    c.request("PATCH", path(words[0]), {"config": key_values(words[1:])})


def _config_unset(args: argparse.Namespace, c: Client) -> None:
    if len(args.words) == 1:
        c.request("PATCH", "/1.0", {"config": {args.words[0]: ""}})
        return
    if len(args.words) != 2:
        raise ClientError("Usage: pincus config unset [INSTANCE] KEY")
    args.name, args.key = args.words
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


def _words(func: Any) -> Any:
    def build(x: argparse.ArgumentParser, words: list[str]) -> None:
        x.add_argument("words", nargs="+", metavar="[INSTANCE] KEY[=VALUE]")
        x.set_defaults(func=func)

    return build


def _build_device(p: argparse.ArgumentParser, words: list[str]) -> None:
    from pincus.cli import devices

    subcommands(p, "device_command", devices.commands(devices.INSTANCE), words)


COMMANDS: tuple[Command, ...] = (
    ("show", (), "the instance's config as YAML", _build_show),
    ("get", (), "print one config key (of the server without INSTANCE)", _words(_config_get)),
    ("set", (), "set config keys: [INSTANCE] KEY=VALUE... or [INSTANCE] KEY VALUE", _words(_config_set)),
    ("unset", (), "remove a config key (of the server without INSTANCE)", _words(_config_unset)),
    ("edit", (), "edit config and devices as YAML ($EDITOR, or stdin)", positionals(_edit, "name")),
    ("device", (), "manage an instance's devices", _build_device),
)


def build_config(p: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(p, "subcommand", COMMANDS, words)
