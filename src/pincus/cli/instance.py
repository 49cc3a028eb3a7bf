"""pincus init/launch/start/stop/restart/delete/list/info/exec

Over 500 lines and whole: the CLI keeps one module per command group, and this is the instance group.
"""

from __future__ import annotations

import posix
import sys

from pincus.cli.client import ClientError, q
from pincus.cli.common import add_format, key_values
from pincus.cli.output import render

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
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


def _device_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """-d DEVICE,KEY=VALUE[,KEY=VALUE...]; a piece without "=" continues the previous value
    (as in ipv4.routes=10.250.1.0/24,10.250.2.0/24)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        device, _, rest = item.partition(",")
        if not device or "=" not in rest:
            raise ClientError(f'Bad device override syntax, expecting DEVICE,KEY=VALUE: "{item}"')
        keys = out.setdefault(device, {})
        last = ""
        for piece in rest.split(","):
            key, eq, value = piece.partition("=")
            if eq and key:
                keys[key] = value
                last = key
            else:
                keys[last] += "," + piece
    return out


def _overridden_devices(
    c: Client, profiles: list[str], local: dict[str, dict[str, str]], overrides: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """Each overridden device: its config from the profiles (the last one holding it wins) or
    from -n, with the given keys changed; as the instance's own devices."""
    from_profiles: dict[str, dict[str, str]] = {}
    for profile in profiles if set(overrides) - set(local) else ():
        for dev_name, dev in (c.request("GET", f"/1.0/profiles/{q(profile)}").get("devices") or {}).items():
            from_profiles[dev_name] = dict(dev)
    out: dict[str, dict[str, str]] = {}
    for dev_name, keys in overrides.items():
        base = local.get(dev_name) or from_profiles.get(dev_name)
        if base is None:
            raise ClientError(f'Device "{dev_name}" not found in profiles')
        out[dev_name] = {**base, **keys}
    return out


def _image_source(c: Client, image: str) -> dict[str, str]:
    """As Incus's client: IMAGE is an alias if the server knows one by that name, else a fingerprint."""
    try:
        c.request("GET", f"/1.0/images/aliases/{q(image)}")
    except ClientError as e:
        if "not found" not in str(e):
            raise
        return {"type": "image", "fingerprint": image}
    return {"type": "image", "alias": image}


def _root_on(c: Client, profiles: list[str], pool: str) -> dict[str, dict[str, str]]:
    """-s POOL: the profiles' root disk (or a new "root") with its pool replaced, as Incus's client."""
    name, root = "root", {"type": "disk", "path": "/"}
    for profile in profiles:
        for dev_name, cfg in (c.request("GET", f"/1.0/profiles/{q(profile)}").get("devices") or {}).items():
            if cfg.get("type") == "disk" and cfg.get("path") == "/":
                name, root = dev_name, dict(cfg)
    return {name: {**root, "pool": pool}}


def _create(args: argparse.Namespace, c: Client) -> str:
    names: list[str] = args.names
    if len(names) > 2:
        raise ClientError("Too many arguments: pincus init [IMAGE] NAME")
    image, name = (names[0], names[1]) if len(names) == 2 else (None, names[0])
    path(name)
    if image is not None and args.empty:
        raise ClientError("--empty cannot be combined with an image")
    if args.profiles and args.no_profiles:
        raise ClientError("--no-profiles cannot be combined with -p")
    profiles = [] if args.no_profiles else (args.profiles or ["default"])
    devices: dict[str, dict[str, str]] = {}
    if args.network:
        devices["eth0"] = {"type": "nic", "network": args.network, "name": "eth0"}
    if args.storage:
        devices.update(_root_on(c, profiles, args.storage))
    overrides = _device_overrides(args.device)
    if overrides:
        devices.update(_overridden_devices(c, profiles, devices, overrides))
    body: dict[str, Any] = {
        "name": name,
        "type": VM if args.vm else CONTAINER,
        "description": args.description or "",
        "config": key_values(args.config, allow_pair=False),
        "devices": devices,
    }
    if args.profiles or args.no_profiles:
        body["profiles"] = list(args.profiles)
    body["source"] = _image_source(c, image) if image is not None else {"type": "none"}
    print(f"Creating {name}", flush=True)
    c.request("POST", "/1.0/instances" + (f"?target={q(args.target)}" if args.target else ""), body)
    return name


def _init(args: argparse.Namespace, c: Client) -> None:
    _create(args, c)


def _launch(args: argparse.Namespace, c: Client) -> None:
    name = _create(args, c)
    print(f"Starting {name}", flush=True)
    _change_state(c, name, "start", DEFAULT_TIMEOUT, False)


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


def _move(args: argparse.Namespace, c: Client) -> None:
    """Incus's grammar: `move NAME --target MEMBER` within a cluster, `move NAME NEWNAME` a rename."""
    if args.target:
        if args.new_name not in (None, args.name):
            raise ClientError("Move and rename separately: `move NAME --target MEMBER` keeps the name")
        body = {"name": args.name, "migration": True, "live": False}
        c.request("POST", f"{path(args.name)}?target={q(args.target)}", body)
    elif args.new_name:
        c.request("POST", path(args.name), {"name": args.new_name})
    else:
        raise ClientError("move needs NEWNAME, or --target MEMBER")


def _rename(args: argparse.Namespace, c: Client) -> None:
    c.request("POST", path(args.name), {"name": args.new_name})


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


def _when(stamp: Any) -> str:
    """An API timestamp as Incus's list shows it ("2006/01/02 15:04 UTC"); "" for none."""
    if not stamp or str(stamp).startswith("0001-"):
        return ""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).strftime("%Y/%m/%d %H:%M %Z")
    except ValueError:
        return str(stamp)


def _type_cell(inst: dict[str, Any]) -> str:
    kind = str(inst.get("type", "")).upper()
    return f"{kind} (EPHEMERAL)" if inst.get("ephemeral") else kind


# Incus's column letters: header, and the cell of an instance (with its state).
COLUMNS: dict[str, tuple[str, Callable[[dict[str, Any], dict[str, Any]], str]]] = {
    "n": ("NAME", lambda i, st: str(i["name"])),
    "s": ("STATE", lambda i, st: str(i.get("status", "")).upper()),
    "4": ("IPV4", lambda i, st: "\n".join(addresses(st)[0])),
    "6": ("IPV6", lambda i, st: "\n".join(addresses(st)[1])),
    "t": ("TYPE", lambda i, st: _type_cell(i)),
    "S": ("SNAPSHOTS", lambda i, st: str(len(i.get("snapshots") or []))),
    "P": ("PROFILES", lambda i, st: "\n".join(i.get("profiles") or [])),
    "l": ("LAST USED AT", lambda i, st: _when(i.get("last_used_at"))),
    "p": ("PID", lambda i, st: str(st["pid"]) if st.get("pid") else ""),
    "a": ("ARCHITECTURE", lambda i, st: str(i.get("architecture", ""))),
    "c": ("CREATED AT", lambda i, st: _when(i.get("created_at"))),
    "d": ("DESCRIPTION", lambda i, st: str(i.get("description", ""))),
    "L": ("LOCATION", lambda i, st: str(i.get("location", ""))),
}
DEFAULT_COLUMNS = "ns46t"
_NEEDS_STATE = set("46p")


def _columns(spec: str) -> str:
    letters = spec.replace(",", "")
    for ch in letters:
        if ch not in COLUMNS:
            raise ClientError(f"Unknown column shorthand char '{ch}' in '{spec}' (one of {''.join(COLUMNS)})")
    if not letters:
        raise ClientError("No columns given")
    return letters


def _matches(pattern: str, value: str) -> bool:
    """Incus's filter match: the whole value against PATTERN as a regex, else equality."""
    import re

    anchored = pattern if ("^" in pattern or "$" in pattern) else f"^{pattern}$"
    try:
        return re.search(anchored, value) is not None
    except re.error:
        return pattern == value


def shown(inst: dict[str, Any], filters: list[str]) -> bool:
    """Whether INST passes every filter: NAME (a regex on the whole name, or a prefix of it),
    type=, status= (case-insensitive), or KEY=VALUE / config.KEY=VALUE on its config."""
    for f in filters:
        key, eq, value = f.partition("=")
        if not eq:
            name = str(inst["name"])
            if not (_matches(f, name) or name.startswith(f)):
                return False
        elif key == "type":
            kind = str(inst.get("type", "")).lower()
            if value.lower() not in (kind, "vm" if kind == VM else kind):
                return False
        elif key in ("status", "state"):
            if value.lower() != str(inst.get("status", "")).lower():
                return False
        else:
            key = key.removeprefix("config.")
            config = inst.get("expanded_config") or inst.get("config") or {}
            if key not in config or not _matches(value, str(config[key])):
                return False
    return True


def _list(args: argparse.Namespace, c: Client) -> None:
    letters = _columns(args.columns)
    need_state = args.format in ("json", "yaml") or bool(_NEEDS_STATE & set(letters))
    # recursion=2 carries each instance's state; an older daemon leaves it out (asked below).
    insts: list[dict[str, Any]] = c.request("GET", f"/1.0/instances?recursion={2 if need_state else 1}")
    insts = sorted((i for i in insts if shown(i, args.filters)), key=lambda i: str(i["name"]))
    if args.columns == DEFAULT_COLUMNS and any(i.get("location") not in (None, "", "none") for i in insts):
        letters += "L"  # as Incus: a cluster's list says where each instance lives
    rows = []
    for inst in insts:
        state = inst.get("state")
        if not isinstance(state, dict):
            state = {}
            if need_state and inst.get("status") == "Running":
                try:
                    state = c.request("GET", f"{path(inst['name'])}/state")
                except ClientError:  # deleted or stopped since the listing: show it without addresses
                    state = {}
        if need_state:
            inst["state"] = state
        rows.append([COLUMNS[ch][1](inst, state) for ch in letters])
    render(args.format, [COLUMNS[ch][0] for ch in letters], rows, insts)


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
    if nic.get("owns"):
        out.append(f"{pad}Owns:")
        out += [f"{pad}  {item}" for item in nic["owns"]]
    return out


def info(args: argparse.Namespace, c: Client) -> None:
    """`pincus info NAME` (main routes the argument-less form to the server's info)."""
    inst = c.request("GET", path(args.name))
    state = c.request("GET", f"{path(args.name)}/state")
    print(info_text(inst, state))


# --- exec ----------------------------------------------------------------------------------------


TERMINAL_FLAGS = {"-t": "t", "--force-interactive": "t", "-T": "T", "--force-noninteractive": "T"}


def split_exec_args(rest: list[str]) -> tuple[dict[str, str], str | None, str, list[str]]:
    """--env/--cwd/-t/-T given after NAME, then the command: (env, cwd, terminal mode, command).

    argparse cannot do this itself: it would take the command's own options for ours. As
    with Incus, the command starts at `--` or at the first word that is not one of our flags.
    """
    env: dict[str, str] = {}
    cwd: str | None = None
    mode = ""
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "--":
            return env, cwd, mode, rest[i + 1 :]
        flag, eq, value = word.partition("=")
        if word in TERMINAL_FLAGS:
            mode = TERMINAL_FLAGS[word]
        elif flag in ("--env", "--cwd"):
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
            return env, cwd, mode, rest[i:]
        i += 1
    return env, cwd, mode, []


def _exec(args: argparse.Namespace, c: Client) -> None:
    path(args.name)
    env = key_values(args.env, allow_pair=False)
    more_env, cwd, mode, command = split_exec_args(args.command)
    env.update(more_env)
    if not command:
        raise ClientError("exec needs a command: pincus exec NAME -- COMMAND [ARGS...]")
    # The command gets this process's own stdin, stdout and stderr (passed to the daemon), so it
    # has a terminal exactly when we do: -T asks for nothing more, -t needs one to hand over.
    if (mode or args.terminal) == "t" and not posix.isatty(0):
        raise ClientError("-t needs a terminal on standard input: pincus passes its own to the command")
    sys.stdout.flush()
    sys.exit(c.exec(args.name, command, env, cwd or args.cwd))


# --- parsers (main.COMMANDS names these commands and their help) ---------------------------------


def _create_flags(x: argparse.ArgumentParser) -> None:
    x.usage = (
        "%(prog)s [IMAGE] NAME [--vm] [--empty] [-p PROFILE]... [--no-profiles] [-c KEY=VALUE]... "
        "[-n NETWORK] [-d DEVICE,KEY=VALUE]... [-s POOL] [--description TEXT] [--target MEMBER]"
    )
    x.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="IMAGE NAME (an image alias or fingerprint), or NAME alone for an empty root",
    )
    x.add_argument("--vm", action="store_true", help="a virtual machine instead of a container")
    x.add_argument("--empty", action="store_true", help="no image: an empty root volume")
    x.add_argument(
        "-c", "--config", action="append", default=[], metavar="KEY=VALUE", help="a config key (repeatable)"
    )
    x.add_argument(
        "-p",
        "--profile",
        dest="profiles",
        action="append",
        default=[],
        metavar="PROFILE",
        help="a profile (repeatable)",
    )
    x.add_argument("--no-profiles", action="store_true", help="no profiles, not even default")
    x.add_argument("-n", "--network", help="add NIC eth0 on this network")
    x.add_argument(
        "-d",
        "--device",
        action="append",
        default=[],
        metavar="DEVICE,KEY=VALUE",
        help="override keys of a device from the profiles or -n (repeatable)",
    )
    x.add_argument("-s", "--storage", metavar="POOL", help="storage pool of the root disk")
    x.add_argument("--description", default="")
    x.add_argument("--target", help="the cluster member to create it on")


def build_init(x: argparse.ArgumentParser, words: list[str]) -> None:
    _create_flags(x)
    x.set_defaults(func=_init)


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


def build_move(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name", metavar="NAME")
    x.add_argument("new_name", nargs="?", metavar="NEWNAME", help="a new name (a rename)")
    x.add_argument("--target", help="the cluster member to move a stopped instance to")
    x.set_defaults(func=_move)


def build_rename(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name", metavar="NAME")
    x.add_argument("new_name", metavar="NEWNAME")
    x.set_defaults(func=_rename)


def build_list(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument(
        "filters",
        nargs="*",
        metavar="FILTER",
        help="NAME (regex or prefix), type=, status=, or KEY=VALUE on config keys; all must match",
    )
    x.add_argument(
        "-c",
        "--columns",
        default=DEFAULT_COLUMNS,
        help="columns, Incus's letters: n name, s state, 4 IPv4, 6 IPv6, t type, S snapshots, P profiles, "
        "l last used, p PID, a architecture, c created, d description (default: ns46t)",
    )
    add_format(x)
    x.set_defaults(func=_list)


def build_exec(x: argparse.ArgumentParser, words: list[str]) -> None:
    x.add_argument("name")
    x.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable")
    x.add_argument("--cwd", help="working directory inside the instance")
    x.add_argument("-t", "--force-interactive", dest="terminal", action="store_const", const="t", default="",
                   help="require a terminal (the command gets this one)")  # fmt: skip
    x.add_argument("-T", "--force-noninteractive", dest="terminal", action="store_const", const="T",
                   help="no terminal of its own (the command gets our stdio as it is)")  # fmt: skip
    # nargs="..." is argparse.REMAINDER, spelt out so that parsing needs no argparse (fastparse.py).
    x.add_argument("command", nargs="...", metavar="-- COMMAND [ARGS...]")
    x.set_defaults(func=_exec)
