"""YAML as `yaml.safe_dump(doc, default_flow_style=False, sort_keys=False, allow_unicode=True)`
writes it, for the plain documents the API returns, without importing PyYAML.

PyYAML and the `re`, `enum`, `collections` it pulls in cost a `show` command more than the
rest of its start-up. The documents shown are maps and lists of short names, addresses and
paths: this writes those, and `dump` returns None for anything it is not sure PyYAML would
write the same way (floats, long or unusual strings, shared objects), which then goes to
PyYAML. tests/cli/test_yamlout.py compares the two on generated documents.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Unsure(Exception):
    pass


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-: ")
_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_")
# Words PyYAML's resolver reads as booleans or null: written quoted, to stay strings.
_RESOLVED = frozenset(
    [
        w
        for word in ("yes", "no", "true", "false", "on", "off")
        for w in (word, word.capitalize(), word.upper())
    ]
    + ["null", "Null", "NULL", "~", ""]
)
_WIDTH = 80  # PyYAML's default best_width: past it, a scalar is folded at a space


def dump(doc: Any) -> str | None:
    """DOC as PyYAML would write it, or None."""
    if not isinstance(doc, dict | list):
        return None
    out: list[str] = []
    try:
        if doc:
            _block(doc, 0, out, set())
        else:
            out.append("{}" if isinstance(doc, dict) else "[]")
    except _Unsure:
        return None
    return "\n".join(out) + "\n"


def _block(v: dict[Any, Any] | list[Any], indent: int, out: list[str], seen: set[int]) -> None:
    """A non-empty map or list, its lines starting at column INDENT."""
    if id(v) in seen:  # PyYAML would write an anchor and an alias
        raise _Unsure
    seen.add(id(v))
    pad = " " * indent
    if isinstance(v, dict):
        for key, value in v.items():
            if not isinstance(key, str) or not key or len(key) > 128:
                raise _Unsure
            _entry(f"{pad}{_scalar(key, len(pad))}:", value, indent, out, seen, True)
    else:
        for value in v:
            _entry(f"{pad}-", value, indent, out, seen, False)


def _entry(head: str, value: Any, indent: int, out: list[str], seen: set[int], in_map: bool) -> None:
    if isinstance(value, dict | list) and value:
        if in_map:
            out.append(head)
            # A list under a key is not indented further (PyYAML's indentless sequence).
            _block(value, indent + 2 if isinstance(value, dict) else indent, out, seen)
        else:
            # An item that is a map or list starts on the dash's line.
            lines: list[str] = []
            _block(value, indent + 2, lines, seen)
            out.append(f"{head} {lines[0][indent + 2 :]}")
            out += lines[1:]
    else:
        out.append(f"{head} {_scalar(value, len(head) + 1)}")


def _scalar(v: Any, column: int) -> str:
    """V written from COLUMN on."""
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict | list):  # empty
        return "{}" if isinstance(v, dict) else "[]"
    if not isinstance(v, str):
        raise _Unsure
    if " " in v and (column + len(v) + 2 > _WIDTH or "  " in v or v[0] == " " or v[-1] == " "):
        raise _Unsure
    if v in _RESOLVED:
        return f"'{v}'"
    if not set(v) <= _PLAIN or v[0] not in _FIRST or v.endswith(":") or ": " in v or " :" in v:
        raise _Unsure
    if v[0].isdigit():
        if v.isdigit() and (v == "0" or v[0] != "0"):
            return f"'{v}'"  # an int to PyYAML's resolver
        # PyYAML's numbers, times and dates have no "/", at most one ".", and no letters beside a
        # ":" unless they also have a "-" (a time zone): anything else (an address with its
        # prefix length, a dotted quad, a MAC with a hex letter) stays text.
        if not (
            "/" in v
            or (set(v) <= frozenset("0123456789.") and v.count(".") >= 2)
            or (":" in v and "-" not in v and any(c.isalpha() for c in v))
        ):
            raise _Unsure
    return v
