"""`device add|remove|set|unset|get|show|list` for whatever owns devices: an instance
(`pincus config device`) or a profile (`pincus profile device`).

Each change is a read-modify-write of the whole owner: GET, change the devices, PUT back with
If-Match carrying the GET's ETag, so a change made in between is refused, never overwritten.
"""

from __future__ import annotations

import sys

from pincus.cli.client import ClientError, q
from pincus.cli.common import key_values, positionals
from pincus.cli.output import dump_yaml

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.client import Client
    from pincus.cli.common import Command


class Owner:
    """What a device command needs to know of the object holding the devices."""

    def __init__(self, kind: str, collection: str, put_fields: tuple[str, ...]) -> None:
        self.kind = kind  # "instance" | "profile", for messages
        self.collection = collection  # "/1.0/instances"
        self.put_fields = put_fields  # what a PUT carries besides devices

    def path(self, name: str) -> str:
        if not name:
            raise ClientError(f"{self.kind.capitalize()} name required")
        return f"{self.collection}/{q(name)}"

    def get(self, c: Client, name: str) -> tuple[dict[str, Any], str | None]:
        doc, headers = c.request_with_headers("GET", self.path(name))
        return doc, headers.get("etag")

    def put(
        self, c: Client, name: str, doc: dict[str, Any], etag: str | None, devices: dict[str, Any]
    ) -> None:
        """PUT DOC back with DEVICES; volatile keys stay out (the daemon keeps them, and sending
        them back would race with a start or stop that changes them)."""
        body: dict[str, Any] = {k: doc[k] for k in self.put_fields if k in doc}
        config = doc.get("config") or {}
        body["config"] = {k: v for k, v in config.items() if not k.startswith("volatile.")}
        body["devices"] = devices
        c.request("PUT", self.path(name), body, if_match=etag)


INSTANCE = Owner("instance", "/1.0/instances", ("description", "profiles"))
PROFILE = Owner("profile", "/1.0/profiles", ("description",))


def _device_of(owner: Owner, doc: dict[str, Any], name: str, device: str) -> dict[str, str]:
    if not device:
        raise ClientError("Device name required")
    devices = doc.get("devices") or {}
    if device not in devices:
        if device in (doc.get("expanded_devices") or {}):
            raise ClientError(
                f'Device "{device}" comes from a profile and cannot be modified for this {owner.kind} alone: '
                "override it with a device of the same name, or change the profile"
            )
        raise ClientError(f'Device "{device}" doesn\'t exist on {owner.kind} "{name}"')
    return dict(devices[device])


_COMMANDS: dict[str, tuple[Command, ...]] = {}


def commands(owner: Owner) -> tuple[Command, ...]:
    """The device commands of OWNER's kind (made once: a parser built twice gets the same ones)."""
    if owner.kind not in _COMMANDS:
        _COMMANDS[owner.kind] = _make_commands(owner)
    return _COMMANDS[owner.kind]


def _make_commands(owner: Owner) -> tuple[Command, ...]:
    def add(args: argparse.Namespace, c: Client) -> None:
        if not args.device:
            raise ClientError("Device name required")
        doc, etag = owner.get(c, args.name)
        devices = dict(doc.get("devices") or {})
        if args.device in devices:
            raise ClientError(f'Device "{args.device}" already exists on {owner.kind} "{args.name}"')
        config = key_values(args.config, allow_pair=False)
        config.pop("type", None)  # the positional TYPE wins over a type= pair
        devices[args.device] = {"type": args.type, **config}
        owner.put(c, args.name, doc, etag, devices)
        print(f"Device {args.device} added to {args.name}")

    def change(args: argparse.Namespace, c: Client, values: dict[str, str]) -> None:
        doc, etag = owner.get(c, args.name)
        dev = _device_of(owner, doc, args.name, args.device)
        changed = dict(dev)
        for key, value in values.items():
            if value == "":
                changed.pop(key, None)
            else:
                changed[key] = value
        if changed != dev:  # an absent key to unset is no error, as with Incus
            owner.put(c, args.name, doc, etag, {**(doc.get("devices") or {}), args.device: changed})

    def set_(args: argparse.Namespace, c: Client) -> None:
        change(args, c, key_values(args.config))

    def unset(args: argparse.Namespace, c: Client) -> None:
        change(args, c, {args.key: ""})

    def get(args: argparse.Namespace, c: Client) -> None:
        doc, _ = owner.get(c, args.name)
        print(_device_of(owner, doc, args.name, args.device).get(args.key, ""))

    def remove(args: argparse.Namespace, c: Client) -> None:
        doc, etag = owner.get(c, args.name)
        devices = dict(doc.get("devices") or {})
        for device in args.devices:
            _device_of(owner, doc, args.name, device)  # all must exist before anything changes
            devices.pop(device)
        owner.put(c, args.name, doc, etag, devices)
        for device in args.devices:
            print(f"Device {device} removed from {args.name}")

    def show(args: argparse.Namespace, c: Client) -> None:
        sys.stdout.write(dump_yaml(owner.get(c, args.name)[0].get("devices") or {}))

    def list_(args: argparse.Namespace, c: Client) -> None:
        for device in sorted(owner.get(c, args.name)[0].get("devices") or {}):
            print(device)

    def build_add(x: argparse.ArgumentParser, words: list[str]) -> None:
        x.add_argument("name")
        x.add_argument("device")
        x.add_argument("type", help="device type (nic)")
        x.add_argument("config", nargs="*", metavar="KEY=VALUE")
        x.set_defaults(func=add)

    def build_remove(x: argparse.ArgumentParser, words: list[str]) -> None:
        x.add_argument("name")
        x.add_argument("devices", nargs="+", metavar="DEVICE")
        x.set_defaults(func=remove)

    live = " (applied live to running instances)"
    return (
        ("add", (), f"add a device{live}", build_add),
        ("set", (), "set device keys (KEY= unsets)", positionals(set_, "name", "device", "config+")),
        ("unset", (), "remove a device key", positionals(unset, "name", "device", "key")),
        ("get", (), "print one device key", positionals(get, "name", "device", "key")),
        ("remove", ("rm",), f"remove devices{live}", build_remove),
        ("show", (), "the devices as YAML", positionals(show, "name")),
        ("list", ("ls",), "device names", positionals(list_, "name")),
    )
