"""/1.0/instances: reads answer at once; changes run as background operations, as in Incus."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from pincus.api import filters, operation_routes
from pincus.api.exec_ws import ExecRequest, ExecSession, ExecSessions
from pincus.api.http import Async, Raw, Request, Router, Tagged
from pincus.errors import ConflictError, InvalidError, PincusError
from pincus.host import volume_stream
from pincus.server import etag
from pincus.server.moves import STOPPED_ONLY
from pincus.server.server import Server

log = logging.getLogger(__name__)


def body_of(req: Request) -> dict[str, Any]:
    if req.body is None:
        return {}
    if not isinstance(req.body, dict):
        raise InvalidError("Request body must be a JSON object")
    return req.body


def background(server: Server, description: str, name: str, work: Callable[[], None]) -> Async:
    resources = {"instances": [f"/1.0/instances/{name}"], "containers": [f"/1.0/containers/{name}"]}

    def run(op: object) -> None:
        work()

    return Async(server.operations.start(description, resources, run).to_api())


def _receive_stdio(req: Request) -> tuple[int, int, int]:
    """pincus's own client passes its stdin, stdout and stderr over the socket (SCM_RIGHTS).

    It sends them only after our interim 100 response, so no buffered read of the request can
    have swallowed the byte that carries them.
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


def _int(body: dict[str, Any], key: str, default: int = 0) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidError(f'"{key}" must be an integer')
    return value


def add(r: Router, server: Server, sessions: ExecSessions) -> None:
    insts = server.instances
    cluster = server.cluster

    def elsewhere(name: str) -> str | None:
        """The member instance NAME lives on, when that is not this daemon's."""
        if not cluster.clustered:
            return None
        location = insts.location_of(name)
        return location if location and location != cluster.name else None

    def forwarded(handler: Callable[[Request], Any], description: str) -> Callable[[Request], Any]:
        """HANDLER here, or the same request sent to the member the instance lives on (over TLS;
        a change runs as a local operation that waits for the member's)."""

        def route(req: Request) -> Any:
            name = req.params["name"]
            member = elsewhere(name)
            if member is None:
                return handler(req)
            target = req.path + (f"?{urlencode(req.query)}" if req.query else "")
            if req.method == "GET":
                return cluster.call(member, "GET", target)
            return background(
                server, description, name, lambda: cluster.call(member, req.method, target, req.body)
            )

        return route

    def remote_views(items: list[dict[str, Any]], recursion: str) -> list[dict[str, Any]]:
        """Instances living on other members as their members see them; on an Offline member, as
        the database has them with status Offline (not lost)."""
        statuses = cluster.statuses()
        out = []
        for item in items:
            member = item.get("location")
            if member in (None, "", "none", cluster.name):
                out.append(item)
                continue
            view = None
            if statuses.get(member) not in (None, "Offline"):
                try:
                    view = cluster.call(
                        member, "GET", f"/1.0/instances/{quote(item['name'], safe='')}?recursion={recursion}"
                    )
                except PincusError as e:
                    log.warning("Instance %s on member %s: %s", item["name"], member, e)
            if not isinstance(view, dict):
                view = {**item, "status": "Offline", "status_code": 112}
                view.pop("state", None)
            out.append(view)
        return out

    def list_instances(req: Request) -> Any:
        recursion = req.query.get("recursion", "0")
        if recursion == "0" and not req.query.get("filter"):
            return [f"/1.0/instances/{n}" for n in insts.names()]
        items = insts.list_full() if recursion == "2" else insts.list_all()
        if cluster.clustered:
            items = remote_views(items, "1" if recursion == "2" else "0")
        keep = filters.parse(req.query.get("filter", ""))
        items = [i for i in items if keep(i)]
        if recursion == "0":
            return [f"/1.0/instances/{i['name']}" for i in items]
        return items

    def create(req: Request) -> Async:
        body = body_of(req)
        name = str(body.get("name") or "")
        member = cluster.place(req.query.get("target"))
        if member and member != cluster.name:
            target = f"/1.0/instances?target={quote(member, safe='')}"
            return background(
                server, "Creating instance", name, lambda: cluster.call(member, "POST", target, body)
            )
        insts.check_create(body)

        def work() -> None:
            insts.create(body)
            if body.get("start") is True:
                insts.start(name)

        return background(server, "Creating instance", name, work)

    def get(req: Request) -> Tagged:
        name = req.params["name"]
        doc = insts.get_full(name) if req.query.get("recursion", "0") != "0" else insts.get(name)
        return Tagged(doc, etag.etag(etag.instance_fields(doc)))

    def update(req: Request, patch: bool) -> Async:
        name, body, if_match = req.params["name"], body_of(req), req.if_match
        # 412 at once for a stale ETag; the operation checks again under the instance's lock.
        etag.check_if_match(if_match, etag.instance_fields(insts.get(name)))

        def work() -> None:
            insts.update(name, body, patch=patch, if_match=if_match)

        return background(server, "Updating instance", name, work)

    def rename(req: Request) -> Async:
        name, body = req.params["name"], body_of(req)
        target = req.query.get("target")
        if target:
            return move(name, body, target)
        if body.get("migration") or body.get("live"):
            raise InvalidError(
                'A "migration" to another server is not supported: within a cluster, move with ?target=MEMBER'
            )
        new_name = body.get("name")
        if not isinstance(new_name, str) or not new_name:
            raise InvalidError('Renaming needs a new "name"')
        insts.get(name)  # 404 at once, not in the operation
        return background(server, "Renaming instance", name, lambda: insts.rename(name, new_name))

    def move(name: str, body: dict[str, Any], target: str) -> Async:
        """POST ?target=MEMBER with {"migration": true}: a stopped instance to another member, as
        `incus move NAME --target MEMBER` asks it (here: the member the instance lives on)."""
        if body.get("migration") is not True:
            raise InvalidError(f'Moving instance "{name}" to member "{target}" needs "migration": true')
        if body.get("live"):
            raise ConflictError(f'{STOPPED_ONLY}: "live" migration of "{name}" is not supported')
        if body.get("name") not in (None, "", name):
            raise InvalidError(f'Move "{name}" and rename it separately: a move keeps the instance\'s name')
        server.moves.check_target(name, target)
        return background(server, "Moving instance", name, lambda: server.moves.move(name, target))

    def send_volume(req: Request) -> Raw:
        """A member pulling the volume of an instance moving to it (the other end of Moves.receive)."""
        path = server.moves.volume_to_send(req.params["name"])
        h = req.handler
        h.send_response(200)
        h.send_header("Content-Type", "application/x-tar")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            server.host(volume_stream.send, path, h.wfile)
        except PincusError as e:  # the body lacks its last chunk: the receiver refuses it
            log.warning("Sending the volume of %s failed: %s", req.params["name"], e)
        return Raw()

    def receive_volume(req: Request) -> Any:
        server.moves.receive(req.params["name"], body_of(req).get("source"))
        return {}

    def drop_volume(req: Request) -> Any:
        server.moves.drop(req.params["name"])
        return {}

    def delete(req: Request) -> Async:
        name = req.params["name"]
        insts.get(name)
        return background(server, "Deleting instance", name, lambda: insts.delete(name))

    def change_state(req: Request) -> Async:
        name, body = req.params["name"], body_of(req)
        action = str(body.get("action", ""))
        timeout = operation_routes.stop_wait(body.get("timeout", 30), "the request body")
        if action not in ("start", "stop", "restart"):
            raise InvalidError(f'Invalid action "{action}" (start, stop or restart)')
        insts.get(name)
        force = bool(body.get("force"))
        descriptions = {"start": "Starting", "stop": "Stopping", "restart": "Restarting"}
        return background(
            server,
            f"{descriptions[action]} instance",
            name,
            lambda: insts.change_state(name, action, timeout, force),
        )

    def exec_(req: Request) -> Any:
        name, body = req.params["name"], body_of(req)
        if (member := elsewhere(name)) is not None:
            raise InvalidError(f'Instance "{name}" lives on cluster member "{member}": run exec there')
        argv, env, cwd = body.get("command"), body.get("environment") or {}, body.get("cwd") or None
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise InvalidError('exec needs "command": a non-empty list of strings')
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise InvalidError('"environment" must be a map of strings')
        if cwd is not None and not isinstance(cwd, str):
            raise InvalidError('"cwd" must be a string')
        if _int(body, "user") != 0 or _int(body, "group") != 0:
            raise InvalidError("exec as another user or group is not supported (user and group must be 0)")
        insts.check_exec(name)
        if req.handler.headers.get("X-Pincus-Stdio") == "fds":
            fds = _receive_stdio(req)
            try:
                code = insts.exec(name, argv, env, cwd, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            return {"return": code}
        if body.get("record-output"):
            raise InvalidError("exec record-output is not supported: use wait-for-websocket")
        if not body.get("wait-for-websocket"):
            return background_exec_detached(name, argv, env, cwd)
        request = ExecRequest(bool(body.get("interactive")), _int(body, "width"), _int(body, "height"))

        def run(fds: tuple[int, int, int], tty: bool, started: Callable[[int], None]) -> int:
            return insts.exec(name, argv, env, cwd, fds, tty=tty, started=started)

        session = ExecSession(
            request,
            run,
            lambda pid, sig: insts.signal_exec(name, pid, sig),
            lambda width, height: insts.open_terminal(name, width, height),
        )

        def prepare(op: Any) -> None:
            session.open_stdio()
            op.metadata["fds"] = {channel: op.new_secret(channel) for channel in session.channels}
            sessions.add(op.id, session)

        def work(op: Any) -> dict[str, Any]:
            try:
                return dict(session.run(op))
            finally:
                sessions.drop(op.id)

        resources = {"instances": [f"/1.0/instances/{name}"], "containers": [f"/1.0/containers/{name}"]}
        op = server.operations.start("Executing command", resources, work, "websocket", prepare)
        return Async(op.to_api())

    def background_exec_detached(name: str, argv: list[str], env: dict[str, str], cwd: str | None) -> Async:
        """No websockets wanted: the command runs with no stdio, only its exit status is kept."""
        resources = {"instances": [f"/1.0/instances/{name}"], "containers": [f"/1.0/containers/{name}"]}

        def work(op: Any) -> dict[str, Any]:
            return {"return": insts.exec_detached(name, argv, env, cwd)}

        return Async(server.operations.start("Executing command", resources, work).to_api())

    def console_log(req: Request) -> Raw:
        """Incus's console log of a container: the text as it is, not an envelope."""
        data = insts.console_log(req.params["name"])
        h = req.handler
        h.send_response(200)
        h.send_header("Content-Type", "text/plain; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if data:
            h.wfile.write(data)
        return Raw()

    r.add("GET", "/1.0/instances", list_instances)
    r.add("POST", "/1.0/instances", create)
    r.add("GET", "/1.0/instances/{name}", forwarded(get, ""))
    r.add(
        "PUT", "/1.0/instances/{name}", forwarded(lambda req: update(req, patch=False), "Updating instance")
    )
    r.add(
        "PATCH", "/1.0/instances/{name}", forwarded(lambda req: update(req, patch=True), "Updating instance")
    )
    r.add("POST", "/1.0/instances/{name}", forwarded(rename, "Renaming instance"))
    r.add("DELETE", "/1.0/instances/{name}", forwarded(delete, "Deleting instance"))
    state_of = forwarded(lambda req: insts.state_of(req.params["name"]), "")
    r.add("GET", "/1.0/instances/{name}/state", state_of)
    r.add("PUT", "/1.0/instances/{name}/state", forwarded(change_state, "Changing instance state"))
    r.add("POST", "/1.0/instances/{name}/exec", exec_)
    r.add("GET", "/internal/instances/{name}/volume", send_volume)
    r.add("POST", "/internal/instances/{name}/volume", receive_volume)
    r.add("DELETE", "/internal/instances/{name}/volume", drop_volume)
    r.add("GET", "/1.0/instances/{name}/console", console_log)
    r.add("DELETE", "/1.0/instances/{name}/console", lambda req: insts.clear_console_log(req.params["name"]))
