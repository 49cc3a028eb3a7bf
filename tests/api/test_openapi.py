"""The published OpenAPI document (src/pincus/api/openapi.yaml) and the routes the daemon serves
say the same thing: each route is documented, each documented operation is served."""

from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import schemathesis
import yaml
from schemathesis.core.result import Ok

from pincus.api import routes
from pincus.server.server import Server

API_DIR = Path(routes.__file__).parent
METHODS = ("get", "put", "post", "patch", "delete")


def document() -> dict[str, Any]:
    """As an installed pincus ships it (package data), not from the checkout's path."""
    text = resources.files("pincus.api").joinpath("openapi.yaml").read_text()
    return cast(dict[str, Any], yaml.safe_load(text))


def served() -> set[tuple[str, str]]:
    # Building the table only keeps references to the server's parts; none is called.
    stub = SimpleNamespace(
        networks=None,
        profiles=None,
        instances=None,
        storage=None,
        operations=None,
        images=None,
        cluster=None,
        state=SimpleNamespace(events=None),
    )
    router = routes.build(cast(Server, stub), threading.Event())
    return {(method.lower(), pattern or "/") for method, pattern in router.routes()}


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, path) for path, item in doc["paths"].items() for m in item if m in METHODS}


def test_every_route_is_documented_and_every_documented_operation_is_served() -> None:
    doc = document()
    code, paper = served(), documented(doc)
    assert sorted(code - paper) == [], "routes missing from openapi.yaml"
    assert sorted(paper - code) == [], "openapi.yaml documents routes the daemon does not serve"


def _resolve(doc: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    ref = item.get("$ref")
    if ref is None:
        return item
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return cast(dict[str, Any], node)


def _parameters(doc: dict[str, Any], path: str, method: str) -> list[dict[str, Any]]:
    item = doc["paths"][path]
    return [_resolve(doc, p) for p in [*item.get("parameters", []), *item[method].get("parameters", [])]]


def test_path_parameters_match_the_route_patterns() -> None:
    doc = document()
    for method, path in documented(doc):
        wanted = set(re.findall(r"\{(\w+)\}", path))
        declared = {p["name"] for p in _parameters(doc, path, method) if p["in"] == "path"}
        assert declared == wanted, f"{method.upper()} {path}"


def test_query_parameters_are_the_ones_the_code_reads() -> None:
    """Every `req.query.get("X")` in the route modules is a documented query parameter, and back."""
    read = set()
    for module in API_DIR.glob("*routes.py"):
        read |= set(re.findall(r'req\.query\.get\("([^"]+)"', module.read_text()))
    doc = document()
    declared = {
        p["name"]
        for method, path in documented(doc)
        for p in _parameters(doc, path, method)
        if p["in"] == "query"
    }
    assert read, "no query parameter found in the route modules: the pattern above is stale"
    assert declared == read


def test_the_document_is_valid_openapi_with_an_operation_id_for_each_operation() -> None:
    doc = document()
    schema = schemathesis.openapi.from_dict(doc)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    assert {(op.method.lower(), op.path) for op in operations} == documented(doc)
    ids = [doc["paths"][path][m]["operationId"] for m, path in documented(doc)]
    assert len(ids) == len(set(ids))
