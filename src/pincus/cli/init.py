"""pincus admin init: set up storage pools, networks and profiles from Incus-style preseed YAML,
from answers, or (--auto) a default pool with the default profile's root disk on it.

A preseed creates what does not exist and replaces what does (pools, networks, then profiles, as
`incus admin init --preseed` does); if any step fails, the steps before it are undone in reverse.
"""

from __future__ import annotations

import sys

from pincus.cli.client import ClientError, q

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

    from pincus.cli.client import Client


def _entries(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = doc.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) and i.get("name") for i in items):
        raise ClientError(f'Preseed "{key}" must be a list of maps, each with a "name"')
    return items


def _strings(doc: Any, what: str) -> dict[str, str]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ClientError(f"Preseed {what} must be a map")
    return {str(k): ("true" if v is True else "false" if v is False else "" if v is None else str(v))
            for k, v in doc.items()}  # fmt: skip


def _devices(doc: Any, what: str) -> dict[str, dict[str, str]]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ClientError(f"Preseed {what} devices must be a map")
    return {str(name): _strings(dev, f'{what} device "{name}"') for name, dev in doc.items()}


def _existing(c: Client, path: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = c.request("GET", path)
    except ClientError as e:
        if "not found" in str(e):
            return None
        raise
    return found


def apply_preseed(c: Client, doc: dict[str, Any]) -> None:
    unsupported = [k for k in ("storage_volumes", "certificates") if doc.get(k)]
    if unsupported:
        raise ClientError(
            f"Preseed sections pincus does not support yet: {', '.join(unsupported)} (remove them)"
        )
    cluster = _cluster_section(doc)
    joining = bool(cluster and cluster.get("cluster_token"))
    if joining and any(doc.get(k) for k in ("storage_pools", "networks", "profiles")):
        raise ClientError(
            "A member joining a cluster takes its pools, networks and profiles from the cluster:"
            " remove them from the preseed"
        )
    undo: list[Callable[[], None]] = []
    try:
        if doc.get("config"):
            _server_config(c, _strings(doc["config"], '"config"'), undo)
        for pool in _entries(doc, "storage_pools"):
            _pool(c, pool, undo)
        for net in _entries(doc, "networks"):
            _network(c, net, undo)
        for profile in _entries(doc, "profiles"):
            _profile(c, profile, undo)
        if cluster:
            # Enabling or joining restarts pincusd on the cluster database: the last step.
            c.request("PUT", "/1.0/cluster", cluster)
    except ClientError:
        for step in reversed(undo):
            try:
                step()
            except ClientError as e:
                print(f"Warning: could not undo a preseed step: {e}", file=sys.stderr)
        raise
    if cluster:
        from pincus.cli.cluster import wait_clustered

        wait_clustered(c)


def _cluster_section(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Incus's `cluster:` section: `enabled: true`, `server_name`, and to join `server_address` and
    `cluster_token`; None when there is none or it says enabled: false."""
    section = doc.get("cluster")
    if not section:
        return None
    if not isinstance(section, dict):
        raise ClientError('Preseed "cluster" must be a map')
    known = {"enabled", "server_name", "server_address", "cluster_token", "cluster_address",
             "cluster_certificate", "member_config"}  # fmt: skip
    if set(section) - known:
        raise ClientError(f'Unknown keys in preseed "cluster": {", ".join(sorted(set(section) - known))}')
    if section.get("member_config") or section.get("cluster_certificate"):
        raise ClientError('Preseed "cluster": member_config and cluster_certificate are not supported yet')
    if not section.get("enabled"):
        return None
    if not section.get("server_name"):
        raise ClientError('Preseed "cluster" needs "server_name"')
    out = {"enabled": True, "server_name": str(section["server_name"])}
    for key in ("server_address", "cluster_token"):
        if section.get(key):
            out[key] = str(section[key])
    return out


def _server_config(c: Client, config: dict[str, str], undo: list[Callable[[], None]]) -> None:
    old = c.request("GET", "/1.0").get("config") or {}
    c.request("PATCH", "/1.0", {"config": config})
    previous = {k: old.get(k, "") for k in config}
    undo.append(lambda: c.request("PATCH", "/1.0", {"config": previous}))


def _network(c: Client, net: dict[str, Any], undo: list[Callable[[], None]]) -> None:
    name = str(net["name"])
    path = f"/1.0/networks/{q(name)}"
    body = {"config": _strings(net.get("config"), f'network "{name}" config'),
            "description": str(net.get("description") or "")}  # fmt: skip
    old = _existing(c, path)
    if old is None or not old.get("managed"):
        c.request("POST", "/1.0/networks", {"name": name, "type": str(net.get("type") or "bridge"), **body})
        undo.append(lambda: c.request("DELETE", path))
    else:
        c.request("PUT", path, body)
        previous = {"config": old.get("config") or {}, "description": old.get("description", "")}
        undo.append(lambda: c.request("PUT", path, previous))


def _pool(c: Client, pool: dict[str, Any], undo: list[Callable[[], None]]) -> None:
    """As Incus: a new pool is created; an existing one gets the preseed's description (its
    config was fixed at creation, so a different value is the daemon's error to give)."""
    name = str(pool["name"])
    path = f"/1.0/storage-pools/{q(name)}"
    config = _strings(pool.get("config"), f'storage pool "{name}" config')
    description = str(pool.get("description") or "")
    old = _existing(c, path)
    if old is None:
        body = {"name": name, "driver": str(pool.get("driver") or "dir"), "description": description}
        c.request("POST", "/1.0/storage-pools", {**body, "config": config})
        undo.append(lambda: c.request("DELETE", path))
    else:
        if pool.get("driver") and pool["driver"] != old.get("driver"):
            raise ClientError(f'Storage pool "{name}" exists with driver "{old.get("driver")}"')
        c.request("PATCH", path, {"config": config, "description": description})
        previous = {"description": old.get("description", "")}
        undo.append(lambda: c.request("PATCH", path, previous))


def auto(c: Client, driver: str) -> dict[str, Any]:
    """`admin init --auto`, as Incus's: a "default" pool and a root disk on it in the default profile."""
    default = c.request("GET", "/1.0/profiles/default")
    devices = dict(default.get("devices") or {})
    if not any(d.get("type") == "disk" and d.get("path") == "/" for d in devices.values()):
        devices["root"] = {"type": "disk", "path": "/", "pool": "default"}
    profile = {"name": "default", "config": default.get("config") or {}, "devices": devices,
               "description": default.get("description", "")}  # fmt: skip
    pools = [] if _existing(c, "/1.0/storage-pools/default") else [{"name": "default", "driver": driver}]
    return {"storage_pools": pools, "profiles": [profile]}


def _profile(c: Client, profile: dict[str, Any], undo: list[Callable[[], None]]) -> None:
    name = str(profile["name"])
    path = f"/1.0/profiles/{q(name)}"
    body = {
        "config": _strings(profile.get("config"), f'profile "{name}" config'),
        "devices": _devices(profile.get("devices"), f'profile "{name}"'),
        "description": str(profile.get("description") or ""),
    }
    old = _existing(c, path)
    if old is None:
        c.request("POST", "/1.0/profiles", {"name": name, **body})
        undo.append(lambda: c.request("DELETE", path))
    else:
        c.request("PUT", path, body)
        previous = {k: old.get(k) for k in ("config", "devices", "description")}
        undo.append(lambda: c.request("PUT", path, previous))


def _ask(c: Client) -> dict[str, Any]:
    """Interactive set-up: the default pool with a root disk, and a NIC for the default profile."""
    driver = input("Storage driver of the default pool (dir or btrfs, blank for dir): ").strip() or "dir"
    storage = auto(c, driver)
    apply_preseed(c, storage)
    print("Networks pincus manages:", ", ".join(
        n["name"] for n in c.request("GET", "/1.0/networks?recursion=1") if n.get("managed")
    ) or "none")  # fmt: skip
    answer = input("Network for eth0 of the default profile (blank for none): ").strip()
    if not answer:
        return {}
    default = c.request("GET", "/1.0/profiles/default")
    devices = {**(default.get("devices") or {}), "eth0": {"type": "nic", "network": answer, "name": "eth0"}}
    return {"profiles": [{"name": "default", "config": default.get("config") or {}, "devices": devices,
                          "description": default.get("description", "")}]}  # fmt: skip


def init(args: argparse.Namespace, c: Client) -> None:
    if args.preseed:
        from pincus.cli.common import read_stdin_yaml

        apply_preseed(c, read_stdin_yaml())
    elif args.auto:
        apply_preseed(c, auto(c, args.storage_backend))
    elif sys.stdin.isatty():
        apply_preseed(c, _ask(c))
    else:
        print("Nothing configured: give --preseed with YAML on stdin, or run on a terminal to be asked")
