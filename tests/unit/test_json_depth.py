"""The request body's nesting check: brackets inside strings, escapes and unterminated strings."""

from __future__ import annotations

import random

import pytest

from pincus.api.http import _json_depth


def walked(raw: bytes) -> int:
    """The same count, one byte at a time: what _json_depth must agree with."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [[{"b": "[[[["}]]]}', 4),
        (b'{"a": "\\"[[[", "b": [1]}', 2),
        (b'{"a": "\\\\", "b": [[1]]}', 3),
        (b'{"a": "no end [[[[[[', 1),
        (b'"\\"', 0),
        (b"", 0),
    ],
)
def test_depth_counts_brackets_outside_strings_only(raw: bytes, depth: int) -> None:
    assert _json_depth(raw) == depth == walked(raw)


def test_depth_agrees_with_a_byte_walk_on_random_input() -> None:
    rng = random.Random(11)
    for _ in range(20000):
        raw = bytes(rng.choice(b'[]{}"\\ a') for _ in range(rng.randint(0, 24)))
        assert _json_depth(raw) == walked(raw), raw
