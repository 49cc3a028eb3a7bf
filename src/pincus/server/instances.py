"""Instance orchestration: load -> validate -> lock -> drivers -> persist -> event.

Over 500 lines and whole: every operation shares the per-instance locks, profile expansion and
undo of the one Instances object; the work itself is in the instance and device drivers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from pincus.config.device_keys import INSTANCE
from pincus.config.keys import CONTAINER, VM, KeyTable, check_config, not_live
from pincus.config.validators import is_device_name, is_instance_name, parse_bool
from pincus.db import instances as db_instances
from pincus.db import profiles as db_profiles
from pincus.db.instances import InstanceRecord
from pincus.db.profiles import ProfileRecord
from pincus.devices import names as dev_names
from pincus.devices import nic_bridged
from pincus.devices.clashes import refuse_clashes_within
from pincus.errors import ConflictError, HostError, InvalidError, NotFoundError
from pincus.expansion import expand
from pincus.host import cgroups, console_log, files, links, procstat, stdio
from pincus.host.facade import Host
from pincus.instances.base import Instance
from pincus.instances.container import Container
from pincus.instances.vm import VirtualMachine
from pincus.reverter import Reverter
from pincus.server import etag
from pincus.server.image_seam import ImageLike, ImagesLike
from pincus.server.storage import DEFAULT_POOL, Storage, root_disk
from pincus.state import State

log = logging.getLogger(__name__)

# In a running instance's state dir while its devices change live (Instances._journal).
_CHANGE_JOURNAL = "changing.json"

DRIVERS: dict[str, type[Instance]] = {CONTAINER: Container, VM: VirtualMachine}
RUNNING, STOPPED = ("Running", 103), ("Stopped", 102)
DEFAULT_PROFILE = "default"
# `admin shutdown` stops this many instances at a time: a stop mostly waits on the guest's init.
SHUTDOWN_WORKERS = 32
Profiles = dict[str, ProfileRecord]


def _is_root_disk(config: dict[str, str]) -> bool:
    return config.get("type") == "disk" and config.get("path") == "/"


def strings_of(doc: object, what: str) -> dict[str, str]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidError(f"{what} must be a map")
    out: dict[str, str] = {}
    for k, v in doc.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, int):
            v = str(v)
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidError(f'{what}: value of "{k}" must be a string')
        if "\0" in k or "\0" in v:
            raise InvalidError(
                f"Invalid value for {what} key {json.dumps(k)}: keys and values may not contain NUL"
            )
        out[k] = v
    return out


def description_of(req: dict[str, Any], default: str = "") -> str:
    """A request's "description": text without NUL (absent or null keeps DEFAULT)."""
    value = req.get("description")
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidError('"description" must be a string')
    if "\0" in value:
        raise InvalidError('Invalid "description": it contains a NUL byte')
    return value


def devices_of(doc: object) -> dict[str, dict[str, str]]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidError("devices must be a map of device name to config")
    for name in doc:
        try:
            is_device_name(name)
        except ValueError as e:
            raise InvalidError(f"Invalid device name: {e}") from None
    return {name: strings_of(cfg, f'device "{name}"') for name, cfg in doc.items()}


def source_of(req: dict[str, Any]) -> dict[str, Any]:
    """A create's "source", as Incus: {"type": "image", "alias"|"fingerprint": ...} or
    {"type": "none"}; absent or null is "none"."""
    source = req.get("source")
    if source is None:
        return {"type": "none"}
    if not isinstance(source, dict):
        raise InvalidError('"source" must be an object')
    kind = source.get("type") or "none"
    if kind not in ("image", "none"):
        raise InvalidError(f'Instance source "{kind}" is not supported (image or none)')
    if kind == "image":
        for key in ("alias", "fingerprint"):
            if source.get(key) is not None and not isinstance(source[key], str):
                raise InvalidError(f'"source" "{key}" must be a string')
        if not source.get("alias") and not source.get("fingerprint"):
            raise InvalidError('An image source needs an "alias" or a "fingerprint"')
    return {**source, "type": kind}


_ARCHITECTURES = ("x86_64", "amd64")  # the names Incus's images give this host's architecture


# Set on an instance that `cluster evacuate` stopped: `cluster restore` starts it again.
EVACUATED = "volatile.evacuated"


class Instances:
    def __init__(self, state: State, storage: Storage, images: ImagesLike) -> None:
        self.state = state
        self.storage = storage
        self.images = images
        self._locks: defaultdict[str, threading.RLock] = defaultdict(threading.RLock)
        self._locks_lock = threading.Lock()
        # Held by a profile change, and by whatever changes which instances use which profiles
        # (create, update, rename, delete); always taken before any instance's lock.
        self.profiles_lock = threading.RLock()
        self._stop_monitor = threading.Event()
        # The cluster member this daemon is ('' on a single server): it runs the instances there.
        self.location = ""

    @property
    def host(self) -> Host:
        """The door to the host (state.host): every host call goes through it."""
        return self.state.host

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        with self._locks_lock:
            lock = self._locks[name]
        with lock:
            yield

    def _load(self, name: str) -> Instance:
        rec = db_instances.get(self.state.store, name)
        if rec is None:
            raise NotFoundError(f'Instance "{name}" not found')
        return self._driver(rec)

    def _check_here(self, inst: Instance) -> None:
        """Refuse to act on an instance that moved to another member while this request (routed
        here when it lived here) waited for its lock."""
        if inst.rec.location != self.location:
            raise ConflictError(
                f'Instance "{inst.name}" lives on member "{inst.rec.location}" now: ask again'
            )

    def load(self, name: str) -> Instance:
        """The driver of stored instance NAME (NotFoundError if there is none)."""
        return self._load(name)

    def _driver(self, rec: InstanceRecord, override: Profiles | None = None) -> Instance:
        """The driver of stored record REC, seeing its profiles expanded (OVERRIDE: profiles by name
        to use instead of the stored ones, for a profile change not yet made)."""
        return DRIVERS[rec.type](self.state, self.expanded(rec, override), local=rec)

    def expanded(self, rec: InstanceRecord, override: Profiles | None = None) -> InstanceRecord:
        layers = []
        for name in rec.profiles:
            profile = (override or {}).get(name) or db_profiles.get(self.state.store, name)
            if profile is None:
                raise NotFoundError(f'Profile "{name}" not found')
            layers.append((profile.config, profile.devices))
        config, devices = expand(layers, rec.config, rec.devices)
        return dataclasses.replace(rec, config=config, devices=devices)

    # --- reading ---------------------------------------------------------------------------------

    def to_api(self, inst: Instance, alive: bool | None = None) -> dict[str, Any]:
        """INST as the API shows it; ALIVE: whether it runs, when the caller just looked."""
        status, code = RUNNING if (inst.is_alive() if alive is None else alive) else STOPPED
        config = {**inst.local.config, **inst.rec.volatile}
        expanded = {**inst.rec.config, **inst.rec.volatile}
        return {
            "name": inst.name,
            "type": inst.rec.type,
            "description": inst.rec.description,
            "status": status,
            "status_code": code,
            "created_at": inst.rec.created_at,
            "architecture": "x86_64",
            "ephemeral": False,
            "stateful": False,
            "profiles": list(inst.local.profiles),
            "project": "default",
            "location": inst.rec.location or "none",
            "config": dict(sorted(config.items())),
            "devices": inst.local.devices,
            "expanded_config": dict(sorted(expanded.items())),
            "expanded_devices": inst.rec.devices,
        }

    def get(self, name: str) -> dict[str, Any]:
        return self.to_api(self._load(name))

    def location_of(self, name: str) -> str | None:
        """The member instance NAME lives on ('' on a single server), None if there is no such instance."""
        rec = db_instances.get(self.state.store, name)
        return None if rec is None else rec.location

    def get_full(self, name: str) -> dict[str, Any]:
        """`?recursion=1` on one instance (Incus's InstanceFull): its state, snapshots and backups too."""
        return self.full_view(self._load(name))

    def full_view(self, inst: Instance, usages: dict[int, procstat.Usage] | None = None) -> dict[str, Any]:
        alive = inst.is_alive()  # once: each look reads the runtime record and /proc
        return {
            **self.to_api(inst, alive),
            "state": self._state(inst, usages, alive),
            "snapshots": [],
            "backups": [],
        }

    def list_full(self) -> list[dict[str, Any]]:
        insts = [self._driver(r) for r in db_instances.list_all(self.state.store)]
        # Every container's processes from one pass over /proc, not one pass per container.
        inits = [pid for inst in insts if (pid := inst.pid_namespace_init())]
        usages = self.host(procstat.pid_namespaces_usage, inits) if inits else {}
        return [self.full_view(inst, usages) for inst in insts]

    def list_all(self) -> list[dict[str, Any]]:
        return [self.to_api(self._driver(r)) for r in db_instances.list_all(self.state.store)]

    def state_of(self, name: str) -> dict[str, Any]:
        return self._state(self._load(name))

    def _state(
        self, inst: Instance, usages: dict[int, procstat.Usage] | None = None, alive: bool | None = None
    ) -> dict[str, Any]:
        """Inst's state; USAGES: what pid_namespaces_usage said of the inits, when already read;
        ALIVE: whether it runs, when the caller just looked."""
        alive = inst.is_alive() if alive is None else alive
        status, code = RUNNING if alive else STOPPED
        usage = procstat.Usage(0, 0, 0)
        if alive:
            init = inst.pid_namespace_init()
            usage = usages[init] if usages and init in usages else inst.usage()
        return {
            "status": status,
            "status_code": code,
            "pid": inst.pid() if alive else 0,
            "processes": inst.process_count(usage) if alive else 0,
            "memory": {"usage": usage.memory_bytes},
            "cpu": {"usage": usage.cpu_ns},
            "disk": {},
            "network": inst.nic_state() if alive else {},
        }

    # --- validation ------------------------------------------------------------------------------

    def _validate(
        self,
        rec: InstanceRecord,
        override: Profiles | None = None,
        before: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """Stored record REC as it would run: its own keys, and everything once profiles expand.

        BEFORE: the expanded devices it runs with now, for a change; then only the devices whose
        expanded config differs are validated, so that a change costs what it changes and not
        what the instance already holds (a device's own checks look at its config, its network and
        the other instances; nothing of them depends on its neighbours in the instance, whose
        cross-checks are one pass in memory here)."""
        for key in rec.config:
            if key.startswith("volatile."):
                raise InvalidError(f'Key "{key}" is managed by pincus and cannot be set')
        inst = self._driver(rec, override)
        check_config(INSTANCE, inst.rec.config, f'instance "{rec.name}"', rec.type)
        inst.validate_config()
        # Each device's own checks first (a root disk naming a missing pool says so), then the
        # checks across the instance's root disks, as Incus orders them.
        if before is None:
            inst.validate_devices()
        else:
            changed = sorted(n for n, cfg in inst.rec.devices.items() if before.get(n) != cfg)
            for dev_name in changed:
                inst.device(dev_name).validate_config()
            refuse_clashes_within(inst.rec.devices, changed)
        roots = sorted(
            n for n, d in inst.rec.devices.items() if d.get("type") == "disk" and d.get("path") == "/"
        )
        if len(roots) > 1:
            raise InvalidError(f'Instance "{rec.name}" has more than one root disk ({", ".join(roots)})')
        if not roots and before is not None and (had := root_disk(before)) is not None:
            # As Incus's update ("No root device could be found"): a PUT replaces the devices
            # whole, so one that leaves them out (or drops the profile holding the root disk)
            # would take the root disk away unnoticed.
            raise InvalidError(
                f'Instance "{rec.name}" would have no root disk: keep device "{had[0]}" '
                f"(type=disk path=/ pool={had[1].get('pool', '')}) in its devices, or use a profile "
                "that has one"
            )
        on = self.storage.instance_pool(rec.name)
        wanted = inst.rec.devices[roots[0]].get("pool") if roots else None
        if on is not None and wanted is not None and wanted != on:
            raise InvalidError(
                f'Instance "{rec.name}": its root volume is on storage pool "{on}"; '
                f'moving it to pool "{wanted}" is not supported'
            )

    def _requested_profiles(self, req: dict[str, Any]) -> list[str]:
        """A create's profiles: none given (absent or null) means ["default"], as Incus; [] means none."""
        wanted = req.get("profiles")
        return self._profile_list([DEFAULT_PROFILE] if wanted is None else wanted)

    def _profile_list(self, doc: object) -> list[str]:
        if not isinstance(doc, list) or not all(isinstance(p, str) for p in doc):
            raise InvalidError('"profiles" must be a list of profile names')
        if len(set(doc)) != len(doc):
            raise InvalidError('"profiles" names a profile twice')
        for name in doc:
            if db_profiles.get(self.state.store, name) is None:
                raise NotFoundError(f'Profile "{name}" not found')
        return list(doc)

    # --- create / update / delete ----------------------------------------------------------------

    @staticmethod
    def _name_and_type(req: dict[str, Any]) -> tuple[str, str]:
        name = req.get("name")
        if not isinstance(name, str):
            raise InvalidError("Instance name is required")
        try:
            is_instance_name(name)
        except ValueError as e:
            raise InvalidError(f"Invalid instance name: {e}") from None
        type_ = req.get("type") or CONTAINER
        if not isinstance(type_, str) or type_ not in DRIVERS:
            raise InvalidError(f'Invalid instance type "{type_}" (container or virtual-machine)')
        return name, str(type_)

    def create(self, req: dict[str, Any]) -> None:
        """A new instance with its root volume: cloned from an image's volume on the root disk's
        pool (unpacked there once), or empty. The record and the volume exist together or not at all."""
        name, type_ = self._name_and_type(req)
        source = source_of(req)
        rec = InstanceRecord(
            name=name,
            type=type_,
            description=description_of(req),
            config=strings_of(req.get("config"), "config"),
            devices=devices_of(req.get("devices")),
            profiles=self._requested_profiles(req),
            location=self.location,
        )
        with self.profiles_lock, self.locked(name), Reverter() as undo:
            if db_instances.get(self.state.store, name) is not None:
                raise ConflictError(f'Instance "{name}" already exists')
            image = self._image_for(source, type_)
            self._validate(rec)
            if type_ == VM:
                if image is not None:
                    raise InvalidError(
                        "Virtual machines from images are not supported yet: create it without one"
                    )
                db_instances.create(self.state.store, rec)
            else:
                pool, size = self._root_pool(rec, undo)
                self.storage.check_root_disk(pool, size)
                fp = None
                if image is not None:
                    fp = image.fingerprint
                    self._unpack_once(pool, fp, rec, undo)
                    # As Incus: the image's "create" templates are applied at the first start.
                    rec.volatile["volatile.apply_template"] = "create"
                self.storage.create_instance_volume(pool, name, fp, size, undo)
                db_instances.create(self.state.store, rec)
            undo.success()
        log.info("Created instance %s", name, extra={"ctx": {"instance": name, "type": type_}})
        self.state.events.lifecycle("instance-created", f"/1.0/instances/{name}", type=type_)

    def _image_for(self, source: dict[str, Any], type_: str) -> ImageLike | None:
        """The image a create names (None for an empty root), refused if it cannot run here."""
        if source["type"] != "image":
            return None
        image = self.images.resolve(source)
        if image.type != type_:
            raise InvalidError(
                f'Requested image\'s type "{image.type}" doesn\'t match instance\'s type "{type_}"'
            )
        if image.architecture not in _ARCHITECTURES:
            raise InvalidError(
                f'Image "{image.fingerprint[:12]}" is for architecture "{image.architecture}"; '
                f"this host runs {_ARCHITECTURES[0]}"
            )
        return image

    def _root_pool(self, rec: InstanceRecord, undo: Reverter) -> tuple[str, str | None]:
        """The pool and size of REC's root volume: its root disk's, else the default pool (made, as a
        dir pool, on first need). The instance's devices stay as given: its volume's record says
        which pool holds it (db.storage.instance_pool)."""
        root = root_disk(self.expanded(rec).devices)
        if root is not None:
            return root[1]["pool"], root[1].get("size") or None
        if not self.storage.exists(DEFAULT_POOL):
            self.storage.ensure_default()
            undo.add(self.storage.delete, DEFAULT_POOL)
        return DEFAULT_POOL, None

    def _unpack_once(self, pool: str, fp: str, rec: InstanceRecord, undo: Reverter) -> None:
        """The image's volume on POOL, unpacked now unless an earlier create did it."""
        privileged = parse_bool(self.expanded(rec).config.get("security.privileged", "false"))
        self.storage.ensure_image_volume(
            pool, fp, lambda target: self.images.unpack(fp, target, skip_devices=not privileged), undo
        )

    def check_create(self, req: dict[str, Any]) -> None:
        """What a create can refuse at once, before its background operation starts."""
        name, type_ = self._name_and_type(req)
        if db_instances.get(self.state.store, name) is not None:
            raise ConflictError(f'Instance "{name}" already exists')
        self._requested_profiles(req)
        self._image_for(source_of(req), type_)

    def names(self) -> list[str]:
        return db_instances.names(self.state.store)

    def update(self, name: str, req: dict[str, Any], patch: bool, if_match: str | None = None) -> None:
        with self.profiles_lock, self.locked(name):
            inst = self._load(name)
            if if_match:  # the view and its hash cost what the instance holds: only when asked
                etag.check_if_match(if_match, etag.instance_fields(self.to_api(inst)))
            old = inst.local
            config = (
                strings_of(req.get("config"), "config") if "config" in req or not patch else dict(old.config)
            )
            if patch and "config" in req:
                config = {**old.config, **config}
            config = {k: v for k, v in config.items() if v != ""}  # as Incus: an empty value unsets
            for key, value in list(config.items()):
                if key.startswith("volatile."):
                    # A PUT echoes a whole read, whose volatile values may predate a hot-plug that ran
                    # since (the ETag leaves them out for that reason): pincus's, so not the client's to
                    # change. A PATCH names only what it means to change.
                    if patch and old.volatile.get(key) != value:
                        raise InvalidError(f'Key "{key}" is managed by pincus and cannot be set')
                    del config[key]
            devices = devices_of(req.get("devices")) if "devices" in req or not patch else dict(old.devices)
            if patch and "devices" in req:
                devices = {**old.devices, **devices}
            # As Incus: PATCH keeps the profiles it does not name, PUT replaces them.
            profiles = self._profile_list(req.get("profiles") or [])
            new = InstanceRecord(
                old.name,
                old.type,
                description_of(req, old.description),
                config,
                devices,
                dict(old.volatile),
                old.created_at,
                profiles if req.get("profiles") is not None or not patch else list(old.profiles),
            )
            self._validate(new, before=inst.rec.devices)
            target = self.expanded(new)
            with self._journal(inst, target), Reverter() as undo:
                inst.update_config(inst.rec.config, target.config)
                undo.add(inst.update_config, target.config, inst.rec.config)
                self.apply_expansion(inst, target)
                db_instances.replace(
                    self.state.store,
                    name,
                    new.description,
                    new.config,
                    new.devices,
                    new.profiles,
                    stored=old.devices,
                )
                undo.success()
        log.info("Updated instance %s", name, extra={"ctx": {"instance": name}})
        self.state.events.lifecycle("instance-updated", f"/1.0/instances/{name}")

    # --- a device change interrupted by a crash ---------------------------------------------------

    @contextmanager
    def _journal(self, inst: Instance, target: InstanceRecord) -> Iterator[None]:
        """While a running instance's devices change live, its state dir says from what to what:
        a daemon killed half-way finds it and puts the host back as the database has it."""
        path = inst.dir / _CHANGE_JOURNAL
        live = inst.is_alive()
        if live:
            self.host(files.write_json, path, {"from": inst.rec.devices, "to": target.devices})
        try:
            yield
        finally:
            if live:
                try:
                    self.host(files.remove, path)
                except (HostError, OSError) as e:
                    # Harmless: a daemon that finds it compares it with the database, which is the truth.
                    log.warning("Instance %s: the change journal stays: %s", inst.name, e)

    def _finish_interrupted_change(self, inst: Instance) -> None:
        journal = self.host(files.read_json, inst.dir / _CHANGE_JOURNAL)
        if journal is None:
            return
        stored, new = inst.rec.devices, dict(journal["to"])
        if stored != new and inst.is_alive():
            log.warning("Instance %s: a device change was interrupted; putting its devices back", inst.name)
            half = DRIVERS[inst.type](
                self.state, dataclasses.replace(inst.rec, devices=new), local=inst.local
            )
            for n in sorted(n for n in new if stored.get(n) != new[n]):
                try:
                    half.detach_device(n, new[n])
                    if n not in stored:  # nor what it keeps while it exists (its MAC, a static allocation)
                        half.device(n, new[n]).remove()
                except Exception:
                    log.warning("Device %s of %s: leftovers of the change stay", n, inst.name, exc_info=True)
            for n in sorted(n for n in stored if new.get(n) != stored[n]):
                self._plug_back(inst, n, stored[n])
        self.host(files.remove, inst.dir / _CHANGE_JOURNAL)

    def apply_expansion(self, inst: Instance, new: InstanceRecord) -> None:
        """Bring INST's devices to those of expanded record NEW: live when it runs, else forget the
        ones that go (their host leftovers, such as a static allocation)."""
        if inst.is_alive():
            self._apply_devices_live(inst, new)
        else:
            for dev_name in sorted(set(inst.rec.devices) - set(new.devices)):
                inst.device(dev_name).remove()

    # --- profile changes (the caller holds the instance's lock) ---------------------------------

    def check_devices_alone(self, devices: dict[str, dict[str, str]]) -> None:
        """A profile's devices on their own, as Incus checks them for any instance type: each must be
        valid on a container or on a VM. Conflicts with other instances (a static address already
        taken) depend on who uses the profile, so they are left to the check of each user."""
        for dev_name, cfg in sorted(devices.items()):
            errors: list[Exception] = []
            for type_ in (CONTAINER, VM):
                view = DRIVERS[type_](self.state, InstanceRecord("", type_, devices={dev_name: cfg}))
                try:
                    view.device(dev_name).validate_config()
                except ConflictError:
                    pass
                except (InvalidError, NotFoundError) as e:
                    errors.append(e)
                    continue
                break
            else:
                raise errors[0]

    def validate_with(self, name: str, override: Profiles) -> None:
        """Refuse a profile change that instance NAME could not run with."""
        inst = self._load(name)
        self._validate(inst.local, override, before=inst.rec.devices)

    def reexpand(self, name: str, override: Profiles, undo: Reverter) -> None:
        """Apply a profile change to instance NAME; UNDO learns how to take it back."""
        inst = self._load(name)
        before = dataclasses.replace(inst.rec, devices=dict(inst.rec.devices))
        target = self.expanded(inst.local, override)
        if inst.is_alive():
            inst.update_config(before.config, target.config)
            undo.add(inst.update_config, target.config, before.config)
            self._apply_devices_live(inst, target)
            undo.add(self._take_back, inst.local, override, before)
        # A stopped instance keeps its devices' leftovers until its next start or removal: nothing
        # of the host changed, so there is nothing to take back.

    def _take_back(self, local: InstanceRecord, override: Profiles, before: InstanceRecord) -> None:
        fresh = db_instances.get(self.state.store, local.name) or local
        now = dataclasses.replace(self.expanded(local, override), volatile=fresh.volatile)
        self._apply_devices_live(DRIVERS[local.type](self.state, now, local=local), before)

    def _apply_devices_live(self, inst: Instance, new: InstanceRecord) -> None:
        """Hot-unplug removed devices, hot-plug added ones, update or re-plug changed ones; all or nothing."""
        old_devices = dict(inst.rec.devices)
        removed = sorted(set(old_devices) - set(new.devices))
        added = sorted(set(new.devices) - set(old_devices))
        changed = sorted(n for n in set(old_devices) & set(new.devices) if old_devices[n] != new.devices[n])
        # A root disk names the pool its volume is on, which cannot change (_validate): nothing to
        # do for it on a running instance. Bind disks hot-plug like any device.
        removed = [n for n in removed if not _is_root_disk(old_devices[n])]
        added = [n for n in added if not _is_root_disk(new.devices[n])]
        changed = [n for n in changed if not _is_root_disk(new.devices[n])]
        volatile = dict(inst.rec.volatile)
        with Reverter() as undo:
            # Each way back is registered before its step: a detach that fails half-way is
            # finished and the device plugged back whole, with its MAC (its volatile keys first).
            for n in removed:
                undo.add(self._plug_back, inst, n, old_devices[n])
                undo.add(inst.restore_volatile, volatile)
                inst.detach_device(n, old_devices[n])
            for n in changed:
                old_dev, new_dev = inst.device(n, old_devices[n]), inst.device(n, new.devices[n])
                if self._live_only(old_dev.key_table(), old_devices[n], new.devices[n]) and type(
                    old_dev
                ) is type(new_dev):
                    new_dev.update(old_devices[n])
                    undo.add(old_dev.update, new.devices[n])
                    inst.event("device-updated", new_dev)
                else:
                    undo.add(self._plug_back, inst, n, old_devices[n])
                    undo.add(inst.restore_volatile, volatile)
                    inst.detach_device(n, old_devices[n])
                    self._replug(inst, n, new.devices[n])
                    undo.add(inst.detach_device, n, new.devices[n])
            for n in added:
                self._replug(inst, n, new.devices[n])
                undo.add(inst.detach_device, n, new.devices[n])
            for n in removed:  # what a device keeps while it exists (a static allocation) goes last
                inst.device(n, old_devices[n]).remove()
            undo.success()

    @staticmethod
    def _live_only(keys: KeyTable, old: dict[str, str], new: dict[str, str]) -> bool:
        return not not_live(keys, old, new)

    @staticmethod
    def _replug(inst: Instance, name: str, config: dict[str, str]) -> None:
        inst.rec.devices[name] = config
        inst.attach_device(name)

    @classmethod
    def _plug_back(cls, inst: Instance, name: str, config: dict[str, str]) -> None:
        """Undo of a detach: whatever a failed detach left of the device goes first (a no-op after
        a whole detach), then the device is plugged back as it was."""
        try:
            inst.detach_device(name, config)
        except Exception:
            log.warning(
                "Leftovers of device %s of %s stay after a failed detach", name, inst.name, exc_info=True
            )
        cls._replug(inst, name, config)

    def rename(self, name: str, new_name: str) -> None:
        try:
            is_instance_name(new_name)
        except ValueError as e:
            raise InvalidError(f"Invalid instance name: {e}") from None
        with self.profiles_lock, self.locked(name), self.locked(new_name):
            inst = self._load(name)
            self._check_here(inst)
            if inst.is_alive() or inst.has_runtime():
                raise ConflictError(f'Renaming of running instance "{name}" not allowed')
            if db_instances.get(self.state.store, new_name) is not None:
                raise ConflictError(f'Instance "{new_name}" already exists')
            with Reverter() as undo:
                self.host(files.move_dir, inst.dir, self.state.instances_dir / new_name)
                undo.add(self.host, files.move_dir, self.state.instances_dir / new_name, inst.dir)
                with self.state.store.tx():
                    self.storage.rename_instance_volume(name, new_name, undo)
                    db_instances.rename(self.state.store, name, new_name)
                undo.success()
        log.info("Renamed instance %s to %s", name, new_name, extra={"ctx": {"instance": new_name}})
        self.state.events.lifecycle("instance-renamed", f"/1.0/instances/{new_name}", old_name=name)

    def delete(self, name: str) -> None:
        with self.profiles_lock, self.locked(name):
            inst = self._load(name)
            self._check_here(inst)
            if inst.is_alive():
                raise ConflictError(f'Instance "{name}" is running; stop it first (or delete -f)')
            for dev in inst.devices():
                dev.remove()
            with Reverter() as undo:
                with self.state.store.tx():
                    destroy = self.storage.delete_instance_volume(name, undo)
                    db_instances.delete(self.state.store, name)
                undo.success()
            # The records are gone: what a failure below leaves holds no name in use, and a set-aside
            # volume goes at the pool's next sweep.
            try:
                self.host(files.remove_tree, inst.dir)
                if destroy is not None:
                    destroy()
            except Exception:
                log.exception("Leftovers of deleted instance %s stay on the host", name)
        log.info("Deleted instance %s", name, extra={"ctx": {"instance": name}})
        self.state.events.lifecycle("instance-deleted", f"/1.0/instances/{name}")

    # --- state -----------------------------------------------------------------------------------

    def change_state(self, name: str, action: str, timeout: float, force: bool) -> None:
        if action == "start":
            self.start(name)
        elif action == "stop":
            self.stop(name, timeout, force)
        elif action == "restart":
            self.stop(name, timeout, force)
            self.start(name)
        else:
            raise InvalidError(f'Invalid action "{action}" (start, stop or restart)')

    def start(self, name: str) -> None:
        with self.locked(name):
            inst = self._load(name)
            self._check_here(inst)
            if inst.is_alive():
                raise ConflictError(f'Instance "{name}" is already running')
            if inst.has_runtime():
                inst.cleanup()  # died since we last looked
            try:
                inst.start()
            except Exception:
                self._release_shared_if_idle()  # a first start that failed leaves no shared table
                raise
        log.info("Started instance %s", name, extra={"ctx": {"instance": name}})
        self.state.events.lifecycle("instance-started", f"/1.0/instances/{name}")

    def evacuate(self, timeout: float) -> list[str]:
        """`cluster evacuate` of this member: stop its running instances, each marked so that
        `cluster restore` starts it again. The names stopped."""
        stopped = []
        for rec in self._here():
            if not self._driver(rec).is_alive():
                continue
            db_instances.set_volatile(self.state.store, rec.name, {EVACUATED: "true"})
            with contextlib.suppress(ConflictError):  # stopped meanwhile
                self.stop(rec.name, timeout, force=False)
            stopped.append(rec.name)
        return stopped

    def restore(self) -> list[str]:
        """`cluster restore` of this member: start what its evacuation stopped. The names started."""
        started = []
        for rec in self._here():
            if rec.volatile.get(EVACUATED) != "true":
                continue
            if not self._driver(rec).is_alive():
                self.start(rec.name)
                started.append(rec.name)
            db_instances.set_volatile(self.state.store, rec.name, {EVACUATED: None})
        return started

    def stop(self, name: str, timeout: float, force: bool) -> None:
        with self.locked(name):
            inst = self._load(name)
            try:
                if not inst.is_alive():
                    if inst.has_runtime():
                        inst.cleanup()  # died, or an earlier stop failed half-way: finish it
                        return
                    raise ConflictError(f'Instance "{name}" is already stopped')
                inst.stop(timeout, force)
            finally:
                self._release_shared_if_idle()
        log.info("Stopped instance %s", name, extra={"ctx": {"instance": name}})
        self.state.events.lifecycle("instance-stopped", f"/1.0/instances/{name}")

    def exec(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        fds: tuple[int, int, int],
        tty: bool = False,
        started: Callable[[int], None] | None = None,
    ) -> int:
        inst = self._load(name)
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise InvalidError("exec needs a command (a list of strings)")
        return inst.exec(argv, env, cwd, fds, tty=tty, started=started)

    def console_log(self, name: str) -> bytes:
        """What NAME's console (a container's /dev/console, a VM's serial port) has shown."""
        return self.host(console_log.read_log, self._load(name).dir / console_log.LOG_NAME)

    def clear_console_log(self, name: str) -> None:
        self.host(console_log.clear_log, self._load(name).dir / console_log.LOG_NAME)

    def open_terminal(self, name: str, width: int, height: int) -> tuple[int, int]:
        """(master, slave) of a terminal for an interactive exec in NAME."""
        return self._load(name).open_terminal(width, height)

    def exec_detached(self, name: str, argv: list[str], env: dict[str, str], cwd: str | None) -> int:
        """exec with no stdio (Incus's exec without websockets); its exit status."""
        null = self.host(stdio.open_null)
        try:
            return self.exec(name, argv, env, cwd, (null, null, null))
        finally:
            self.host(stdio.close, null)

    def signal_exec(self, name: str, pid: int, sig: int) -> None:
        self._load(name).signal_exec(pid, sig)

    def check_exec(self, name: str) -> Instance:
        """Refuse before the client hands over its stdio."""
        inst = self._load(name)
        inst.check_exec()
        return inst

    # --- daemon start / stop ---------------------------------------------------------------------

    def _here(self) -> list[InstanceRecord]:
        """The instances this daemon runs on its host: in a cluster, those living on this member."""
        return [r for r in db_instances.list_all(self.state.store) if r.location == self.location]

    def reconcile(self) -> None:
        """Adopt instances that kept running, clean up those that died, drop leaked links."""
        known: set[str] = set()
        running: set[str] = set()
        for rec in self._here():
            inst = self._driver(rec)
            with self.locked(rec.name):
                try:
                    if inst.start_was_interrupted():
                        inst.finish_interrupted_start()
                    elif inst.is_alive():
                        inst.adopt()
                        self._finish_interrupted_change(inst)
                        running.add(rec.name)
                        log.info("Adopted running instance %s", rec.name)
                    elif inst.has_runtime():
                        log.warning("Instance %s died while the daemon was away; cleaning up", rec.name)
                        inst.cleanup()
                except Exception:
                    log.exception("Failed to reconcile instance %s", rec.name)
            known.update(v for k, v in inst.rec.volatile.items() if k.endswith(".host_name"))
        for link in self.host(links.list_links):
            if dev_names.owned_by(link.name, self.state.tag) and link.name not in known:
                log.warning("Deleting leaked interface %s", link.name)
                self.host(links.delete_link, link.name)
        self._remove_leftover_cgroups(running)
        self._release_shared_if_idle()  # a daemon killed mid-stop left the shared table behind
        self._autostart()

    def _remove_leftover_cgroups(self, running: set[str]) -> None:
        """Groups of this daemon whose instance is not running: a stop the kernel was slow to
        finish, or a daemon killed before it removed them."""
        for name in self.host(cgroups.list_groups, self.state.tag):
            if name in running:
                continue
            try:
                self.host(cgroups.remove_group, self.state.tag, name)
                log.warning("Removed the leftover cgroup of %s", name)
            except HostError as e:
                log.warning("Leftover cgroup of %s stays: %s", name, e)

    def _autostart(self) -> None:
        """Start the stopped instances whose boot.autostart is true, as Incus does at daemon start."""
        for rec in self._here():
            inst = self._driver(rec)
            if not parse_bool(inst.rec.config.get("boot.autostart", "false")) or inst.is_alive():
                continue
            try:
                self.start(rec.name)
            except Exception:
                log.exception("Failed to autostart instance %s", rec.name)

    def monitor(self, interval: float = 0.5) -> None:
        """Notice instances whose process died (guest poweroff, killed init) and clean up after them."""
        while not self._stop_monitor.wait(interval):
            try:
                names = db_instances.names_on(self.state.store, self.location)
            except HostError as e:  # a cluster database without a leader for now: try again later
                log.warning("Instance monitor cannot read the database: %s", e)
                continue
            for name in names:
                try:
                    self._check_crashed(name)
                except Exception:
                    log.exception("Crash check of %s failed", name)

    def _check_crashed(self, name: str) -> None:
        with self._locks_lock:
            lock = self._locks[name]
        if not lock.acquire(blocking=False):
            return  # someone is working on it
        try:
            inst = self._load(name)
            if inst.has_runtime() and not inst.is_alive():
                log.warning(
                    "Instance %s stopped on its own; cleaning up", name, extra={"ctx": {"instance": name}}
                )
                inst.cleanup()
                self._release_shared_if_idle()
                self.state.events.lifecycle("instance-stopped", f"/1.0/instances/{name}", reason="exited")
        except NotFoundError:
            pass
        finally:
            lock.release()

    def _release_shared_if_idle(self) -> None:
        """Housekeeping after a stop: the work asked for is done, so a failure here is logged and
        left to the next stop (an empty bridge table filters nothing)."""
        if any(self._driver(r).has_runtime() for r in self._here()):
            return
        try:
            nic_bridged.release_shared(self.state)
        except (HostError, OSError) as e:
            log.warning("The shared bridge filter table stays until the next stop: %s", e)

    def start_monitor(self) -> None:
        threading.Thread(target=self.monitor, name="instance-monitor", daemon=True).start()

    def stop_monitor(self) -> None:
        self._stop_monitor.set()

    def shutdown_all(self, timeout: float) -> None:
        # All at once, as Incus: each stop may wait out its timeout (busybox's init alone takes
        # two seconds to power off), so one after another a host of many would take minutes.
        def stop_one(name: str) -> None:
            try:
                if self._load(name).is_alive():
                    self.stop(name, timeout, force=False)
            except Exception:
                log.exception("Failed to stop %s at shutdown", name)

        names = db_instances.names_on(self.state.store, self.location)
        with ThreadPoolExecutor(max_workers=SHUTDOWN_WORKERS, thread_name_prefix="shutdown") as pool:
            list(pool.map(stop_one, names))
