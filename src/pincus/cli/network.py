"""pincus network ..."""

from __future__ import annotations

import sys

from pincus.cli.client import ClientError, q
from pincus.cli.common import add_format, edit_yaml, key_values, positionals, subcommands, yaml_config
from pincus.cli.devices import INSTANCE, PROFILE, Owner
from pincus.cli.output import dump_yaml, render

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.client import Client
    from pincus.cli.common import Builder, Command


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
    if args.target:
        c.request("POST", f"/1.0/networks?target={q(args.target)}", body)
        print(f"Network {args.name} pending on member {args.target}")
        return
    c.request("POST", "/1.0/networks", body)
    print(f"Network {args.name} created")


def _show(args: argparse.Namespace, c: Client) -> None:
    target = f"?target={q(args.target)}" if args.target else ""
    n = c.request("GET", f"/1.0/networks/{q(args.name)}{target}")
    sys.stdout.write(dump_yaml(n))


def _get(args: argparse.Namespace, c: Client) -> None:
    n = c.request("GET", f"/1.0/networks/{q(args.name)}")
    print(n.get("config", {}).get(args.key, ""))


def _set(args: argparse.Namespace, c: Client) -> None:
    c.request("PATCH", f"/1.0/networks/{q(args.name)}", {"config": key_values(args.config)})


def _unset(args: argparse.Namespace, c: Client) -> None:
    # An empty value unsets (the daemon drops it); an absent key is no error, as with Incus.
    c.request("PATCH", f"/1.0/networks/{q(args.name)}", {"config": {args.key: ""}})


def _edit(args: argparse.Namespace, c: Client) -> None:
    n = c.request("GET", f"/1.0/networks/{q(args.name)}")
    current = {k: n.get(k) for k in ("name", "description", "type", "config")}
    doc = edit_yaml(current)
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


def info_text(name: str, st: dict[str, Any]) -> str:
    """`network info`: what Incus prints of a network's state."""
    lines = [
        f"Name: {name}",
        f"MAC address: {st.get('hwaddr', '')}",
        f"MTU: {st.get('mtu', '')}",
        f"State: {st.get('state', '')}",
        f"Type: {st.get('type', '')}",
        "",
        "IP addresses:",
    ]
    for a in st.get("addresses") or []:
        lines.append(
            f"  {a.get('family', '')} {a.get('address', '')}/{a.get('netmask', '')} ({a.get('scope', '')})"
        )
    counters = st.get("counters") or {}
    lines += ["", "Network usage:"]
    for label, key in (
        ("Bytes received", "bytes_received"),
        ("Bytes sent", "bytes_sent"),
        ("Packets received", "packets_received"),
        ("Packets sent", "packets_sent"),
    ):
        lines.append(f"  {label}: {counters.get(key, 0)}")
    bridge = st.get("bridge")
    if bridge:
        lines += [
            "",
            "Bridge:",
            f"  ID: {bridge.get('id', '')}",
            f"  STP: {str(bool(bridge.get('stp'))).lower()}",
            f"  Forward delay: {bridge.get('forward_delay', '')}",
            f"  Default VLAN ID: {bridge.get('vlan_default', '')}",
            f"  VLAN filtering: {str(bool(bridge.get('vlan_filtering'))).lower()}",
            f"  Upper devices: {', '.join(bridge.get('upper_devices') or [])}",
        ]
    if st.get("owns"):
        lines += ["", "Owns:", *(f"  {item}" for item in st["owns"])]
    return "\n".join(lines)


def _info(args: argparse.Namespace, c: Client) -> None:
    print(info_text(args.name, c.request("GET", f"/1.0/networks/{q(args.name)}/state")))


def _allocations(args: argparse.Namespace, c: Client) -> None:
    allocs: list[dict[str, Any]] = c.request("GET", "/1.0/network-allocations")
    rows = sorted(
        [
            str(a.get("used_by", "")),
            str(a.get("address", "")),
            str(a.get("type", "")),
            "true" if a.get("nat") else "false",
            str(a.get("hwaddr", "")),
        ]
        for a in allocs
    )
    render(args.format, ["USED BY", "ADDRESS", "TYPE", "NAT", "HARDWARE ADDRESS"], rows, allocs)


# --- attach and detach ---------------------------------------------------------------------------


def _nic_for(c: Client, network: str, ifname: str | None) -> dict[str, str]:
    """The NIC `attach` adds: on a managed network by name, on an unmanaged bridge as bridged."""
    n = c.request("GET", f"/1.0/networks/{q(network)}")
    if n.get("managed"):
        dev = {"type": "nic", "network": network}
    elif n.get("type") == "bridge":
        dev = {"type": "nic", "nictype": "bridged", "parent": network}
    else:
        raise ClientError(
            f'Network "{network}" is neither managed nor a bridge; create a network on it first'
        )
    if ifname:
        dev["name"] = ifname
    return dev


def _matching_device(devices: dict[str, Any], network: str, device: str | None, owner: str) -> str:
    """The one NIC of DEVICES on NETWORK (named DEVICE, when given), as Incus's detach finds it."""
    found = [
        n
        for n, d in sorted(devices.items())
        if d.get("type") == "nic" and network in (d.get("network"), d.get("parent")) and device in (None, n)
    ]
    if not found:
        raise ClientError(f'No device found for network "{network}" on {owner}')
    if len(found) > 1:
        raise ClientError(f"More than one device matches on {owner}, specify the device name")
    return found[0]


def _attach(owner: Owner, args: argparse.Namespace, c: Client) -> None:
    dev = _nic_for(c, args.network, args.ifname)
    target = getattr(args, owner.kind)
    doc, etag = owner.get(c, target)
    name = args.device or args.network
    devices = dict(doc.get("devices") or {})
    if name in devices:
        raise ClientError(f'Device "{name}" already exists on {owner.kind} "{target}"')
    owner.put(c, target, doc, etag, {**devices, name: dev})


def _detach(owner: Owner, args: argparse.Namespace, c: Client) -> None:
    target = getattr(args, owner.kind)
    doc, etag = owner.get(c, target)
    devices = dict(doc.get("devices") or {})
    del devices[_matching_device(devices, args.network, args.device, f'{owner.kind} "{target}"')]
    owner.put(c, target, doc, etag, devices)


# --- parsers -------------------------------------------------------------------------------------


def _build_list(x: argparse.ArgumentParser, words: list[str]) -> None:
    add_format(x)
    x.set_defaults(func=_list)


def _build_create(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("config", nargs="*", metavar="KEY=VALUE")
    x.add_argument("--type", "-t", default="bridge", help="network type (bridge or physical)")
    x.add_argument("--description", default="")
    x.add_argument("--target", help="cluster member: record this member's own keys (parent, mtu, ...)")
    x.set_defaults(func=_create, spill="config")


def _build_show(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("--target", help="cluster member whose view to show")
    x.set_defaults(func=_show)


def _build_leases(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    add_format(x)
    x.set_defaults(func=_leases)


def _build_allocations(x: argparse.ArgumentParser, words: list[str]) -> None:
    add_format(x)
    x.set_defaults(func=_allocations)


def _build_attach(owner: Owner, attach: bool) -> Builder:
    def build(x: argparse.ArgumentParser, words: list[str]) -> None:
        x.add_argument("network")
        x.add_argument(owner.kind)
        x.add_argument("device", nargs="?", help="device name (default: the network's name)")
        if attach:
            x.add_argument("ifname", nargs="?", help="interface name inside the instance")
        func = _attach if attach else _detach
        x.set_defaults(func=lambda args, c: func(owner, args, c), ifname=None)

    return build


COMMANDS: tuple[Command, ...] = (
    ("list", ("ls",), "list networks, managed and the host's own", _build_list),
    ("create", (), "create a managed network", _build_create),
    ("show", (), "show a network as YAML", _build_show),
    ("get", (), "print one config key", positionals(_get, "name", "key")),
    ("set", (), "set config keys (KEY=VALUE... or KEY VALUE)", positionals(_set, "name", "config+")),
    ("unset", (), "remove a config key", positionals(_unset, "name", "key")),
    ("edit", (), "edit the config as YAML ($EDITOR, or stdin)", positionals(_edit, "name")),
    ("rename", (), "rename an unused network", positionals(_rename, "name", "new_name")),
    ("delete", ("rm",), "delete an unused network", positionals(_delete, "name")),
    ("list-leases", (), "DHCP leases and static allocations of a managed bridge", _build_leases),
    ("info", (), "the network's state: addresses, counters, bridge", positionals(_info, "name")),
    ("list-allocations", (), "addresses and MACs in use on managed networks", _build_allocations),
    ("attach", (), "add a NIC on the network to an instance", _build_attach(INSTANCE, attach=True)),
    ("detach", (), "remove an instance's NIC on the network", _build_attach(INSTANCE, attach=False)),
    (
        "attach-profile",
        (),
        "add a NIC on the network to a profile",
        _build_attach(PROFILE, attach=True),
    ),
    (
        "detach-profile",
        (),
        "remove a profile's NIC on the network",
        _build_attach(PROFILE, attach=False),
    ),
)


def build_network(p: argparse.ArgumentParser, words: list[str]) -> None:
    subcommands(p, "subcommand", COMMANDS, words)
