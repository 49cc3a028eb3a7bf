"""pincus init/launch/start/stop/restart/delete/list/info/exec"""

from __future__ import annotations

import argparse
import sys

from pincus.cli.client import ClientError, q
from pincus.cli.common import add_format, key_values
from pincus.cli.output import render

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pincus.cli.client import Client

CONTAINER, VM = "container", "virtual-machine"
DEFAULT_TIMEOUT = 30


def path(name: str) -> str:
    """The instance's URL; an empty name would silently address the collection instead."""
    if not name:
        raise ClientError("Instance name required")
    return f"/1.0/instances/{q(name)}"


def _change_state(c: Client, name: str, action: str, timeout: float, force: bool) -> None:
    body: dict[str, Any] = {"action": action}
    if action != "start":
        body.update(timeout=timeout, force=force)
    c.request("PUT", f"{path(name)}/state", body)


# --- create --------------------------------------------------------------------------------------


def _create(args: argparse.Namespace, c: Client) -> None:
    name = args.name
    path(name)
    devices: dict[str, dict[str, str]] = {}
    if args.network:
        devices["eth0"] = {"type": "nic", "network": args.network, "name": "eth0"}
    body = {
        "name": name,
        "type": VM if args.vm else CONTAINER,
        "description": args.description or "",
        "config": key_values(args.config, allow_pair=False),
        "devices": devices,
    }
    print(f"Creating {name}", flush=True)
    c.request("POST", "/1.0/instances", body)


def _launch(args: argparse.Namespace, c: Client) -> None:
    _create(args, c)
    print(f"Starting {args.name}", flush=True)
    _change_state(c, args.name, "start", DEFAULT_TIMEOUT, False)


# --- state ---------------------------------------------------------------------------------------


def _start(args: argparse.Namespace, c: Client) -> None:
    for name in args.names:
        _change_state(c, name, "start", DEFAULT_TIMEOUT, False)


def _stop(args: argparse.Namespace, c: Client) -> None:
    for name in args.names:
        _change_state(c, name, "stop", args.timeout, args.force)


def _restart(args: argparse.Namespace, c: Client) -> None:
    for name in args.names:
        _change_state(c, name, "restart", args.timeout, args.force)


def _delete(args: argparse.Namespace, c: Client) -> None:
    for name in args.names:
        if args.force and c.request("GET", path(name)).get("status") == "Running":
            _change_state(c, name, "stop", DEFAULT_TIMEOUT, True)
        c.request("DELETE", path(name))


# --- list ----------------------------------------------------------------------------------------


def _address(addr: Any) -> str:
    """An address as "10.0.0.5/24", also from Incus's {address, netmask} form."""
    if isinstance(addr, dict):
        a, mask = str(addr.get("address", "")), addr.get("netmask")
        return f"{a}/{mask}" if mask not in (None, "") else a
    return str(addr)


def _family(addr: str) -> str:
    return "inet6" if ":" in addr else "inet"


def addresses(state: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The IPV4 and IPV6 cells of `list`: "ADDRESS (IFNAME)", without loopback and link-local."""
    v4: list[str] = []
    v6: list[str] = []
    for ifname, nic in (state.get("network") or {}).items():
        if ifname == "lo":
            continue
        for raw in nic.get("addresses") or []:
            ip = _address(raw).partition("/")[0]
            if _family(ip) == "inet":
                v4.append(f"{ip} ({ifname})")
            elif not ip.lower().startswith("fe80:"):
                v6.append(f"{ip} ({ifname})")
    return v4, v6


def _list(args: argparse.Namespace, c: Client) -> None:
    insts: list[dict[str, Any]] = c.request("GET", "/1.0/instances?recursion=1")
    insts.sort(key=lambda i: str(i["name"]))
    rows = []
    for inst in insts:
        state: dict[str, Any] = {}
        if inst.get("status") == "Running":
            try:
                state = c.request("GET", f"{path(inst['name'])}/state")
            except ClientError:  # deleted or stopped since the listing: show it without addresses
                state = {}
        inst["state"] = state
        v4, v6 = addresses(state)
        rows.append(
            [
                inst["name"],
                str(inst.get("status", "")).upper(),
                "\n".join(v4),
                "\n".join(v6),
                str(inst.get("type", "")).upper(),
            ]
        )
    render(args.format, ["NAME", "STATE", "IPV4", "IPV6", "TYPE"], rows, insts)


# --- info ----------------------------------------------------------------------------------------


def info_text(inst: dict[str, Any], state: dict[str, Any]) -> str:
    lines = [f"Name: {inst['name']}"]
    if inst.get("description"):
        lines.append(f"Description: {inst['description']}")
    lines.append(f"Status: {str(state.get('status') or inst.get('status', '')).upper()}")
    lines.append(f"Type: {inst.get('type', '')}")
    if inst.get("architecture"):
        lines.append(f"Architecture: {inst['architecture']}")
    if state.get("pid"):
        lines.append(f"PID: {state['pid']}")
    if inst.get("created_at"):
        lines.append(f"Created: {inst['created_at']}")
    network = state.get("network") or {}
    if network:
        lines += ["", "Resources:", "  Network usage:"]
        for ifname, nic in network.items():
            lines += _nic_lines(ifname, nic)
    return "\n".join(lines)


def _nic_lines(ifname: str, nic: dict[str, Any]) -> list[str]:
    counters = nic.get("counters") or {}
    pad = " " * 6
    out = [f"    {ifname}:"]
    fields = [
        ("Type", nic.get("type", "")),
        ("State", str(nic.get("state", "")).upper()),
        ("Host interface", nic.get("host_name", "")),
        ("MAC address", nic.get("hwaddr", "")),
        ("MTU", nic.get("mtu", "")),
        ("Bytes received", counters.get("bytes_received", 0)),
        ("Bytes sent", counters.get("bytes_sent", 0)),
        ("Packets received", counters.get("packets_received", 0)),
        ("Packets sent", counters.get("packets_sent", 0)),
    ]
    out += [f"{pad}{label}: {value}" for label, value in fields]
    out.append(f"{pad}IP addresses:")
    for raw in nic.get("addresses") or []:
        addr = _address(raw)
        out.append(f"{pad}  {_family(addr)} {addr}")
    if nic.get("path"):
        out.append(f"{pad}Path: {nic['path']}")
    return out


def info(args: argparse.Namespace, c: Client) -> None:
    """`pincus info NAME` (main routes the argument-less form to the server's info)."""
    inst = c.request("GET", path(args.name))
    state = c.request("GET", f"{path(args.name)}/state")
    print(info_text(inst, state))


# --- exec ----------------------------------------------------------------------------------------


def split_exec_args(rest: list[str]) -> tuple[dict[str, str], str | None, list[str]]:
    """--env/--cwd given after NAME, then the command.

    argparse cannot do this itself: it would take the command's own options for ours. As
    with Incus, the command starts at `--` or at the first word that is not one of our flags.
    """
    env: dict[str, str] = {}
    cwd: str | None = None
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "--":
            return env, cwd, rest[i + 1 :]
        flag, eq, value = word.partition("=")
        if flag in ("--env", "--cwd"):
            if not eq:
                if i + 1 >= len(rest):
                    raise ClientError(f"{flag} needs a value")
                i += 1
                value = rest[i]
            if flag == "--env":
                env.update(key_values([value], allow_pair=False))
            else:
                cwd = value
        elif word.startswith("-"):
            raise ClientError(f'Unknown exec flag "{word}" (put the command after --)')
        else:
            return env, cwd, rest[i:]
        i += 1
    return env, cwd, []


def _exec(args: argparse.Namespace, c: Client) -> None:
    path(args.name)
    env = key_values(args.env, allow_pair=False)
    more_env, cwd, command = split_exec_args(args.command)
    env.update(more_env)
    if not command:
        raise ClientError("exec needs a command: pincus exec NAME -- COMMAND [ARGS...]")
    sys.stdout.flush()
    sys.exit(c.exec(args.name, command, env, cwd or args.cwd))


# --- parsers (main.COMMANDS names these commands and their help) ---------------------------------


def _create_flags(x: argparse.ArgumentParser) -> None:
    x.add_argument("name")
    x.add_argument("--vm", action="store_true", help="a virtual machine instead of a container")
    x.add_argument(
        "-c", "--config", action="append", default=[], metavar="KEY=VALUE", help="a config key (repeatable)"
    )
    x.add_argument("-n", "--network", help="add NIC eth0 on this network")
    x.add_argument("--description", default="")


def build_init(x: argparse.ArgumentParser, words: list[str]) -> None:
    _create_flags(x)
    x.set_defaults(func=_create)


def build_launch(x: argparse.ArgumentParser, words: list[str]) -> None:
    _create_flags(x)
    x.set_defaults(func=_launch)


def build_start(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("names", nargs="+", metavar="NAME")
    x.set_defaults(func=_start)


def _stop_flags(x: argparse.ArgumentParser) -> None:
    x.add_argument("names", nargs="+", metavar="NAME")
    x.add_argument("-f", "--force", action="store_true", help="kill instead of a clean shutdown")
    x.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for shutdown")


def build_stop(x: argparse.ArgumentParser, words: list[str]) -> None:
    _stop_flags(x)
    x.set_defaults(func=_stop)


def build_restart(x: argparse.ArgumentParser, words: list[str]) -> None:
    _stop_flags(x)
    x.set_defaults(func=_restart)


def build_delete(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("names", nargs="+", metavar="NAME")
    x.add_argument("-f", "--force", action="store_true", help="stop a running instance first")
    x.set_defaults(func=_delete)


def build_list(x: argparse.ArgumentParser, words: list[str]) -> None:
    add_format(x)
    x.set_defaults(func=_list)


def build_exec(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable")
    x.add_argument("--cwd", help="working directory inside the instance")
    x.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    x.set_defaults(func=_exec)
