"""pincus config show/get/set/unset/edit and pincus config device ..."""

from __future__ import annotations

import sys

from pincus.cli.client import ClientError
from pincus.cli.common import edit_yaml, key_values, positionals, subcommands, yaml_config
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


def _put(c: Client, inst: dict[str, Any], config: dict[str, str], devices: dict[str, Any]) -> None:
    """Replace config and devices whole.

    PATCH merges device maps, so it can neither drop a device nor a device key; PUT can.
    volatile.* keys are left out: the daemon keeps them, and sending them back would race with
    a start or stop that changes them between our GET and PUT.
    """
    user_config = {k: v for k, v in config.items() if not k.startswith("volatile.")}
    body = {"config": user_config, "devices": devices, "description": inst.get("description", "")}
    if "profiles" in inst:
        body["profiles"] = inst["profiles"]
    c.request("PUT", path(inst["name"]), body)


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


def _yaml_devices(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    devices = doc.get("devices") or {}
    if not isinstance(devices, dict):
        raise ClientError('"devices" must be a map of device name to config')
    out: dict[str, dict[str, str]] = {}
    for name, cfg in devices.items():
        if cfg is not None and not isinstance(cfg, dict):
            raise ClientError(f'Device "{name}" must be a map of keys')
        out[str(name)] = yaml_config({"config": cfg})
    return out


def _edit(args: argparse.Namespace, c: Client) -> None:
    inst = _get_instance(c, args.name)
    current = {
        k: inst.get(k)
        for k in ("architecture", "config", "devices", "ephemeral", "profiles", "stateful", "description")
    }
    doc = edit_yaml(current)
    body = {
        "config": yaml_config(doc),
        "devices": _yaml_devices(doc),
        "description": str(doc.get("description") or ""),
    }
    if isinstance(doc.get("profiles"), list):
        body["profiles"] = [str(p) for p in doc["profiles"]]
    c.request("PUT", path(args.name), body)


# --- config device -------------------------------------------------------------------------------


def _device_of(inst: dict[str, Any], device: str) -> dict[str, str]:
    if not device:
        raise ClientError("Device name required")
    devices = inst.get("devices") or {}
    if device not in devices:
        raise ClientError(f'Device "{device}" doesn\'t exist on instance "{inst["name"]}"')
    return dict(devices[device])


def _device_add(args: argparse.Namespace, c: Client) -> None:
    if not args.device:
        raise ClientError("Device name required")
    inst = _get_instance(c, args.name)
    devices = dict(inst.get("devices") or {})
    if args.device in devices:
        raise ClientError(f'Device "{args.device}" already exists on instance "{args.name}"')
    config = key_values(args.config, allow_pair=False)
    config.pop("type", None)  # the positional TYPE wins over a type= pair
    devices[args.device] = {"type": args.type, **config}
    _put(c, inst, dict(inst.get("config") or {}), devices)
    print(f"Device {args.device} added to {args.name}")


def _device_set(args: argparse.Namespace, c: Client) -> None:
    inst = _get_instance(c, args.name)
    dev = _device_of(inst, args.device)
    for key, value in key_values(args.config).items():
        if value == "":
            dev.pop(key, None)
        else:
            dev[key] = value
    _put(c, inst, dict(inst.get("config") or {}), {**(inst.get("devices") or {}), args.device: dev})


def _device_unset(args: argparse.Namespace, c: Client) -> None:
    inst = _get_instance(c, args.name)
    dev = _device_of(inst, args.device)
    if args.key not in dev:
        return  # an absent key is no error, as with Incus
    del dev[args.key]
    _put(c, inst, dict(inst.get("config") or {}), {**(inst.get("devices") or {}), args.device: dev})


def _device_get(args: argparse.Namespace, c: Client) -> None:
    print(_device_of(_get_instance(c, args.name), args.device).get(args.key, ""))


def _device_remove(args: argparse.Namespace, c: Client) -> None:
    inst = _get_instance(c, args.name)
    devices = dict(inst.get("devices") or {})
    for device in args.devices:
        _device_of(inst, device)  # all named devices must exist before anything changes
        devices.pop(device)
    _put(c, inst, dict(inst.get("config") or {}), devices)
    for device in args.devices:
        print(f"Device {device} removed from {args.name}")


def _device_show(args: argparse.Namespace, c: Client) -> None:
    sys.stdout.write(dump_yaml(_get_instance(c, args.name).get("devices") or {}))


def _device_list(args: argparse.Namespace, c: Client) -> None:
    for device in sorted(_get_instance(c, args.name).get("devices") or {}):
        print(device)


# --- parsers -------------------------------------------------------------------------------------


def _build_device_add(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("device")
    x.add_argument("type", help="device type (nic)")
    x.add_argument("config", nargs="*", metavar="KEY=VALUE")
    x.set_defaults(func=_device_add)


def _build_device_remove(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("devices", nargs="+", metavar="DEVICE")
    x.set_defaults(func=_device_remove)


DEVICE_COMMANDS: tuple[Command, ...] = (
    ("add", (), "add a device (hot-plugged when running)", _build_device_add),
    ("set", (), "set device keys (KEY= unsets)", positionals(_device_set, "name", "device", "config+")),
    ("unset", (), "remove a device key", positionals(_device_unset, "name", "device", "key")),
    ("get", (), "print one device key", positionals(_device_get, "name", "device", "key")),
    ("remove", ("rm",), "remove devices (hot-unplugged when running)", _build_device_remove),
    ("show", (), "the devices as YAML", positionals(_device_show, "name")),
    ("list", ("ls",), "device names", positionals(_device_list, "name")),
)


def _build_show(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("--expanded", action="store_true", help="show the expanded config and devices")
    x.set_defaults(func=_show)


def _build_device(p: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(p, "device_command", DEVICE_COMMANDS, words)


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
