"""/1.0 server config and /1.0/cluster routes -> the Cluster service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from pincus.api import operation_routes
from pincus.api.http import Async, Raw, Request, Router
from pincus.api.instance_routes import body_of as _body
from pincus.errors import InvalidError
from pincus.host.dqlite_node import DqliteNode
from pincus.host.facade import Host
from pincus.host.splice import splice
from pincus.server.cluster import ACCEPT_PATH
from pincus.server.server import Server

# What a peer without the cluster certificate may call on the TLS listener: asking to join.
PUBLIC = frozenset({("POST", ACCEPT_PATH), ("GET", "")})


def database_route(host: Host, node: DqliteNode) -> Callable[[Request], Any]:
    """POST /internal/database with "Upgrade: dqlite" from a member (cluster certificate): the
    connection becomes a pipe to this member's dqlite node (not in build(): the daemon adds it
    before the rest, as the database must be reachable before the server can be built)."""

    def route(req: Request) -> Raw:
        if req.handler.headers.get("Upgrade", "").lower() != "dqlite":
            raise InvalidError('POST /internal/database needs "Upgrade: dqlite"')
        local = host(node.connect_local)
        req.handler.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: dqlite\r\nConnection: Upgrade\r\n\r\n"
        )
        req.handler.wfile.flush()
        host(splice, local, req.connection)
        return Raw()

    return route


def add(r: Router, server: Server) -> None:
    cluster = server.cluster

    def put_server(req: Request, patch: bool) -> Any:
        body = _body(req)
        cluster.update_config(body.get("config", {}), patch=patch)
        return {}

    r.add("PUT", "/1.0", lambda req: put_server(req, patch=False))
    r.add("PATCH", "/1.0", lambda req: put_server(req, patch=True))

    r.add("GET", "/1.0/cluster", lambda req: cluster.info())

    def put_cluster(req: Request) -> Any:
        cluster.update(_body(req))
        return {}

    r.add("PUT", "/1.0/cluster", put_cluster)

    def list_members(req: Request) -> Any:
        items = cluster.members()
        if req.query.get("recursion", "0") != "0":
            return items
        return [f"/1.0/cluster/members/{m['server_name']}" for m in items]

    r.add("GET", "/1.0/cluster/members", list_members)
    r.add("POST", "/1.0/cluster/members", lambda req: cluster.add_token(_body(req)))
    r.add("GET", "/1.0/cluster/members/{name}", lambda req: cluster.member(req.params["name"]))

    def rename_member(req: Request) -> Any:
        new_name = _body(req).get("server_name")
        if not isinstance(new_name, str):
            raise InvalidError('Renaming a member needs its new "server_name"')
        cluster.rename(req.params["name"], new_name)
        return {}

    def remove_member(req: Request) -> Any:
        cluster.remove(req.params["name"], force=req.query.get("force", "0") not in ("", "0", "false"))
        return {}

    r.add("POST", "/1.0/cluster/members/{name}", rename_member)
    r.add("DELETE", "/1.0/cluster/members/{name}", remove_member)

    def change_member_state(req: Request) -> Async:
        name, body = req.params["name"], _body(req)
        action = body.get("action")
        if action not in ("evacuate", "restore"):
            raise InvalidError(f"Invalid action {action!r} (evacuate or restore)")
        timeout = operation_routes.stop_wait(body.get("timeout", 30), "the request body")
        cluster.member(name)  # 404 at once
        resources = {"cluster_members": [f"/1.0/cluster/members/{name}"]}
        description = "Evacuating cluster member" if action == "evacuate" else "Restoring cluster member"

        def run(op: object) -> None:
            if name != cluster.name:
                cluster.call(name, "POST", f"/1.0/cluster/members/{quote(name, safe='')}/state", body)
            elif action == "evacuate":
                cluster.set_member_state(name, "evacuated")  # first: no new instance lands here
                server.instances.evacuate(timeout)
            else:
                server.instances.restore()
                cluster.set_member_state(name, "online")

        return Async(server.operations.start(description, resources, run).to_api())

    r.add("POST", "/1.0/cluster/members/{name}/state", change_member_state)
    r.add("GET", "/internal/cluster/tokens", lambda req: cluster.tokens())

    def revoke(req: Request) -> Any:
        cluster.revoke_token(req.params["name"])
        return {}

    r.add("DELETE", "/internal/cluster/tokens/{name}", revoke)
    r.add("POST", ACCEPT_PATH, lambda req: cluster.accept(req.body))
