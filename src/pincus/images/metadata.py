"""An image's metadata.yaml (Incus's api.ImageMetadata): parsed once into a typed value."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from pincus.errors import InvalidError

# Incus's names for the architectures this host runs (shared/osarch): an image for any other is
# imported but refused at launch.
HOST_ARCHITECTURES = frozenset({"x86_64", "amd64"})

TRIGGERS = frozenset({"create", "copy", "start", "rename"})


@dataclass(frozen=True)
class Template:
    path: str  # where the rendered file goes inside the container
    template: str  # file name under templates/
    when: tuple[str, ...]
    create_only: bool = False
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageMetadata:
    architecture: str
    creation_date: int  # seconds since the epoch
    expiry_date: int = 0
    properties: dict[str, str] = field(default_factory=dict)
    templates: tuple[Template, ...] = ()

    @property
    def created_at(self) -> str:
        return datetime.fromtimestamp(self.creation_date, UTC).isoformat()


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidError(f"Image metadata: {what} must be a map")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _epoch(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidError(f"Image metadata: {what} must be a number of seconds since 1970")
    return value


def _templates(value: Any) -> tuple[Template, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidError("Image metadata: templates must be a map of paths")
    out = []
    for path, spec in value.items():
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise InvalidError(f'Image metadata: template path "{path}" must be absolute')
        if not isinstance(spec, dict) or not isinstance(spec.get("template"), str):
            raise InvalidError(f'Image metadata: template for "{path}" needs a "template" file name')
        name = spec["template"]
        if "/" in name or name in ("", ".", ".."):
            raise InvalidError(
                f'Image metadata: template file "{name}" must be a plain name under templates/'
            )
        when = spec.get("when") or []
        if not isinstance(when, list) or not all(isinstance(w, str) and w in TRIGGERS for w in when):
            raise InvalidError(f'Image metadata: template "{path}" has a "when" outside {sorted(TRIGGERS)}')
        out.append(
            Template(
                path, name, tuple(when), bool(spec.get("create_only")), _strings(spec.get("properties"), path)
            )
        )
    return tuple(out)


def parse(raw: bytes | None) -> ImageMetadata:
    """Refuses, as Incus does, metadata without architecture or creation_date."""
    if raw is None:
        raise InvalidError("The image has no metadata.yaml")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise InvalidError(f"Image metadata.yaml is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidError("Image metadata.yaml must be a map")
    arch = doc.get("architecture")
    if not isinstance(arch, str) or not arch:
        raise InvalidError("Image metadata.yaml has no architecture")
    if doc.get("creation_date") in (None, 0):
        raise InvalidError("Image metadata.yaml has no creation_date")
    return ImageMetadata(
        architecture=arch,
        creation_date=_epoch(doc["creation_date"], "creation_date"),
        expiry_date=_epoch(doc.get("expiry_date") or 0, "expiry_date"),
        properties=_strings(doc.get("properties"), "properties"),
        templates=_templates(doc.get("templates")),
    )
