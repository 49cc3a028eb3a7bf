"""fastparse against argparse: for every command in main.COMMANDS (whatever groups it holds), any
command line fastparse accepts must give exactly argparse's namespace; what it is not sure of
it leaves to argparse (None). Command lines come from each command's own options and
positionals, mixed with words that trip argparse up (`--`, `-h`, abbreviations, attached values)."""

from __future__ import annotations

import argparse
import contextlib
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pincus.cli import main as cli_main
from pincus.cli.fastparse import parse


def _argparse(argv: list[str]) -> dict[str, Any] | None:
    """What main's argparse path makes of ARGV (None: a usage error or help)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return vars(cli_main._parse_slowly(argv))
    except SystemExit:
        return None


def _leaves(p: argparse.ArgumentParser, path: list[str]) -> list[tuple[list[str], argparse.ArgumentParser]]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, p)]
    out = []
    seen: set[int] = set()
    for word, child in subs[0].choices.items():
        if id(child) not in seen:
            seen.add(id(child))
            out += _leaves(child, [*path, word])
    return out


LEAVES = _leaves(cli_main.parser([]), [])
NOISE = ["c1", "eth1", "nic", "a=b", "", "x y", "5", "--", "-", "-h", "--help", "-1", "json", "yaml", "bad",
         "--form", "-fjson", "--force=1", "--timeout=abc", "--timeout=-2", "ls", "rm"]  # fmt: skip


def _words(p: argparse.ArgumentParser) -> list[str]:
    flags = [s for a in p._actions for s in a.option_strings]
    return flags + [f"{s}=v" for s in flags if s.startswith("--")] + NOISE


def _same(v: Any) -> Any:
    """V, with a function as its code and closure: a builder's closure is made anew per parser."""
    if callable(v) and hasattr(v, "__code__"):
        return (v.__code__, tuple(_same(c.cell_contents) for c in v.__closure__ or ()))
    return v


def _check(argv: list[str]) -> bool:
    fast = parse(cli_main.COMMANDS, argv)
    if fast is None:
        return False
    slow = _argparse(argv)
    assert slow is not None, f"argparse refuses {argv}"
    assert {k: _same(v) for k, v in vars(fast).items()} == {k: _same(v) for k, v in slow.items()}, argv
    return True


def test_leaves_cover_every_command() -> None:
    paths = {" ".join(path) for path, _ in LEAVES}
    for must in ("list", "info", "start", "stop", "exec", "network list", "network show",
                 "config device add", "config device remove"):  # fmt: skip
        assert must in paths


@pytest.mark.parametrize(
    "argv",
    [
        ["list"], ["ls", "c", "--format", "json"], ["list", "-c", "n4", "-f", "csv"],
        ["list", "--format=yaml"], ["info"], ["info", "c1"], ["start", "c1", "c2"],
        ["stop", "c1", "-f", "--timeout", "3"], ["stop", "c1", "--timeout=7.5"],
        ["exec", "c1", "--", "ls", "-l"], ["exec", "c1", "sh", "x"], ["exec", "c1"],
        ["network", "list"], ["network", "ls", "-f", "json"], ["network", "show", "br0"],
        ["config", "device", "add", "c1", "eth1", "nic", "network=br0", "name=eth1"],
        ["config", "device", "remove", "c1", "eth1", "eth2"], ["config", "device", "rm", "c1", "eth1"],
        ["delete", "c1", "-f"], ["profile", "device", "add", "p", "e", "nic"],
    ],
)  # fmt: skip
def test_common_command_lines_take_the_fast_path(argv: list[str]) -> None:
    assert _check(argv), f"{argv} fell back to argparse"


@pytest.mark.parametrize(
    "argv",
    [
        [], ["-h"], ["list", "--help"], ["nope"], ["stop"], ["stop", "-f", "c1"],
        ["stop", "c1", "--timeout", "x"], ["list", "--format", "nope"], ["list", "--form", "json"],
        ["list", "-fjson"], ["network"], ["network", "show"], ["network", "show", "a", "b"],
        ["exec", "-t", "c1", "ls"], ["exec", "c1", "--env", "A=1", "sh"], ["list", "c1", "-c", "n", "c2"],
        ["network", "create", "x", "--type=physical", "parent=eth1"],
    ],
)  # fmt: skip
def test_anything_unsure_is_left_to_argparse(argv: list[str]) -> None:
    assert not _check(argv)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fastparse_agrees_with_argparse(data: st.DataObject) -> None:
    path, p = data.draw(st.sampled_from(LEAVES))
    argv = [*path, *data.draw(st.lists(st.sampled_from(_words(p)), max_size=6))]
    _check(argv)
