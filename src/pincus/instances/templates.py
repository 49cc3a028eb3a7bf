"""Image templates (metadata.yaml `templates:`): which apply at a start, and their rendering.

Only the subset of pongo2 that images use for hostname and hosts files is rendered:
`{{ instance.name }}`, `{{ container.name }}` (and `.hostname`) and plain text. A template using
anything else is skipped by the caller rather than written half-rendered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from pincus.errors import InvalidError

_VAR = re.compile(r"{{-?\s*([A-Za-z_][A-Za-z0-9_.]*)\s*-?}}")
_NAMES = ("instance.name", "container.name", "instance.hostname", "container.hostname")


@dataclass(frozen=True)
class Template:
    path: str  # absolute path inside the container
    template: str  # file name under the volume's templates/
    when: tuple[str, ...]


def parse_metadata(text: str) -> list[Template]:
    """The templates of an image's metadata.yaml; InvalidError on a malformed entry."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InvalidError(f"Invalid image metadata.yaml: {e}") from None
    out = []
    entries: Any = doc.get("templates") or {} if isinstance(doc, dict) else {}
    if not isinstance(entries, dict):
        raise InvalidError('Invalid image metadata.yaml: "templates" is not a map')
    for path, spec in entries.items():
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise InvalidError(f"Invalid image template path {path!r}: must be absolute")
        if not isinstance(spec, dict) or not isinstance(spec.get("template"), str):
            raise InvalidError(f"Invalid image template for {path}: needs a template file")
        name = spec["template"]
        if "/" in name or name in ("", ".", ".."):
            raise InvalidError(f"Invalid image template file name {name!r} for {path}")
        when = spec.get("when") or []
        if not isinstance(when, list):
            raise InvalidError(f'Invalid image template for {path}: "when" is not a list')
        out.append(Template(path, name, tuple(str(w) for w in when)))
    return out


def due(templates: list[Template], trigger: str | None) -> list[Template]:
    """Those a start applies: the pending trigger's (create, copy), and every start's."""
    return [t for t in templates if "start" in t.when or (trigger is not None and trigger in t.when)]


def render(text: str, name: str) -> str | None:
    """TEXT with the instance's name filled in; None if it uses more than this subset."""
    if "{%" in text or "{#" in text:
        return None
    unknown = False

    def value(m: re.Match[str]) -> str:
        nonlocal unknown
        if m.group(1) in _NAMES:
            return name
        unknown = True
        return ""

    out = _VAR.sub(value, text)
    return None if unknown or "{{" in out else out
