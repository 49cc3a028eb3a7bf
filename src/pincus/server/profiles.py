"""Profile orchestration: a change is validated against every instance that uses the profile,
applied live to the running ones (all or nothing), then stored."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pincus.config.device_keys import INSTANCE
from pincus.config.keys import check_config
from pincus.db import profiles as db_profiles
from pincus.db.profiles import ProfileRecord
from pincus.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from pincus.reverter import Reverter
from pincus.server import etag
from pincus.server.instances import DEFAULT_PROFILE, Instances, description_of, devices_of, strings_of
from pincus.state import State

log = logging.getLogger(__name__)

MAX_NAME = 63


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidError("No name provided")
    problem = ""
    if len(name) > MAX_NAME:
        problem = f"longer than {MAX_NAME} characters"
    elif name in (".", ".."):
        problem = f'"{name}" is reserved'
    elif "/" in name or any(c.isspace() for c in name) or "\0" in name:
        problem = "no slashes, whitespace or NUL bytes allowed"
    if problem:
        raise InvalidError(f"Invalid profile name: {problem}")
    return name


class Profiles:
    def __init__(self, state: State, instances: Instances) -> None:
        self.state = state
        self.instances = instances
        # One lock with the instances' changes of membership, so a profile change sees every user.
        self.lock = instances.profiles_lock

    # --- reading ---------------------------------------------------------------------------------

    def _load(self, name: str) -> ProfileRecord:
        rec = db_profiles.get(self.state.store, name)
        if rec is None:
            raise NotFoundError(f'Profile "{name}" not found')
        return rec

    def to_api(self, rec: ProfileRecord) -> dict[str, Any]:
        return {
            "name": rec.name,
            "description": rec.description,
            "config": dict(sorted(rec.config.items())),
            "devices": rec.devices,
            "used_by": [f"/1.0/instances/{n}" for n in db_profiles.users(self.state.store, rec.name)],
            "project": "default",
        }

    def get(self, name: str) -> dict[str, Any]:
        return self.to_api(self._load(name))

    def names(self) -> list[str]:
        return db_profiles.names(self.state.store)

    def list_all(self) -> list[dict[str, Any]]:
        return [self.to_api(r) for r in db_profiles.list_all(self.state.store)]

    # --- changing --------------------------------------------------------------------------------

    def _validate_own(self, rec: ProfileRecord) -> None:
        """What can be checked without an instance: keys exist, no volatile keys, devices valid alone."""
        for key in rec.config:
            if key.startswith("volatile."):
                raise InvalidError(f'Key "{key}" is managed by pincus and cannot be set in a profile')
        check_config(INSTANCE, rec.config, f'profile "{rec.name}"')
        for dev_name, dev in rec.devices.items():
            if not dev.get("type"):
                raise InvalidError(f'Device "{dev_name}" of profile "{rec.name}" has no "type"')
        self.instances.check_devices_alone(rec.devices)

    def create(self, req: dict[str, Any]) -> None:
        name = check_name(req.get("name"))
        rec = ProfileRecord(
            name,
            description_of(req),
            strings_of(req.get("config"), "config"),
            devices_of(req.get("devices")),
        )
        self._validate_own(rec)
        with self.lock:
            if db_profiles.get(self.state.store, name) is not None:
                raise ConflictError(f'Profile "{name}" already exists')
            db_profiles.create(self.state.store, rec)
        log.info("Created profile %s", name, extra={"ctx": {"profile": name}})
        self.state.events.lifecycle("profile-created", f"/1.0/profiles/{name}")

    def update(self, name: str, req: dict[str, Any], patch: bool, if_match: str | None = None) -> None:
        with self.lock:
            old = self._load(name)
            etag.check_if_match(if_match, etag.profile_fields(self.to_api(old)))
            config = strings_of(req.get("config"), "config")
            devices = devices_of(req.get("devices"))
            if patch:
                config = {**old.config, **config} if "config" in req else dict(old.config)
                devices = {**old.devices, **devices} if "devices" in req else dict(old.devices)
            new = ProfileRecord(
                name,
                description_of(req, old.description),
                {k: v for k, v in config.items() if v != ""},  # as Incus: an empty value unsets
                devices,
            )
            self._validate_own(new)
            self._apply_to_users(new)
            db_profiles.replace(self.state.store, new)
        log.info("Updated profile %s", name, extra={"ctx": {"profile": name}})
        self.state.events.lifecycle("profile-updated", f"/1.0/profiles/{name}")

    def _apply_to_users(self, new: ProfileRecord) -> None:
        """Every instance using the profile takes the change, or none does and the error is raised."""
        users = db_profiles.users(self.state.store, new.name)
        # On a cluster each member runs its own instances: the others' take the change at their next start.
        here = [u for u in users if self.instances.location_of(u) in (None, self.instances.location)]
        override = {new.name: new}
        with contextlib.ExitStack() as locks:
            for user in users:  # sorted: two profile changes take instance locks in one order
                locks.enter_context(self.instances.locked(user))
            for user in users:
                self.instances.validate_with(user, override)
            with Reverter() as undo:
                for user in here:
                    self.instances.reexpand(user, override, undo)
                undo.success()

    def rename(self, name: str, new_name: str) -> None:
        check_name(new_name)
        if name == DEFAULT_PROFILE:
            raise ForbiddenError(f'The "{DEFAULT_PROFILE}" profile cannot be renamed')
        with self.lock:
            self._load(name)
            if db_profiles.get(self.state.store, new_name) is not None:
                raise ConflictError(f'Profile "{new_name}" already exists')
            db_profiles.rename(self.state.store, name, new_name)
        self.state.events.lifecycle("profile-renamed", f"/1.0/profiles/{new_name}", old_name=name)

    def delete(self, name: str) -> None:
        if name == DEFAULT_PROFILE:
            raise ForbiddenError(f'The "{DEFAULT_PROFILE}" profile cannot be deleted')
        with self.lock:
            self._load(name)
            users = db_profiles.users(self.state.store, name)
            if users:
                raise ConflictError(f"Profile is currently in use by {', '.join(users)}")
            db_profiles.delete(self.state.store, name)
        log.info("Deleted profile %s", name, extra={"ctx": {"profile": name}})
        self.state.events.lifecycle("profile-deleted", f"/1.0/profiles/{name}")
