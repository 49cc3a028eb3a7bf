"""Routes -> server calls. Nothing else lives here."""

from __future__ import annotations

import threading
from typing import Any

from pincus.api import cluster_routes, image_routes, instance_routes, operation_routes, storage_routes
from pincus.api.exec_ws import ExecSessions
from pincus.api.http import Request, Router, Tagged
from pincus.api.instance_routes import body_of as _body
from pincus.errors import InvalidError
from pincus.server import drift, etag
from pincus.server.server import Server


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
        nets.create(_body(req), req.query.get("target"))
        return {}

    def rename_or_noop(req: Request) -> Any:
        body = _body(req)
        if "name" not in body:
            raise InvalidError('POST /1.0/networks/{name} needs a new "name"')
        nets.rename(req.params["name"], str(body["name"]))
        return {}

    r.add("GET", "/1.0/networks", list_networks)
    r.add("POST", "/1.0/networks", create_network)

    def get_network(req: Request) -> Tagged:
        target = req.query.get("target")
        doc = nets.get_on(req.params["name"], target) if target else nets.get(req.params["name"])
        return Tagged(doc, etag.etag(etag.network_fields(doc)))

    def update_network(req: Request, patch: bool) -> Any:
        nets.update(req.params["name"], _body(req), patch=patch, if_match=req.if_match)
        return {}

    r.add("GET", "/1.0/networks/{name}", get_network)
    r.add("PUT", "/1.0/networks/{name}", lambda req: update_network(req, patch=False))
    r.add("PATCH", "/1.0/networks/{name}", lambda req: update_network(req, patch=True))
    r.add("POST", "/1.0/networks/{name}", rename_or_noop)
    r.add("DELETE", "/1.0/networks/{name}", lambda req: nets.delete(req.params["name"]))
    r.add("GET", "/1.0/networks/{name}/leases", lambda req: nets.leases(req.params["name"]))
    r.add("GET", "/1.0/networks/{name}/state", lambda req: nets.state_of(req.params["name"]))
    r.add("POST", "/internal/networks/{name}/apply", lambda req: nets.apply_here(req.params["name"]))
    r.add("DELETE", "/internal/networks/{name}/apply", lambda req: nets.remove_here(req.params["name"]))
    r.add("GET", "/1.0/network-allocations", lambda req: nets.allocations(server.instances.list_all()))

    profiles = server.profiles

    def list_profiles(req: Request) -> Any:
        if req.query.get("recursion", "0") != "0":
            return profiles.list_all()
        return [f"/1.0/profiles/{n}" for n in profiles.names()]

    def create_profile(req: Request) -> Any:
        profiles.create(_body(req))
        return {}

    def get_profile(req: Request) -> Tagged:
        doc = profiles.get(req.params["name"])
        return Tagged(doc, etag.etag(etag.profile_fields(doc)))

    def update_profile(req: Request, patch: bool) -> Any:
        profiles.update(req.params["name"], _body(req), patch=patch, if_match=req.if_match)
        return {}

    def rename_profile(req: Request) -> Any:
        new_name = _body(req).get("name")
        if not isinstance(new_name, str) or not new_name:
            raise InvalidError("No name provided")
        profiles.rename(req.params["name"], new_name)
        return {}

    def delete_profile(req: Request) -> Any:
        profiles.delete(req.params["name"])
        return {}

    r.add("GET", "/1.0/profiles", list_profiles)
    r.add("POST", "/1.0/profiles", create_profile)
    r.add("GET", "/1.0/profiles/{name}", get_profile)
    r.add("PUT", "/1.0/profiles/{name}", lambda req: update_profile(req, patch=False))
    r.add("PATCH", "/1.0/profiles/{name}", lambda req: update_profile(req, patch=True))
    r.add("POST", "/1.0/profiles/{name}", rename_profile)
    r.add("DELETE", "/1.0/profiles/{name}", delete_profile)

    sessions = ExecSessions()
    instance_routes.add(r, server, sessions)
    storage_routes.add(r, server)
    image_routes.add(r, server)
    operation_routes.add(r, server, sessions, shutdown)
    cluster_routes.add(r, server)

    def do_shutdown(req: Request) -> Any:
        timeout = operation_routes.stop_wait(req.query.get("timeout", "60"), "the query", text=True)
        server.shutdown_instances(timeout)
        shutdown.set()
        return {}

    r.add("PUT", "/internal/shutdown", do_shutdown)

    def check(req: Request) -> Any:
        return {"differences": [d.to_api() for d in server.drift.check()]}

    def check_or_repair(req: Request) -> Any:
        repair = _body(req).get("repair", False)
        if not isinstance(repair, bool):
            raise InvalidError('"repair" must be true or false')
        if repair:
            return server.drift.repair()
        found = [d.to_api() for d in server.drift.check()]
        return {"found": found, "repaired": [], "remaining": found}

    r.add("GET", drift.CHECK_PATH, check)
    r.add("POST", drift.CHECK_PATH, check_or_repair)
    return r
