"""What the API fuzz (test_fuzz.py) and the hostile-values table (test_hostile_values.py) share:
requests over the daemon's unix socket, a cheap look at the host inside the test's namespace, and
the rule that a refusal names what it refused."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from tests.pincus_testlib import Daemon

BASE_URL = "http://pincus"


class _UnixConnection(HTTPConnection):
    def __init__(self, socket_path: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(120)
        sock.connect(self._socket_path)
        return sock


class _UnixPool(HTTPConnectionPool):
    def __init__(self, socket_path: str) -> None:
        super().__init__("pincus", timeout=urllib3.Timeout(connect=10, read=120))
        self._socket_path = socket_path

    def _new_conn(self) -> HTTPConnection:
        return _UnixConnection(self._socket_path, "pincus", timeout=self.timeout.connect_timeout)


class _UnixAdapter(HTTPAdapter):
    """Every URL goes to one unix socket; the host part of the URL is ignored."""

    def __init__(self, socket_path: str) -> None:
        super().__init__()
        self._pool = _UnixPool(socket_path)

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        return self._pool

    def close(self) -> None:
        self._pool.close()
        super().close()


def session_for(daemon: Daemon) -> requests.Session:
    session = requests.Session()
    session.mount("http://", _UnixAdapter(str(daemon.dir / "unix.socket")))
    return session


# Kernel fields that move on their own (counters, timers) and so say nothing about a change.
_MOVING = ("stats", "stats64", "_timer", "_life_time", "valid_life_time", "preferred_life_time")


# ... and what follows a peer's carrier or STP a moment after a change an accepted request made.
_FOLLOWING = {"operstate", "state"}
_CARRIER_FLAGS = {"NO-CARRIER", "LOWER_UP", "linkdown"}


def _steady(doc: Any) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("flags"), list):
        doc = {**doc, "flags": [f for f in doc["flags"] if f not in _CARRIER_FLAGS]}
    if isinstance(doc, dict):
        return {k: _steady(v) for k, v in doc.items() if not k.endswith(_MOVING) and k not in _FOLLOWING}
    if isinstance(doc, list):
        return [_steady(v) for v in doc]
    return doc


# Files a running daemon or dnsmasq writes on its own.
_OWN_FILES = ("pincus.db", "pincusd.stderr", "pincusd.lock", "dnsmasq.leases", "dnsmasq.pid", "logs")


def host_view(daemon: Daemon) -> dict[str, Any]:
    """Links, addresses and the nftables ruleset of the daemon's namespace, and its files (the
    database excluded: its rows are compared apart): what a refused request must leave alone."""
    out = subprocess.run(
        [
            "nsenter",
            f"--net={daemon.ns.path}",
            "sh",
            "-c",
            "ip -d -j link show; echo '\x1e'; ip -j addr show; echo '\x1e'; nft -j list ruleset",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    link, addr, nft = (json.loads(part) if part.strip() else [] for part in out.split("\x1e"))
    files = {}
    for path in sorted(daemon.dir.rglob("*")):
        rel = path.relative_to(daemon.dir)
        if rel.parts[0].startswith(_OWN_FILES) or path.name in _OWN_FILES or path.name.endswith(".log"):
            continue
        if path.is_dir():
            continue  # an empty directory the daemon keeps (networks/) holds nothing of anyone's
        files[str(rel)] = path.read_bytes() if path.is_file() else b"<special>"
    return {"link": _steady(link), "addr": _steady(addr), "nft": _steady(nft), "files": files}


def db_rows(daemon: Daemon) -> list[str]:
    return [row for row in daemon.db_dump() if "operations" not in row]


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [key for key in before if before[key] != after[key]]


def describe(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """DIFFERENCES, with the files that came, went or changed named."""
    out = []
    for key in differences(before, after):
        if key == "files":
            old, new = before[key], after[key]
            out += [f"file {f}" for f in sorted(set(old) | set(new)) if old.get(f) != new.get(f)]
        else:
            out.append(key)
    return out


def tokens_of(value: Any) -> set[str]:
    """Every key and scalar in a request part, as text: what a refusal may name."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(str(k))
            out |= tokens_of(v)
    elif isinstance(value, list):
        for v in value:
            out |= tokens_of(v)
    elif isinstance(value, bool):
        out.add("true" if value else "false")
    elif value is not None:
        out.add(str(value))
    return out


def names_one_of(message: str, tokens: set[str]) -> bool:
    """MESSAGE names one of TOKENS, quoted as the daemon quotes (plain, repr or JSON-escaped)."""
    low = message.casefold()
    for token in tokens:
        if token == "":
            if '""' in message:  # an empty name or key, shown quoted
                return True
            continue
        forms = {token, unquote(token), repr(token)[1:-1], json.dumps(token)[1:-1]}
        if any(form.casefold() in low for form in forms if form):
            return True
    return False


def pincus_dir_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in _OWN_FILES
    }
