"""ETags of the objects clients read-modify-write (instances, networks, profiles).

An ETag covers exactly the fields a PUT replaces, so a change a client could have
overwritten changes it, and nothing else does (a state change of an instance does not).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pincus.errors import PreconditionFailedError


def etag(fields: Any) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_if_match(if_match: str | None, fields: Any) -> None:
    """Refuse a write whose If-Match names another version than the current one (or none: any)."""
    if not if_match:
        return
    wanted = {t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")}
    if "*" in wanted:
        return
    if etag(fields) not in wanted:
        raise PreconditionFailedError("ETag doesn't match: the object changed since it was read")


def instance_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What a PUT of an instance replaces; volatile keys are pincus's, so they do not count."""
    config = {k: v for k, v in doc.get("config", {}).items() if not k.startswith("volatile.")}
    keys = ("architecture", "devices", "ephemeral", "profiles", "description")
    return {"config": config, **{k: doc.get(k) for k in keys}}


def network_fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("name", "managed", "type", "description", "config")}


def profile_fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("config", "description", "devices")}
