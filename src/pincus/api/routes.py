"""Routes -> server calls. Nothing else lives here."""

from __future__ import annotations

import os
import queue
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

from pincus.api.http import Request, Router, Stream
from pincus.errors import InvalidError
from pincus.events import LEVELS, Event
from pincus.server.server import Server


def _body(req: Request) -> dict[str, Any]:
    if req.body is None:
        return {}
    if not isinstance(req.body, dict):
        raise InvalidError("Request body must be a JSON object")
    return req.body


def _peer_closed(conn: socket.socket) -> bool:
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _receive_stdio(req: Request) -> tuple[int, int, int]:
    """The client's stdin, stdout and stderr, passed over the unix socket (SCM_RIGHTS).

    The client sends them only after our interim 100 response, so no buffered read of the
    request can have swallowed the byte that carries them.
    """
    req.handler.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    req.handler.wfile.flush()
    req.connection.settimeout(30)
    _, fds, _, _ = socket.recv_fds(req.connection, 1, 3)
    req.connection.settimeout(None)
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise InvalidError(
            "exec: the client must pass exactly three file descriptors (stdin, stdout, stderr)"
        )
    return fds[0], fds[1], fds[2]


def build(server: Server, shutdown: threading.Event) -> Router:
    r = Router()
    nets = server.networks

    r.add("GET", "", lambda req: ["/1.0"])
    r.add("GET", "/1.0", lambda req: server.info())

    def list_networks(req: Request) -> Any:
        items = nets.list_all()
        if req.query.get("recursion", "0") != "0":
            return items
        return [f"/1.0/networks/{n['name']}" for n in items]

    def create_network(req: Request) -> Any:
        nets.create(_body(req))
        return {}

    def rename_or_noop(req: Request) -> Any:
        body = _body(req)
        if "name" not in body:
            raise InvalidError('POST /1.0/networks/{name} needs a new "name"')
        nets.rename(req.params["name"], str(body["name"]))
        return {}

    r.add("GET", "/1.0/networks", list_networks)
    r.add("POST", "/1.0/networks", create_network)
    r.add("GET", "/1.0/networks/{name}", lambda req: nets.get(req.params["name"]))
    r.add("PUT", "/1.0/networks/{name}", lambda req: nets.update(req.params["name"], _body(req), patch=False))
    r.add(
        "PATCH", "/1.0/networks/{name}", lambda req: nets.update(req.params["name"], _body(req), patch=True)
    )
    r.add("POST", "/1.0/networks/{name}", rename_or_noop)
    r.add("DELETE", "/1.0/networks/{name}", lambda req: nets.delete(req.params["name"]))
    r.add("GET", "/1.0/networks/{name}/leases", lambda req: nets.leases(req.params["name"]))

    insts = server.instances

    def list_instances(req: Request) -> Any:
        items = insts.list_all()
        if req.query.get("recursion", "0") != "0":
            return items
        return [f"/1.0/instances/{i['name']}" for i in items]

    def create_instance(req: Request) -> Any:
        insts.create(_body(req))
        return {}

    def change_state(req: Request) -> Any:
        body = _body(req)
        timeout = body.get("timeout", 30)
        if not isinstance(timeout, int | float) or timeout < -1:
            raise InvalidError('"timeout" must be a number of seconds')
        insts.change_state(
            req.params["name"], str(body.get("action", "")), float(timeout), bool(body.get("force"))
        )
        return {}

    def exec_(req: Request) -> Any:
        name = req.params["name"]
        body = _body(req)
        argv, env, cwd = body.get("command"), body.get("environment") or {}, body.get("cwd") or None
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise InvalidError('exec needs "command": a non-empty list of strings')
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise InvalidError('"environment" must be a map of strings')
        if cwd is not None and not isinstance(cwd, str):
            raise InvalidError('"cwd" must be a string')
        insts.check_exec(name)
        fds = _receive_stdio(req)
        try:
            code = insts.exec(name, argv, env, cwd, fds)
        finally:
            for fd in fds:
                os.close(fd)
        return {"return": code}

    r.add("GET", "/1.0/instances", list_instances)
    r.add("POST", "/1.0/instances", create_instance)
    r.add("GET", "/1.0/instances/{name}", lambda req: insts.get(req.params["name"]))
    r.add(
        "PUT", "/1.0/instances/{name}", lambda req: insts.update(req.params["name"], _body(req), patch=False)
    )
    r.add(
        "PATCH", "/1.0/instances/{name}", lambda req: insts.update(req.params["name"], _body(req), patch=True)
    )
    r.add("DELETE", "/1.0/instances/{name}", lambda req: insts.delete(req.params["name"]))
    r.add("GET", "/1.0/instances/{name}/state", lambda req: insts.state_of(req.params["name"]))
    r.add("PUT", "/1.0/instances/{name}/state", change_state)
    r.add("POST", "/1.0/instances/{name}/exec", exec_)

    def events(req: Request) -> Stream:
        types = set((req.query.get("type") or "logging,lifecycle").split(","))
        level = LEVELS.get(req.query.get("level", "info"), 20)
        sub = server.state.events.subscribe(types, level)

        def lines() -> Iterator[Event]:
            try:
                while not shutdown.is_set():
                    try:
                        event = sub.queue.get(timeout=0.5)
                    except queue.Empty:
                        if _peer_closed(req.connection):
                            return
                        continue
                    if event is None:
                        return
                    yield event
            finally:
                sub.close()

        return Stream(lines())

    r.add("GET", "/1.0/events", events)

    def do_shutdown(req: Request) -> Any:
        timeout = float(req.query.get("timeout", "60"))
        server.shutdown_instances(timeout)
        shutdown.set()
        return {}

    r.add("PUT", "/internal/shutdown", do_shutdown)
    return r
