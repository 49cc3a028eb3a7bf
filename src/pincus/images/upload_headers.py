"""What an Incus client says about an upload in its headers: the multipart boundary and the
X-Incus-* values (properties and aliases as query strings)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, parse_qsl

from pincus.errors import InvalidError

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def boundary_of(content_type: str) -> str:
    m = _BOUNDARY.search(content_type)
    if m is None or not 1 <= len(m.group(1)) <= 70:
        raise InvalidError("multipart/form-data upload without a valid boundary")
    return m.group(1)


def properties(value: str) -> dict[str, str]:
    """X-Incus-properties: a URL query string of key=value pairs."""
    return dict(parse_qsl(value, keep_blank_values=True)) if value else {}


def aliases(value: str) -> list[str]:
    """X-Incus-aliases: "alias=a&alias=b", or one plain name."""
    if not value:
        return []
    return parse_qs(value).get("alias") or [value]


def is_true(value: str) -> bool:
    return value.lower() in ("1", "true", "yes", "on")
