"""Connections to the OVN northbound and Open vSwitch databases, through ovsdbapp.

ovsdbapp keeps one connection per API *class* (two instances of one class silently share the
first connection), so each database has its own subclass here, and each remote its own subclass
made on first use: a pincusd that talks to a second central or a second switch database gets a
second connection rather than the first one's.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from typing import Any

from pincus.errors import HostError

_TIMEOUT = 10
_PROBE_TIMEOUT = 3
_REMOTE = re.compile(r"(unix:/[^\s,]+|(tcp|ssl):[A-Za-z0-9.:\[\]-]+:\d+)")

_lock = threading.Lock()
_apis: dict[tuple[str, str], Any] = {}


def check_remote(remote: str) -> str:
    """REMOTE if it is an OVSDB connection pincus can use: unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT,
    or a comma-separated list of them (the members of a clustered database)."""
    if not all(_REMOTE.fullmatch(part) for part in remote.split(",")):
        raise HostError(
            f'Invalid OVSDB connection "{remote}" (unix:/path, tcp:HOST:PORT, ssl:HOST:PORT; comma separated)'
        )
    return remote


def probe(remote: str, database: str, timeout: float = _PROBE_TIMEOUT) -> None:
    """Raise HostError unless REMOTE answers and serves DATABASE within TIMEOUT seconds.

    ovsdbapp itself would retry an unreachable remote for its whole timeout and then fail with a
    bare traceback; this says which remote did not answer.
    """
    errors = []
    for part in check_remote(remote).split(","):  # one member answering is enough
        try:
            r = subprocess.run(
                ["ovsdb-client", f"--timeout={max(1, int(timeout))}", "list-dbs", part],
                capture_output=True,
                text=True,
                timeout=timeout + 2,
                check=False,
            )
        except subprocess.TimeoutExpired:
            errors.append(f"{part}: no answer within {timeout:g} s")
            continue
        except OSError as e:
            raise HostError(
                f"ovsdb-client: {e.strerror} (is Open vSwitch installed? scripts/setup.sh)"
            ) from e
        if r.returncode != 0:
            errors.append(f"{part}: {r.stderr.strip()[-300:]}")
        elif database not in r.stdout.split():
            errors.append(f"{part}: does not serve database {database}")
        else:
            return
    raise HostError(f'OVSDB server "{remote}" is unreachable: {"; ".join(errors)}')


def _api(remote: str, database: str) -> Any:
    # Imported here: ovsdbapp pulls in the ovs library, which only OVN networks need.
    try:
        from ovsdbapp.backend.ovs_idl import connection
    except ImportError as e:
        raise HostError(f"OVN networks need the Python package ovsdbapp (pyproject.toml): {e}") from e

    key = (database, check_remote(remote))
    with _lock:
        api = _apis.get(key)
        if api is not None:
            return api
        probe(remote, database)
        if database == "OVN_Northbound":
            from ovsdbapp.schema.ovn_northbound.impl_idl import OvnNbApiIdlImpl as base
        else:
            from ovsdbapp.schema.open_vswitch.impl_idl import OvsdbIdl as base
        cls = type(f"{base.__name__}_{len(_apis)}", (base,), {})
        try:
            idl = connection.OvsdbIdl.from_server(remote, database)
            api = cls(connection.Connection(idl, timeout=_TIMEOUT))
        except Exception as e:  # ovsdbapp raises plain exceptions of many kinds
            raise HostError(f'connect to {database} at "{remote}": {e}') from e
        _apis[key] = api
        return api


def northbound(remote: str) -> Any:
    """The ovsdbapp API of the OVN northbound database at REMOTE."""
    return _api(remote, "OVN_Northbound")


def switch(remote: str) -> Any:
    """The ovsdbapp API of the Open vSwitch database at REMOTE."""
    return _api(remote, "Open_vSwitch")


def forget(remote: str) -> None:
    """Drop (and stop) the connections to REMOTE: its server is being stopped."""
    with _lock:
        for key in [k for k in _apis if k[1] == remote]:
            api = _apis.pop(key)
            # A connection that cannot stop cleanly is dropped all the same.
            with contextlib.suppress(Exception):
                api.ovsdb_connection.stop()


def run(api: Any, commands: list[Any], what: str, plain: bool = False) -> list[Any]:
    """Run COMMANDS in one transaction (all or nothing); their results.

    PLAIN: an ordinary transaction even on the switch database, whose own kind bumps `next_cfg` of
    the root row and so needs that row to exist already.
    """
    from ovsdbapp.backend.ovs_idl.transaction import Transaction

    try:
        txn_cm = Transaction(api, api.ovsdb_connection, _TIMEOUT, check_error=True) if plain else None
        with txn_cm or api.transaction(check_error=True) as txn:
            for command in commands:
                txn.add(command)
    except Exception as e:
        from ovsdbapp.exceptions import TimeoutException

        if isinstance(e, TimeoutException):
            # ovsdbapp's own text names the commands and an empty queue: say which server is silent.
            where = next((k[1] for k, v in _apis.items() if v is api), "the OVSDB server")
            raise HostError(
                f"{what}: {where} did not answer within {_TIMEOUT:g} s (is it running and reachable? "
                "On a cluster with pincus's own OVN central, the member with the lowest id runs it)"
            ) from e
        raise HostError(f"{what}: {e}") from e
    return [c.result for c in commands]
