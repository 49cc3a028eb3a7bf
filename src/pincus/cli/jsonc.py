"""`json.loads` and `json.dumps` (default arguments) straight on the C accelerator `_json`.

`import json` costs a client process about as much as all the rest of its imports: its Python
modules compile regular expressions, which imports `re` and with it `enum`, `functools` and
`collections`. The C scanner and encoder need none of that; what they are given here is what
`json.JSONDecoder()` and `json.JSONEncoder()` give them, so the results are the same.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"


def _not_serializable(o: Any) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


class _Context:
    """The attributes of a JSONDecoder that `_json.make_scanner` reads."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # typeshed: a JSONDecoder
_encode = _json.make_encoder(
    {}, _not_serializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
)


def loads(s: str | bytes | bytearray) -> Any:
    """A JSON document (UTF-8 when bytes); ValueError when it is not one."""
    if not isinstance(s, str):
        s = bytes(s).decode("utf-8", "surrogatepass")
    start = len(s) - len(s.lstrip(_WHITESPACE))
    try:
        obj, end = _scan(s, start)
    except StopIteration:
        raise ValueError(f"Expecting value: char {start}") from None
    if s[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return obj


def dumps(obj: Any) -> str:
    """What `json.dumps(obj)` returns."""
    if isinstance(obj, str):
        return str(_json.encode_basestring_ascii(obj))
    return "".join(_encode(obj, 0))
