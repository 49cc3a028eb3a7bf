"""The door to the host (pincus.host.facade): hooks see, delay and fail calls in order, and no
driver, server or API module calls a host module except through it."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pincus.errors import HostError
from pincus.host import facade, links, sysfs
from pincus.host.facade import Host
from tests.unit.fakehost import FakeHost

SRC = Path(__file__).resolve().parents[2] / "src" / "pincus"
# Layers above host/ that must go through the door. server/daemon.py's bootstrap (state dir,
# pid lock, socket mode) runs before there is a State, so it is the one place allowed around it.
GUARDED = ("networks", "devices", "instances", "server")
BOOTSTRAP = {SRC / "server" / "daemon.py"}
PURE = {"checks", "facade", "ovs_layout"}  # validation, the door itself, daemon file names: no OS


def _direct_host_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    functions: set[str] = set()
    for stmt in tree.body:
        if not isinstance(stmt, ast.ImportFrom) or not stmt.module:
            continue
        if stmt.module == "pincus.host":
            modules |= {a.asname or a.name for a in stmt.names if a.name not in PURE}
        elif stmt.module.startswith("pincus.host.") and stmt.module.rsplit(".", 1)[-1] not in PURE:
            functions |= {a.asname or a.name for a in stmt.names if a.name[:1].islower()}
    # Where a host function may stand: first argument of host(...), or right after the door in
    # undo.add(host, fn, ...) so the undo goes through it too.
    through_door: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "host") or (
                isinstance(f, ast.Attribute) and f.attr == "host"
            ):
                through_door.add(id(node.args[0]))
            elif isinstance(f, ast.Attribute) and f.attr == "add" and len(node.args) > 1:
                door = node.args[0]
                if isinstance(door, ast.Attribute) and door.attr == "host":
                    through_door.add(id(node.args[1]))
    out = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr[:1].islower()  # a class (a record type) is data, not a host call
            and id(node) not in through_door
        ):
            out.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in functions and id(node) not in through_door:
            out.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.id}")
    return out


def test_no_layer_above_host_calls_it_around_the_door() -> None:
    found = [
        hit
        for layer in GUARDED
        for path in sorted((SRC / layer).rglob("*.py"))
        if path not in BOOTSTRAP
        for hit in _direct_host_calls(path)
    ]
    assert found == [], "call these through state.host(fn, ...):\n" + "\n".join(found)


def test_the_guard_sees_a_direct_call(tmp_path: Path) -> None:
    # The check above must be able to fail: a direct call, and a function imported by name.
    bad = SRC / "devices" / "_probe_for_guard.py"
    bad.write_text(
        "from pincus.host import links\nfrom pincus.host.sysfs import interface_exists\n"
        "def f(host, undo):\n    host(links.get_link, 'x')\n    links.get_link('x')\n"
        "    interface_exists('x')\n"
        "    undo.add(links.delete_link, 'x')\n    undo.add(self.host, links.delete_link, 'x')\n"
    )
    try:
        hits = _direct_host_calls(bad)
    finally:
        bad.unlink()
    assert sorted(h.split(": ", 1)[1] for h in hits) == [
        "interface_exists",
        "links.delete_link",
        "links.get_link",
    ]


def test_without_hooks_a_call_is_a_plain_call() -> None:
    host = Host()
    assert host(sysfs.interface_exists, "lo") is True
    assert host(max, 3, 7) == 7


def test_hooks_see_each_call_by_name_outermost_first() -> None:
    host = Host()
    seen: list[str] = []

    def recorder(tag: str) -> facade.Hook:
        def hook(name: str, call: Callable[[], Any]) -> Any:
            seen.append(f"{tag}>{name}")
            result = call()
            seen.append(f"{tag}<")
            return result

        return hook

    outer, inner = recorder("outer"), recorder("inner")
    with host.hooked(outer), host.hooked(inner):
        assert host(sysfs.interface_exists, "lo") is True
    assert seen == ["outer>sysfs.interface_exists", "inner>sysfs.interface_exists", "inner<", "outer<"]
    seen.clear()
    host(sysfs.interface_exists, "lo")  # hooks gone with their blocks
    assert seen == []


def test_a_hook_fails_the_nth_call_and_the_call_never_runs() -> None:
    host = Host()
    ran: list[int] = []
    count = 0

    def fail_second(name: str, call: Callable[[], Any]) -> Any:
        nonlocal count
        count += 1
        if count == 2:
            raise HostError(f"injected failure at {name}")
        return call()

    def step(n: int) -> None:
        ran.append(n)

    with host.hooked(fail_second):
        host(step, 1)
        with pytest.raises(HostError, match=r"injected failure at test_host_facade\..*step"):
            host(step, 2)
        host(step, 3)
    assert ran == [1, 3]


def test_call_name_is_module_and_function() -> None:
    assert facade.call_name(sysfs.interface_exists) == "sysfs.interface_exists"


def test_the_unit_tests_fake_host_fails_a_host_call_it_does_not_know() -> None:
    ran: list[str] = []

    def create_bridge(name: str) -> None:  # stands in for a host function nobody taught the fake
        ran.append(name)

    create_bridge.__module__, create_bridge.__qualname__ = "pincus.host.links", "create_bridge"
    host, fake = Host(), FakeHost()
    with host.hooked(fake), pytest.raises(pytest.fail.Exception, match=r"links\.create_bridge"):
        host(create_bridge, "hsbr0")
    assert (ran, fake.unknown, fake.calls) == ([], ["links.create_bridge"], [])
    with host.hooked(fake):
        assert host(links.get_link, "hs0") is None  # a query it knows: answered, not run
        host(links.set_up, "hs0")  # a change it knows: recorded, not run
    assert fake.calls == [("links.set_up", ("hs0",))]
