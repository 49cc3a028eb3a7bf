"""What each common command's process imports, seen by `python -X importtime`, through the
launcher that scripts/setup.sh installs, against a small fake pincusd on a unix socket.

Any module outside ALLOWED (and the interpreter's own start-up) fails the test: a new import on
the common path costs every command its load time. Commands: the common ones named in issue 11,
and `GROUP list` / `GROUP show NAME` of every group in main.COMMANDS that has them, so a group
added to the table is covered without touching this file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pincus.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(Path(sys.executable).parent / "python")

# Module -> why a common command may load it (beyond what `python -S -c pass` loads itself).
ALLOWED = {
    "__future__": "`from __future__ import annotations` imports it (0.2 ms); keeps annotations unevaluated",
    "pincus": "the package (its __init__ holds only the version)",
    "pincus.cli": "the CLI package (empty)",
    "pincus.cli.main": "the COMMANDS table and main()",
    "pincus.cli.fastparse": "parses common command lines without argparse",
    "pincus.cli.client": "HTTP over the unix socket",
    "pincus.cli.jsonc": "JSON on the C accelerator",
    "pincus.cli.common": "helpers every command group uses",
    "pincus.cli.output": "tables",
    "pincus.cli.instance": "instance commands (list, info, start, stop, exec)",
    "pincus.cli.config": "config commands (config device ...)",
    "pincus.cli.devices": "device commands, shared by config and profile",
    "pincus.cli.network": "network commands",
    "pincus.cli.profile": "profile commands",
    "pincus.cli.image": "image commands (list, show)",
    "pincus.cli.storage": "storage commands (list, show)",
    "pincus.cli.cluster": "cluster commands (list, show)",
    "pincus.cli.yamlout": "YAML output of the usual documents without PyYAML (show commands)",
    "_socket": "C: the unix socket",
    "_json": "C: JSON scanner and encoder",
}


def _common(br: str) -> list[list[str]]:
    return [
        ["list"],
        ["info", "c1"],
        ["config", "device", "add", "c1", "eth1", "nic", f"network={br}"],
        ["config", "device", "remove", "c1", "eth0"],
        ["network", "list"],
        ["network", "show", br],
        ["start", "c1"],
        ["stop", "c1"],
        ["exec", "c1", "--", "true"],
    ]


def _group_commands() -> list[list[str]]:
    """`GROUP list` and `GROUP show x` of every group in COMMANDS that has them."""
    out = []
    for name, *_ in cli_main.COMMANDS:
        p = cli_main.parser([name])
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        group = subs[0].choices.get(name) if subs else None
        if group is None:
            continue
        inner = [a for a in group._actions if isinstance(a, argparse._SubParsersAction)]
        if not inner:
            continue
        if "list" in inner[0].choices:
            out.append([name, "list"])
        if "show" in inner[0].choices:
            out.append([name, "show", "x"])
    return out


INSTANCE = {
    "name": "c1", "type": "container", "status": "Running", "description": "", "profiles": ["default"],
    "config": {"volatile.eth0.hwaddr": "00:16:3e:00:00:01"},
    "devices": {"eth0": {"type": "nic", "network": "br0"}}, "expanded_config": {}, "expanded_devices": {},
    "architecture": "x86_64", "created_at": "2026-01-01T00:00:00Z",
}  # fmt: skip
STATE = {"status": "Running", "pid": 1, "network": {"eth0": {"addresses": ["10.250.0.5/24"], "counters": {}}}}
NETWORK = {"name": "br0", "type": "bridge", "managed": True, "config": {"ipv4.address": "10.250.0.1/24"},
           "description": "", "used_by": ["/1.0/instances/c1"], "status": "Created"}  # fmt: skip


def _metadata(method: str, path: str) -> Any:
    """A plausible answer to any request the commands make."""
    path = path.partition("?")[0]
    if method != "GET":
        return {}
    if path == "/1.0/instances":
        return [{**INSTANCE, "state": STATE}]
    if path.endswith("/state"):
        return STATE
    if path.startswith("/1.0/instances/"):
        return INSTANCE
    if path == "/1.0/networks":
        return [NETWORK]
    if path == "/1.0/cluster/members":
        return []
    if path.startswith("/1.0/networks/"):
        return NETWORK
    return [] if path.count("/") == 2 else {"name": path.rsplit("/", 1)[-1], "config": {}, "devices": {}}


def _answer(conn: socket.socket) -> None:
    with conn:
        f = conn.makefile("rb")
        head = f.readline().decode()
        method, path = head.split()[:2]
        headers = {}
        while (line := f.readline().strip()) != b"":
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        f.read(int(headers.get("content-length", "0")))
        meta: Any = _metadata(method, path)
        if headers.get("x-pincus-stdio") == "fds":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            _, fds, _, _ = socket.recv_fds(conn, 1, 3)
            for fd in fds:
                os.close(fd)
            meta = {"return": 0}
        body = json.dumps(
            {"type": "sync", "status": "Success", "status_code": 200, "metadata": meta}
        ).encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        conn.sendall(body)


@pytest.fixture(scope="module")
def fake_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A PINCUS_DIR whose unix.socket answers every request as _metadata says."""
    d = tmp_path_factory.mktemp("pincus")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(d / "unix.socket"))
    server.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            _answer(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield d
    finally:
        server.close()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bin") / "pincus"
    subprocess.run(
        [PYTHON, str(REPO / "scripts" / "write_launcher.py"), str(out), str(REPO / "src")], check=True
    )
    return out


def _imported(argv: list[str], env: dict[str, str]) -> set[str]:
    """The modules a process running ARGV imports, from -X importtime; it must succeed."""
    r = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return {
        line.split("|")[2].strip() for line in r.stderr.splitlines() if line.startswith("import time:")
    } - {"imported package"}


def _launched(launcher: Path) -> list[str]:
    """The launcher's own interpreter and flags (its #! line), plus -X importtime."""
    python, flags = launcher.read_text().splitlines()[0][2:].split()
    return [python, flags, "-X", "importtime", str(launcher)]


@pytest.mark.parametrize("argv", [*_common("br0"), *_group_commands()], ids=" ".join)
def test_common_command_imports_only_allowed_modules(
    argv: list[str], fake_daemon: Path, launcher: Path
) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PINCUS_DIR": str(fake_daemon)}
    start = _launched(launcher)
    floor = _imported([start[0], start[1], "-X", "importtime", "-c", "pass"], env)
    loaded = _imported([*start, *argv], env)
    allowed = floor | set(ALLOWED)
    extra = sorted(loaded - allowed)
    assert not extra, (
        f"pincus {' '.join(argv)} imports {extra}: add each to ALLOWED with its reason, or avoid it"
    )
    assert not {"argparse", "yaml", "re"} & loaded


@pytest.mark.parametrize("value", ["/tmp/p", "/tmp/p/", "", "/tmp/caf\udce9"])
def test_socket_path_without_os_is_what_os_gives(value: str) -> None:
    """Without `site`, the client reads $PINCUS_DIR from `posix`; the path must not change."""
    env = {b"PINCUS_DIR": os.fsencode(value), b"PYTHONPATH": os.fsencode(REPO / "src")}
    code = (
        "import sys; from pincus.cli.client import socket_path; assert 'os' not in sys.modules; "
        "sys.stdout.buffer.write(socket_path().encode('utf-8', 'surrogateescape'))"
    )
    out = subprocess.run([PYTHON, "-S", "-c", code], env=env, capture_output=True, check=True).stdout
    assert out == os.fsencode(os.path.join(value or "/var/lib/pincus", "unix.socket"))
