"""Storage pool and volume orchestration: validate -> lock -> driver -> persist -> event.

The database says which pools and volumes exist; the drivers (pincus.storage) make them on the
host. Every host step is undone if a later one fails, so a pool or volume is never on the host
without its record, nor a record without what it describes.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pincus.db import instances as db_instances
from pincus.db import profiles as db_profiles
from pincus.db import storage as db
from pincus.db.storage import PoolRecord, VolumeRecord
from pincus.errors import ConflictError, InvalidError, NotFoundError
from pincus.host import tree
from pincus.reverter import Reverter
from pincus.server import etag
from pincus.state import State
from pincus.storage import registry
from pincus.storage.base import Pool

log = logging.getLogger(__name__)

DEFAULT_POOL = "default"
_POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def check_pool_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidError("Storage pool name is required")
    if not _POOL_NAME.fullmatch(name) or ".." in name:
        raise InvalidError(
            f'Invalid storage pool name "{name}": use 1-63 letters, digits, "_", "." or "-", '
            "starting with a letter or digit"
        )
    return name


def pool_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What a PUT of a pool replaces (its ETag)."""
    return {k: doc.get(k) for k in ("config", "description")}


def _strings(doc: object, what: str) -> dict[str, str]:
    from pincus.server.instances import strings_of

    return strings_of(doc, what)


def _description(req: dict[str, Any], default: str = "") -> str:
    from pincus.server.instances import description_of

    return description_of(req, default)


def root_disk(devices: dict[str, dict[str, str]]) -> tuple[str, dict[str, str]] | None:
    """The (name, config) of the root disk among DEVICES (a disk with path "/"), if any."""
    for name, cfg in sorted(devices.items()):
        if cfg.get("type") == "disk" and cfg.get("path") == "/":
            return name, cfg
    return None


class Storage:
    def __init__(self, state: State) -> None:
        self.state = state
        self._lock = threading.RLock()  # pools: create, update, delete, and volumes appearing on them
        self._image_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        # In a cluster a pool is one record and a pool on each member's host, made there on first use.
        self.per_member = False

    # --- pools ---------------------------------------------------------------------------------

    def _record(self, name: str) -> PoolRecord:
        rec = db.get_pool(self.state.store, name)
        if rec is None:
            raise NotFoundError(f'Storage pool "{name}" not found')
        return rec

    def pool(self, name: str) -> Pool:
        """The driver of pool NAME (NotFoundError if there is none)."""
        rec = self._record(name)
        return registry.load(self.state, rec.name, rec.driver, rec.config)

    def exists(self, name: str) -> bool:
        return db.get_pool(self.state.store, name) is not None

    def names(self) -> list[str]:
        return db.pool_names(self.state.store)

    def used_by(self, name: str) -> list[str]:
        """Instances with a volume on the pool, profiles and instances whose disks name it, images on it."""
        users: set[str] = set()
        for vol in db.list_volumes(self.state.store, name):
            kind = "images" if vol.type == db.IMAGE else "instances"
            users.add(f"/1.0/{kind}/{vol.name}")
        for profile in db_profiles.list_all(self.state.store):
            if any(d.get("type") == "disk" and d.get("pool") == name for d in profile.devices.values()):
                users.add(f"/1.0/profiles/{profile.name}")
        for inst in db_instances.list_all(self.state.store):
            if any(d.get("type") == "disk" and d.get("pool") == name for d in inst.devices.values()):
                users.add(f"/1.0/instances/{inst.name}")
        return sorted(users)

    def to_api(self, rec: PoolRecord) -> dict[str, Any]:
        return {
            "name": rec.name,
            "driver": rec.driver,
            "description": rec.description,
            "config": dict(sorted(rec.config.items())),
            "used_by": self.used_by(rec.name),
            "status": "Created",
            "locations": ["none"],
        }

    def get(self, name: str) -> dict[str, Any]:
        return self.to_api(self._record(name))

    def list_all(self) -> list[dict[str, Any]]:
        return [self.to_api(r) for r in db.list_pools(self.state.store)]

    def create(self, req: dict[str, Any]) -> None:
        name = check_pool_name(req.get("name"))
        driver = req.get("driver")
        if not isinstance(driver, str) or not driver:
            raise InvalidError("Storage pool driver is required (dir or btrfs)")
        config = _strings(req.get("config"), "config")
        pool = registry.load(self.state, name, driver, config)
        pool.validate_config()
        with self._lock:
            if self.exists(name):
                raise ConflictError(f'Storage pool "{name}" already exists')
            with Reverter() as undo:
                pool.create()
                undo.add(pool.delete)
                rec = PoolRecord(name, driver, _description(req), pool.filled_config())
                db.create_pool(self.state.store, rec)
                undo.success()
        log.info("Created storage pool %s", name, extra={"ctx": {"pool": name, "driver": driver}})
        self.state.events.lifecycle("storage-pool-created", f"/1.0/storage-pools/{name}")

    def ensure_default(self) -> str:
        """The default pool, created (dir) if it does not exist: what a root volume needs first."""
        with self._lock:
            if not self.exists(DEFAULT_POOL):
                self.create({"name": DEFAULT_POOL, "driver": "dir"})
        return DEFAULT_POOL

    def update(self, name: str, req: dict[str, Any], patch: bool, if_match: str | None = None) -> None:
        with self._lock:
            rec = self._record(name)
            etag.check_if_match(if_match, pool_fields(self.to_api(rec)))
            config = _strings(req.get("config"), "config") if "config" in req or not patch else {}
            config = {**rec.config, **config} if patch else config
            config = {k: v for k, v in config.items() if v != ""}
            pool = registry.load(self.state, name, rec.driver, config)
            pool.validate_config()
            stored = registry.load(self.state, name, rec.driver, rec.config).filled_config()
            changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
            # A PUT that leaves out what pincus filled in (the loop file, a default size) keeps it.
            changed = [k for k in changed if k in config or k not in pool.filled_config()]
            if changed:
                raise InvalidError(
                    f'Storage pool "{name}": key "{changed[0]}" cannot be changed after creation'
                )
            db.replace_pool(self.state.store, name, _description(req, rec.description), stored)
        self.state.events.lifecycle("storage-pool-updated", f"/1.0/storage-pools/{name}")

    def delete(self, name: str) -> None:
        with self._lock:
            pool = self.pool(name)
            users = [u for u in self.used_by(name) if not u.startswith("/1.0/images/")]
            if users:
                raise ConflictError(f'The storage pool "{name}" is currently in use (by {", ".join(users)})')
            for vol in db.list_volumes(self.state.store, name, db.IMAGE):
                pool.delete_image_volume(vol.name)
                db.delete_volume(self.state.store, name, db.IMAGE, vol.name)
            pool.delete()
            db.delete_pool(self.state.store, name)
        log.info("Deleted storage pool %s", name, extra={"ctx": {"pool": name}})
        self.state.events.lifecycle("storage-pool-deleted", f"/1.0/storage-pools/{name}")

    def start(self) -> None:
        """Daemon start: mount the pools that need it (btrfs on its loop file), sweep leftovers."""
        for rec in db.list_pools(self.state.store):
            pool = registry.load(self.state, rec.name, rec.driver, rec.config)
            try:
                pool.mount()
            except Exception:
                log.exception("Failed to mount storage pool %s", rec.name)
                continue
            self._sweep(pool)

    def _make_here(self, pool: Pool) -> None:
        """A cluster member's part of a pool created on another member."""
        if self.per_member and not self.state.host(tree.exists, pool.root):
            log.info("Creating this member's part of storage pool %s", pool.name)
            pool.create()

    @staticmethod
    def _sweep(pool: Pool) -> None:
        """Leftovers of failed deletes go at the next chance; they hold no name, so they block nothing."""
        try:
            pool.sweep()
        except Exception:
            log.warning("Leftovers on storage pool %s stay until the next try", pool.name, exc_info=True)

    # --- volumes -------------------------------------------------------------------------------

    def volume_to_api(self, vol: VolumeRecord) -> dict[str, Any]:
        used_by = [f"/1.0/instances/{vol.name}"] if vol.type in (db.CONTAINER, db.VM) else []
        return {
            "name": vol.name,
            "type": vol.type,
            "description": vol.description,
            "config": dict(sorted(vol.config.items())),
            "used_by": used_by,
            "location": "none",
            "content_type": "block" if vol.type == db.VM else "filesystem",
            "project": "default",
            "created_at": vol.created_at,
        }

    @staticmethod
    def _check_type(type_: str | None) -> None:
        if type_ is not None and type_ not in db.VOLUME_TYPES:
            raise NotFoundError(f'Invalid storage volume type "{type_}" ({", ".join(db.VOLUME_TYPES)})')

    def list_volumes(self, pool: str, type_: str | None = None) -> list[dict[str, Any]]:
        self._record(pool)
        self._check_type(type_)
        return [self.volume_to_api(v) for v in db.list_volumes(self.state.store, pool, type_)]

    def get_volume(self, pool: str, type_: str, name: str) -> dict[str, Any]:
        self._record(pool)
        self._check_type(type_)
        vol = db.get_volume(self.state.store, pool, type_, name)
        if vol is None:
            raise NotFoundError(f'Storage volume "{name}" of type "{type_}" not found on pool "{pool}"')
        return self.volume_to_api(vol)

    def instance_pool(self, name: str) -> str | None:
        """The pool holding instance NAME's root volume, if it has one."""
        return db.instance_pool(self.state.store, name)

    @contextmanager
    def _image_lock(self, pool: str, fp: str) -> Iterator[None]:
        with self._lock:
            lock = self._image_locks[(pool, fp)]
        with lock:
            yield

    def ensure_image_volume(
        self, pool_name: str, fp: str, fill: Callable[[Path], None], undo: Reverter
    ) -> None:
        """The image volume of FP on the pool, unpacked by FILL unless it is there already. When
        this call made it, UNDO learns to remove it: a create that fails leaves no trace, not even
        a cache it filled (clones hold the same lock, so none is reading it then)."""
        with self._image_lock(pool_name, fp):
            pool = self.pool(pool_name)
            recorded = db.get_volume(self.state.store, pool_name, db.IMAGE, fp) is not None
            # In a cluster the record says some member unpacked it: this one may still need to.
            if recorded and not (self.per_member and not pool.has_image_volume(fp)):
                return
            self._make_here(pool)
            with Reverter() as own:
                pool.create_image_volume(fp, fill)
                own.add(pool.delete_image_volume, fp)
                if not recorded:
                    db.create_volume(self.state.store, VolumeRecord(pool_name, fp, db.IMAGE))
                own.success()
        undo.add(self._delete_image_volume, pool_name, fp)
        log.info("Unpacked image %s on storage pool %s", fp, pool_name)

    def _delete_image_volume(self, pool_name: str, fp: str) -> None:
        with self._image_lock(pool_name, fp):
            if db.get_volume(self.state.store, pool_name, db.IMAGE, fp) is None:
                return
            self.pool(pool_name).delete_image_volume(fp)
            db.delete_volume(self.state.store, pool_name, db.IMAGE, fp)

    def delete_image_volumes(self, fp: str) -> None:
        """Remove image FP's volume from every pool (for `image delete`); instance volumes made from
        it stay whole (a btrfs snapshot does not depend on its origin)."""
        for pool_name in db.pools_with_volume(self.state.store, db.IMAGE, fp):
            self._delete_image_volume(pool_name, fp)

    def forget_image_volumes_here(self, fp: str) -> None:
        """Another cluster member deleted image FP (and the shared volume rows with it): this
        member's own unpacked copies of it go too, found by their paths."""
        for pool_name in self.names():
            with self._image_lock(pool_name, fp):
                self.pool(pool_name).delete_image_volume(fp)

    def delete_orphan_image_volumes(self, images: set[str]) -> None:
        """Daemon start: image volumes whose image is gone (a delete that stopped half-way, or an
        unpack that raced one) are removed, so no pool keeps a copy nobody can use or see."""
        for pool_name in self.names():
            for vol in db.list_volumes(self.state.store, pool_name, db.IMAGE):
                if vol.name in images:
                    continue
                try:
                    self._delete_image_volume(pool_name, vol.name)
                except Exception:
                    log.warning(
                        "Image volume %s on storage pool %s stays until the next start",
                        vol.name,
                        pool_name,
                        exc_info=True,
                    )

    def create_instance_volume(
        self, pool_name: str, name: str, image_fp: str | None, size: str | None, undo: Reverter
    ) -> None:
        """Instance NAME's root volume on the pool (a clone of the image volume, or empty), and its
        record. UNDO learns the way back."""
        pool = self.pool(pool_name)
        self._make_here(pool)
        self._sweep(pool)
        if db.get_volume(self.state.store, pool_name, db.CONTAINER, name) is not None:
            raise ConflictError(f'Storage volume of instance "{name}" already exists on pool "{pool_name}"')
        if image_fp is None:
            pool.create_instance_volume(name, None, size)
        else:
            with self._image_lock(pool_name, image_fp):  # the image volume stays while it is read
                pool.create_instance_volume(name, image_fp, size)
        undo.add(pool.delete_instance_volume, name)
        config = {"size": size} if size else {}
        db.create_volume(self.state.store, VolumeRecord(pool_name, name, db.CONTAINER, config=config))
        undo.add(db.delete_volume, self.state.store, pool_name, db.CONTAINER, name)

    def check_root_disk(self, pool_name: str, size: str | None) -> None:
        """What a create can refuse before it changes anything."""
        self.pool(pool_name).check_instance_size(size)

    def delete_instance_volume(self, name: str, undo: Reverter) -> Callable[[], None] | None:
        """Forget instance NAME's volume (in the caller's transaction) and move it aside; the
        returned step destroys it once the records are gone (None: there was no volume)."""
        pool_name = self.instance_pool(name)
        destroy = self.set_instance_volume_aside(name, undo)
        if pool_name is not None:
            db.delete_volume(self.state.store, pool_name, db.CONTAINER, name)
        return destroy

    def rename_instance_volume(self, name: str, new_name: str, undo: Reverter) -> None:
        pool_name = self.instance_pool(name)
        if pool_name is None:
            return
        pool = self.pool(pool_name)
        pool.rename_instance_volume(name, new_name)
        undo.add(pool.rename_instance_volume, new_name, name)
        db.rename_volume(self.state.store, pool_name, db.CONTAINER, name, new_name)

    # --- a volume moving between cluster members (the record stays: pools are the cluster's) ---

    def receive_instance_volume(self, name: str, fill: Callable[[Path], None], undo: Reverter) -> bool:
        """Instance NAME's root volume made on this member's part of its pool and filled by FILL (from
        the member it is moving from). False when the instance has no volume. UNDO learns the way back."""
        pool_name = self.instance_pool(name)
        if pool_name is None:
            return False
        pool = self.pool(pool_name)
        self._make_here(pool)
        self._sweep(pool)
        vol = db.get_volume(self.state.store, pool_name, db.CONTAINER, name)
        pool.receive_instance_volume(name, fill, vol.config.get("size") if vol else None)
        undo.add(pool.delete_instance_volume, name)
        return True

    def drop_instance_volume_here(self, name: str) -> None:
        """This member's copy of instance NAME's volume removed, its record kept (a move undone)."""
        pool_name = self.instance_pool(name)
        if pool_name is not None:
            self.pool(pool_name).delete_instance_volume(name)

    def instance_volume_path(self, name: str) -> Path | None:
        """Where this member holds instance NAME's volume (None: no volume, or not here)."""
        pool_name = self.instance_pool(name)
        if pool_name is None:
            return None
        path = self.pool(pool_name).instance_path(name)
        return path if self.state.host(tree.exists, path) else None

    def set_instance_volume_aside(self, name: str, undo: Reverter) -> Callable[[], None] | None:
        """This member's copy of instance NAME's volume moved out of its name, the record kept; the
        returned step destroys it (None: there is no volume). UNDO puts it back."""
        pool_name = self.instance_pool(name)
        if pool_name is None:
            return None
        pool = self.pool(pool_name)
        aside = pool.set_aside(name)
        undo.add(pool.put_back, aside, name)

        def destroy() -> None:
            pool.destroy_aside(aside)
            self._sweep(pool)

        return destroy
