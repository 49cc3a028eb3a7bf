"""Network orchestration: load -> validate -> lock -> driver -> persist -> event."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pincus import netstate
from pincus.config.network_keys import MEMBER_SPECIFIC
from pincus.config.validators import is_interface_name
from pincus.db import instances as db_instances
from pincus.db import networks as db_networks
from pincus.db import profiles as db_profiles
from pincus.db.networks import NetworkRecord
from pincus.errors import ConflictError, HostError, InvalidError, NotFoundError, PincusError
from pincus.host import addresses, links, sysfs
from pincus.host.facade import Host
from pincus.networks.base import NetworkDriver
from pincus.networks.registry import driver_class
from pincus.reverter import Reverter
from pincus.server import etag
from pincus.server.instances import description_of
from pincus.state import State

if TYPE_CHECKING:
    from pincus.server.cluster import Cluster

log = logging.getLogger(__name__)

# Seconds between two checks that every dnsmasq still runs (the environment may stretch it, as the
# drift tests do to see a dead dnsmasq before the supervisor restarts it).
SUPERVISE_INTERVAL = float(os.environ.get("PINCUS_SUPERVISE_INTERVAL") or 1.0)


_SYSCTL_SAFE = re.compile(r"[A-Za-z0-9_.-]+")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidError("Network name is required")
    try:
        is_interface_name(name)
    except ValueError as e:
        raise InvalidError(f"Invalid network name: {e}") from None
    if not _SYSCTL_SAFE.fullmatch(name):
        # The bridge's name is a path under /proc/sys/net: refused here, before anything is torn down.
        raise InvalidError(
            f'Invalid network name "{name}": only ASCII letters, digits, "_", "-" and "." are allowed'
        )
    return name


def _check_config(config: object) -> dict[str, str]:
    if config is None:
        return {}
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise InvalidError("Network config must be a map of string keys to string values")
    out: dict[str, str] = {}
    for k, v in config.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, int):
            v = str(v)
        if not isinstance(v, str):
            raise InvalidError(f'Invalid value for key "{k}": must be a string')
        if "\0" in k or "\0" in v:
            raise InvalidError(f"Invalid value for key {json.dumps(k)}: keys and values may not contain NUL")
        out[k] = v
    return out


def _interface(value: str | None) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    """An address key's value as an interface; None for absent, "none", "auto" or garbage."""
    try:
        return ipaddress.ip_interface(value) if value else None
    except ValueError:
        return None


def _allocation(
    address: str, used_by: str, type_: str, nat: bool, hwaddr: str, network: str
) -> dict[str, Any]:
    return {
        "address": address,
        "used_by": used_by,
        "type": type_,
        "nat": nat,
        "hwaddr": hwaddr,
        "network": network,
    }


class Networks:
    def __init__(self, state: State) -> None:
        self.state = state
        self.lock = threading.RLock()
        self._stop_supervisor = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._supervise_errors: dict[str, str] = {}  # network -> last failure logged
        # Set by the server when this daemon is a cluster member: networks then exist per member.
        self.cluster: Cluster | None = None

    @property
    def host(self) -> Host:
        """The door to the host (state.host): every host call goes through it."""
        return self.state.host

    # --- reading ---------------------------------------------------------------------------------

    def _load(self, name: str) -> NetworkRecord:
        rec = db_networks.get(self.state.store, name)
        if rec is None:
            raise NotFoundError(f'Network "{name}" not found')
        return rec

    def driver(self, rec: NetworkRecord) -> NetworkDriver:
        return driver_class(rec.type)(self.state, rec.name, dict(rec.config))

    def _naming_keys(self, name: str) -> tuple[str, ...]:
        """The device keys that put a device on network NAME: `network`, and for a managed
        bridge also `parent` (nictype=bridged on the bridge itself)."""
        rec = db_networks.get(self.state.store, name)
        return ("network", "parent") if rec is not None and rec.type == "bridge" else ("network",)

    def _profiles_using(self, name: str) -> list[str]:
        keys = self._naming_keys(name)
        return [
            p.name
            for p in db_profiles.list_all(self.state.store)
            if any(dev.get(k) == name for dev in p.devices.values() for k in keys)
        ]

    def instance_users(self, name: str) -> list[str]:
        """Instances with a device on this network, their own or from one of their profiles."""
        users = set(db_instances.network_users(self.state.store, name, self._naming_keys(name)))
        for profile in self._profiles_using(name):
            users.update(db_profiles.users(self.state.store, profile))
        return sorted(users)

    def network_users(self, name: str) -> list[str]:
        """OVN networks whose uplink is NAME."""
        return [
            r.name
            for r in db_networks.list_all(self.state.store)
            if r.type == "ovn" and r.config.get("network") == name
        ]

    def used_by(self, name: str) -> list[str]:
        return (
            [f"/1.0/instances/{n}" for n in self.instance_users(name)]
            + [f"/1.0/profiles/{p}" for p in self._profiles_using(name)]
            + [f"/1.0/networks/{n}" for n in self.network_users(name)]
        )

    def record(self, name: str) -> NetworkRecord:
        return self._load(name)

    def to_api(self, rec: NetworkRecord) -> dict[str, Any]:
        status, locations = "Created", ["none"]
        if self._clustered():
            states = db_networks.member_states(self.state.store, rec.name)
            locations = sorted(m for m, (state, _) in states.items() if state == "created")
            if rec.status == "pending":
                status = "Pending"
            elif any(state == "errored" for state, _ in states.values()):
                status = "Errored"
        out: dict[str, Any] = {
            "name": rec.name,
            "description": rec.description,
            "type": rec.type,
            "managed": True,
            "status": status,
            "config": dict(sorted(rec.config.items())),
            "used_by": self.used_by(rec.name),
            "locations": locations,
        }
        if rec.status != "pending":
            out.update(self.driver(rec).info())
        return out

    # --- cluster members: a network is one record, made on each member's host -------------------

    def _clustered(self) -> bool:
        return self.cluster is not None and self.cluster.clustered

    def _require_cluster(self, name: str) -> None:
        if not self._clustered():
            raise ConflictError(f'Network "{name}": this server is not clustered (network create makes it)')

    def here(self) -> list[NetworkRecord]:
        """The networks this daemon runs on its host: on a cluster member, those created here."""
        records = db_networks.list_all(self.state.store)
        if not self._clustered():
            return records
        assert self.cluster is not None
        member = self.cluster.name
        return [
            r
            for r in records
            if r.status != "pending"
            and db_networks.member_states(self.state.store, r.name).get(member, ("",))[0] == "created"
        ]

    def get_on(self, name: str, target: str) -> dict[str, Any]:
        """`network show NAME --target MEMBER`: the network as MEMBER sees it (its own keys)."""
        if self.cluster is None or not self.cluster.clustered:
            raise InvalidError("--target needs a cluster: this server is not clustered")
        if target == self.cluster.name:
            return self.get(name)
        return dict(self.cluster.call(target, "GET", f"/1.0/networks/{quote(name, safe='')}"))

    def _create_pending(self, req: dict[str, Any], target: str) -> None:
        """`network create NAME --target MEMBER KEY=VALUE...`: MEMBER's own keys, nothing on any host."""
        assert self.cluster is not None
        name = _check_name(req.get("name"))
        type_ = req.get("type") or "bridge"
        config = _check_config(req.get("config"))
        if target not in self.cluster.statuses():
            raise NotFoundError(f'Cluster member "{target}" not found')
        for key in sorted(config):
            if key not in MEMBER_SPECIFIC:
                raise InvalidError(f'Config key "{key}" may not be used as member-specific key')
        with self.lock:
            rec = db_networks.get(self.state.store, name)
            if rec is None:
                driver_class(str(type_))  # an unknown type is refused before anything is recorded
                db_networks.create(
                    self.state.store, NetworkRecord(name, str(type_), description_of(req), {}, "pending")
                )
            elif rec.status != "pending":
                raise ConflictError(f'Network "{name}" is already created')
            elif rec.type != type_:
                raise ConflictError(f'Network "{name}" is pending with type "{rec.type}", not "{type_}"')
            db_networks.set_member_config(self.state.store, name, target, config)
            db_networks.set_member_state(self.state.store, name, target, "pending")

    def _create_everywhere(self, req: dict[str, Any]) -> None:
        """`network create NAME` on a cluster: the record, then the network on every member's host
        (each with its own keys); a member that fails is Errored, the others keep theirs."""
        assert self.cluster is not None
        name = _check_name(req.get("name"))
        type_ = req.get("type") or "bridge"
        if not isinstance(type_, str):
            raise InvalidError("Network type must be a string")
        config = _check_config(req.get("config"))
        for key in sorted(config):
            if key in MEMBER_SPECIFIC:
                raise InvalidError(
                    f'Config key "{key}" is member-specific: set it on each member with --target first'
                )
        with self.lock:
            rec = db_networks.get(self.state.store, name)
            if rec is not None and rec.status != "pending":
                raise ConflictError(f'Network "{name}" already exists')
            if rec is not None and rec.type != type_:
                raise ConflictError(f'Network "{name}" is pending with type "{rec.type}", not "{type_}"')
            own = db_networks.member_config(self.state.store, name, self.cluster.name) if rec else {}
            drv = driver_class(type_)(self.state, name, {**config, **own})
            others = [
                r for r in db_networks.list_all(self.state.store) if r.name != name and r.status != "pending"
            ]
            drv.prepare_config(others, creating=True)  # "auto" becomes one subnet for every member
            drv.validate_config(others)
            drv.validate_shared_environment()
            shared = {k: v for k, v in drv.config.items() if k not in MEMBER_SPECIFIC}
            if rec is None:
                db_networks.create(
                    self.state.store, NetworkRecord(name, type_, description_of(req), shared, "pending")
                )
            else:
                db_networks.replace(self.state.store, name, description_of(req, rec.description), shared)
            db_networks.set_status(self.state.store, name, "created")
        failed = {}
        for member in drv.member_order(sorted(self.cluster.statuses())):
            try:
                if member == self.cluster.name:
                    self.apply_here(name)
                else:
                    self.cluster.call(member, "POST", f"/internal/networks/{quote(name, safe='')}/apply")
            except PincusError as e:
                failed[member] = str(e)
                db_networks.set_member_state(self.state.store, name, member, "errored", str(e))
        log.info("Created network %s on the cluster", name, extra={"ctx": {"network": name, "type": type_}})
        self.state.events.lifecycle("network-created", f"/1.0/networks/{name}", type=type_)
        if failed:
            raise HostError(
                f'Network "{name}" is Errored on {", ".join(sorted(failed))} (created on the others): '
                + "; ".join(f"{m}: {e}" for m, e in sorted(failed.items()))
            )

    def apply_here(self, name: str) -> None:
        """Make network NAME on this member's host, as this member's view of it says."""
        self._require_cluster(name)
        assert self.cluster is not None
        member = self.cluster.name
        with self.lock:
            rec = self._load(name)
            if rec.status == "pending":
                raise ConflictError(f'Network "{name}" is pending: create it without --target first')
            if db_networks.member_states(self.state.store, name).get(member, ("",))[0] == "created":
                return
            drv = self.driver(rec)
            others = [r for r in self.here() if r.name != name]
            try:
                drv.validate_config(others)
                drv.validate_environment()
                drv.start()
            except PincusError as e:
                db_networks.set_member_state(self.state.store, name, member, "errored", str(e))
                raise
            db_networks.set_member_state(self.state.store, name, member, "created")
        log.info("Created network %s on this member", name, extra={"ctx": {"network": name}})

    def remove_here(self, name: str) -> None:
        """Take network NAME off this member's host (it stays recorded until every member did)."""
        self._require_cluster(name)
        assert self.cluster is not None
        with self.lock:
            rec = self._load(name)
            state = db_networks.member_states(self.state.store, name).get(self.cluster.name, ("",))[0]
            if rec.status != "pending" and state == "created":
                self.driver(rec).remove()
            db_networks.set_member_state(self.state.store, name, self.cluster.name, "removed")

    def _delete_everywhere(self, name: str) -> None:
        assert self.cluster is not None
        with self.lock:
            drv = self.driver(self._load(name))
            self._refuse_in_use(name, "delete")
        statuses = self.cluster.statuses()
        for member in reversed(drv.member_order(sorted(statuses))):
            if member == self.cluster.name:
                self.remove_here(name)
            elif statuses[member] == "Offline":
                log.warning("Network %s stays on Offline member %s's host", name, member)
            else:
                self.cluster.call(member, "DELETE", f"/internal/networks/{quote(name, safe='')}/apply")
        db_networks.delete(self.state.store, name)
        log.info("Deleted network %s from the cluster", name, extra={"ctx": {"network": name}})
        self.state.events.lifecycle("network-deleted", f"/1.0/networks/{name}")

    def get(self, name: str) -> dict[str, Any]:
        if (rec := db_networks.get(self.state.store, name)) is not None:
            return self.to_api(rec)
        if self.host(sysfs.interface_exists, name):
            return self._unmanaged(name)
        raise NotFoundError(f'Network "{name}" not found')

    def _unmanaged(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "description": "",
            "type": self.host(sysfs.interface_kind, name),
            "managed": False,
            "status": "",
            "config": {},
            "used_by": [],
            "locations": ["none"],
        }

    def list_all(self) -> list[dict[str, Any]]:
        managed = [self.to_api(r) for r in db_networks.list_all(self.state.store)]
        names = {n["name"] for n in managed}
        host = [self._unmanaged(i) for i in self.host(sysfs.list_interfaces) if i not in names]
        return sorted(managed + host, key=lambda n: str(n["name"]))

    def state_of(self, name: str) -> dict[str, Any]:
        """Incus's network state of a managed network's host interface, or of any host interface."""
        rec = db_networks.get(self.state.store, name)
        ifname = self.driver(rec).host_interface() if rec is not None else name
        link = (
            self.host(links.get_link, ifname)
            if ifname and self.host(sysfs.interface_exists, ifname)
            else None
        )
        if link is None:
            if rec is None:
                raise NotFoundError(f'Network "{name}" not found')
            raise NotFoundError(f'Interface "{ifname}" of network "{name}" does not exist')
        bridge = self.host(sysfs.bridge_state, ifname)
        return {
            "addresses": netstate.cidr_objects(self.host(addresses.link_addresses, ifname)),
            "counters": netstate.counters(self.host(links.link_stats, ifname)),
            "hwaddr": link.mac,
            "mtu": link.mtu,
            "state": "up" if link.up else "down",
            "type": "loopback" if self.host(sysfs.interface_kind, ifname) == "loopback" else "broadcast",
            "bond": None,
            "bridge": None
            if bridge is None
            else {
                "id": bridge.id,
                "stp": bridge.stp,
                "forward_delay": bridge.forward_delay,
                "vlan_default": bridge.vlan_default,
                "vlan_filtering": bridge.vlan_filtering,
                "upper_devices": list(bridge.upper_devices),
            },
            "vlan": None,
            "ovn": None,
            # pincus's own: what the network made on the host (`network info`'s "Owns:").
            "owns": [str(o) for o in self.driver(rec).owned()] if rec is not None else [],
        }

    def allocations(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What `network list-allocations` shows: each managed network's own addresses, then the
        static addresses and MACs of the instance NICs on it (INSTANCES as the API shows them)."""
        out: list[dict[str, Any]] = []
        for rec in db_networks.list_all(self.state.store):
            nat = {4: rec.config.get("ipv4.nat") == "true", 6: rec.config.get("ipv6.nat") == "true"}
            for family in (4, 6):
                iface = _interface(rec.config.get(f"ipv{family}.address"))
                if iface is not None:
                    out.append(
                        _allocation(
                            str(iface), f"/1.0/networks/{rec.name}", "network", nat[family], "", rec.name
                        )
                    )
            for inst in instances:
                config = inst.get("expanded_config") or inst.get("config") or {}
                devices = inst.get("expanded_devices") or inst.get("devices") or {}
                for dev_name, dev in sorted(devices.items()):
                    if dev.get("type") != "nic" or dev.get("network") != rec.name:
                        continue
                    hwaddr = dev.get("hwaddr") or config.get(f"volatile.{dev_name}.hwaddr", "")
                    used_by = f"/1.0/instances/{inst['name']}"
                    for family in (4, 6):
                        iface = _interface(dev.get(f"ipv{family}.address"))
                        if iface is not None:
                            address = f"{iface.ip}/{iface.max_prefixlen}"
                            out.append(
                                _allocation(address, used_by, "instance", nat[family], hwaddr, rec.name)
                            )
        return out

    # --- changing --------------------------------------------------------------------------------

    def create(self, req: dict[str, Any], target: str | None = None) -> None:
        if self._clustered():
            if target:
                self._create_pending(req, target)
            else:
                self._create_everywhere(req)
            return
        if target:
            raise InvalidError("--target needs a cluster: this server is not clustered")
        name = _check_name(req.get("name"))
        type_ = req.get("type") or "bridge"
        if not isinstance(type_, str):
            raise InvalidError("Network type must be a string")
        config = _check_config(req.get("config"))
        description = description_of(req)
        with self.lock:
            if db_networks.get(self.state.store, name) is not None:
                raise ConflictError(f'Network "{name}" already exists')
            drv = driver_class(type_)(self.state, name, config)
            others = db_networks.list_all(self.state.store)
            drv.prepare_config(others, creating=True)  # e.g. "auto" becomes a subnet before it is stored
            drv.validate_config(others)
            drv.validate_environment()
            with Reverter() as undo:
                drv.start()
                undo.add(drv.remove)
                db_networks.create(self.state.store, NetworkRecord(name, type_, description, drv.config))
                undo.success()
        log.info("Created network %s", name, extra={"ctx": {"network": name, "type": type_}})
        self.state.events.lifecycle("network-created", f"/1.0/networks/{name}", type=type_)

    def update(self, name: str, req: dict[str, Any], patch: bool, if_match: str | None = None) -> None:
        if self._clustered():
            raise ConflictError(
                f'Changing network "{name}" on a cluster is not supported yet: delete and create it again'
            )
        with self.lock:
            rec = self._load(name)
            etag.check_if_match(if_match, etag.network_fields(self.to_api(rec)))
            new_config = _check_config(req.get("config"))
            if patch:
                new_config = {**rec.config, **new_config}
            new_config = {k: v for k, v in new_config.items() if v != ""}  # as Incus: an empty value unsets
            description = description_of(req, rec.description)
            if "type" in req and req["type"] not in (None, "", rec.type):
                raise InvalidError(f'Network "{name}" is of type "{rec.type}"; the type cannot be changed')
            users = self.instance_users(name)
            self._check_update_allowed(rec, new_config, users)
            others = [r for r in db_networks.list_all(self.state.store) if r.name != name]
            drv = driver_class(rec.type)(self.state, name, new_config)
            drv.prepare_config(others, creating=False)
            drv.validate_config(others)
            drv.validate_environment()
            drv.update(dict(rec.config), users)
            db_networks.replace(self.state.store, name, description, drv.config)
        log.info("Updated network %s", name, extra={"ctx": {"network": name}})
        self.state.events.lifecycle("network-updated", f"/1.0/networks/{name}")

    def _check_update_allowed(self, rec: NetworkRecord, new: dict[str, str], users: list[str]) -> None:
        ovn_users = self.network_users(rec.name) if rec.type == "physical" else []
        for key in ("parent", "ipv4.gateway", "ipv4.ovn.ranges"):
            if ovn_users and rec.config.get(key) != new.get(key):
                raise ConflictError(
                    f'Cannot change "{key}" of network "{rec.name}" while it is the uplink of '
                    f"{', '.join(ovn_users)}"
                )
        if not users:
            return
        for key in ("parent", "vlan"):
            if rec.type == "physical" and rec.config.get(key) != new.get(key):
                raise ConflictError(
                    f'Cannot change "{key}" of network "{rec.name}" while it is in use by {", ".join(users)}'
                )

    def rename(self, name: str, new_name: str) -> None:
        if self._clustered():
            raise ConflictError(f'Renaming network "{name}" on a cluster is not supported yet')
        _check_name(new_name)
        with self.lock:
            rec = self._load(name)
            if db_networks.get(self.state.store, new_name) is not None:
                raise ConflictError(f'Network "{new_name}" already exists')
            self._refuse_in_use(rec.name, "rename")
            with Reverter() as undo:
                renamed = self.driver(rec).rename(new_name)
                undo.add(renamed.rename, name)
                db_networks.rename(self.state.store, name, new_name)
                undo.success()
        self.state.events.lifecycle("network-renamed", f"/1.0/networks/{new_name}", old_name=name)

    def delete(self, name: str) -> None:
        if self._clustered():
            self._delete_everywhere(name)
            return
        with self.lock:
            rec = self._load(name)
            self._refuse_in_use(name, "delete")
            self.driver(rec).remove()
            db_networks.delete(self.state.store, name)
        log.info("Deleted network %s", name, extra={"ctx": {"network": name}})
        self.state.events.lifecycle("network-deleted", f"/1.0/networks/{name}")

    def leases(self, name: str) -> list[dict[str, str]]:
        return self.driver(self._load(name)).leases()

    def _refuse_in_use(self, name: str, what: str) -> None:
        users = self.used_by(name)
        if users:
            raise ConflictError(f'Cannot {what} network "{name}": it is in use by {", ".join(users)}')

    # --- daemon start/stop -----------------------------------------------------------------------

    def start_all(self) -> None:
        if self._clustered():
            self._apply_missing()
        for rec in self.here():
            try:
                self.driver(rec).start()
            except Exception:
                log.exception("Failed to start network %s", rec.name)

    def _apply_missing(self) -> None:
        """A member that joined after a network was created makes it on its own host now."""
        assert self.cluster is not None
        for rec in db_networks.list_all(self.state.store):
            if rec.status == "pending" or self.cluster.name in db_networks.member_states(
                self.state.store, rec.name
            ):
                continue
            try:
                self.apply_here(rec.name)
            except PincusError as e:
                log.error("Network %s is Errored on this member: %s", rec.name, e)

    def stop_all(self) -> None:
        self.stop_supervisor()
        for rec in self.here():
            try:
                self.driver(rec).stop()
            except Exception:
                log.exception("Failed to stop network %s", rec.name)

    # --- supervision -----------------------------------------------------------------------------

    def start_supervisor(self) -> None:
        """A thread that restarts any managed bridge's dnsmasq that died, about once a second."""
        self._stop_supervisor.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="network-supervisor", daemon=True)
        self._supervisor.start()

    def stop_supervisor(self) -> None:
        self._stop_supervisor.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
            self._supervisor = None

    def _supervise(self) -> None:
        while not self._stop_supervisor.wait(SUPERVISE_INTERVAL):
            try:
                self.supervise_once()
            except Exception:  # the loop must outlive any one bad round
                log.exception("Network supervision failed")

    def supervise_once(self) -> None:
        # Under the lock: a create, update or delete may be stopping and starting dnsmasq itself.
        if not self.lock.acquire(timeout=SUPERVISE_INTERVAL):
            return
        try:
            for rec in self.here():
                self._supervise_network(self.driver(rec))
        finally:
            self.lock.release()

    def _supervise_network(self, drv: NetworkDriver) -> None:
        ctx = {"network": drv.name}
        try:
            pid = drv.ensure_running()
        except Exception as e:
            # Logged once per distinct failure, not every second.
            if self._supervise_errors.get(drv.name) != str(e):
                self._supervise_errors[drv.name] = str(e)
                log.error(
                    "Failed to restart %s of network %s: %s", drv.helper, drv.name, e, extra={"ctx": ctx}
                )
            return
        self._supervise_errors.pop(drv.name, None)
        if pid is not None:
            log.warning(
                "%s of network %s was not running; restarted it (pid %d)",
                drv.helper,
                drv.name,
                pid,
                extra={"ctx": {**ctx, "pid": pid}},
            )
