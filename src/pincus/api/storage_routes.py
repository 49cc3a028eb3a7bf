"""/1.0/storage-pools and their volumes: routes -> server.storage calls."""

from __future__ import annotations

from typing import Any

from pincus.api.http import Request, Router, Tagged
from pincus.api.instance_routes import body_of
from pincus.server import etag
from pincus.server.server import Server
from pincus.server.storage import pool_fields


def add(r: Router, server: Server) -> None:
    storage = server.storage

    def list_pools(req: Request) -> Any:
        if req.query.get("recursion", "0") != "0":
            return storage.list_all()
        return [f"/1.0/storage-pools/{n}" for n in storage.names()]

    def create_pool(req: Request) -> Any:
        storage.create(body_of(req))
        return {}

    def get_pool(req: Request) -> Tagged:
        doc = storage.get(req.params["pool"])
        return Tagged(doc, etag.etag(pool_fields(doc)))

    def update_pool(req: Request, patch: bool) -> Any:
        storage.update(req.params["pool"], body_of(req), patch=patch, if_match=req.if_match)
        return {}

    def delete_pool(req: Request) -> Any:
        storage.delete(req.params["pool"])
        return {}

    def list_volumes(req: Request, type_: str | None) -> Any:
        pool = req.params["pool"]
        vols = storage.list_volumes(pool, type_)
        if req.query.get("recursion", "0") != "0":
            return vols
        return [f"/1.0/storage-pools/{pool}/volumes/{v['type']}/{v['name']}" for v in vols]

    def get_volume(req: Request) -> Any:
        return storage.get_volume(req.params["pool"], req.params["type"], req.params["volume"])

    base = "/1.0/storage-pools"
    r.add("GET", base, list_pools)
    r.add("POST", base, create_pool)
    r.add("GET", base + "/{pool}", get_pool)
    r.add("PUT", base + "/{pool}", lambda req: update_pool(req, patch=False))
    r.add("PATCH", base + "/{pool}", lambda req: update_pool(req, patch=True))
    r.add("DELETE", base + "/{pool}", delete_pool)
    r.add("GET", base + "/{pool}/volumes", lambda req: list_volumes(req, None))
    r.add("GET", base + "/{pool}/volumes/{type}", lambda req: list_volumes(req, req.params["type"]))
    r.add("GET", base + "/{pool}/volumes/{type}/{volume}", get_volume)
