"""schemathesis against a live pincusd, from the published OpenAPI document.

Each operation gets requests that fit the document and requests that do not, once with random
path names and once naming objects that exist (a managed bridge, a profile, a stopped container),
so bodies reach the validators behind the lookup. For each request: never a 5xx; a refusal (a 4xx,
or an operation that failed) is an error envelope whose message names a field or a value of the
request; and a refused change leaves the namespace's links, addresses, nftables ruleset, the daemon's
files and its database as they were. At the end everything the fuzz created is deleted through the
API and the whole host must be as before.

PINCUS_FUZZ_EXAMPLES sets the examples per operation and mode (default 6, a CI-sized run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api import fuzzlib
from tests.api.test_openapi import document
from tests.pincus_testlib import Daemon

EXAMPLES = int(os.environ.get("PINCUS_FUZZ_EXAMPLES", "6"))

# Stops the daemon / never ends / needs a websocket upgrade or a client that passes file descriptors.
NOT_FUZZED = {"shutdown_daemon", "get_events", "connect_operation_websocket"}
# Makes file systems (a 5 GiB btrfs loop file by default) and may name any empty host directory as a
# dir pool's source: outside what a fuzz may touch. tests/integration/test_storage.py and the fault
# scenarios (tests/faults) cover it; the other pool operations are fuzzed.
NOT_FUZZED |= {"create_storage_pool"}
# Runs commands in a container the fuzz may have started: random argv is not a test of the API.
NOT_ON_REAL_OBJECTS = {"exec_instance"}
# Deleting or renaming a real object ends the runs that need it: those go last.
LAST = ("rename_", "delete_")

# The answer is one the document describes: its status, content type, headers and envelope.
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Fields a refusal may name without the request holding them (a missing field, the ETag's header).
IMPLIED = {"name", "etag", "if-match", "body", "json", "action", "command", "type", "image"}


class Fuzz:
    def __init__(self, daemon: Daemon, session: requests.Session) -> None:
        self.daemon, self.session = daemon, session
        self.cases = 0
        self.refused = 0
        self.problems: list[str] = []

    def wait(self, doc: dict[str, Any]) -> dict[str, Any]:
        op = doc["metadata"]
        got = self.session.get(f"{fuzzlib.BASE_URL}/1.0/operations/{op['id']}/wait?timeout=120").json()
        return dict(got["metadata"])

    def run(self, case: Any) -> None:
        case.headers.pop("X-Pincus-Stdio", None)  # it makes the daemon wait for file descriptors
        changes = case.method.upper() != "GET"
        if changes:
            before, rows = fuzzlib.host_view(self.daemon), fuzzlib.db_rows(self.daemon)
        response = case.call(base_url=fuzzlib.BASE_URL, session=self.session, timeout=180)
        self.cases += 1
        label = f"{case.method.upper()} {case.formatted_path} query={case.query} body={case.body!r:.300}"
        status = response.status_code
        # Lower-case keys, list values (schemathesis's Response).
        content_type = "".join(response.headers.get("content-type", []))
        if status == 200 and content_type.startswith("text/plain"):
            # A console log: text, as openapi.yaml says of that route (checked here).
            try:
                case.validate_response(response, checks=CONFORMANCE)
            except (AssertionError, BaseExceptionGroup) as e:
                self.problems.append(f"{label}: {status} does not conform to openapi.yaml: {str(e)[:400]}")
            return
        try:
            doc = response.json()
        except ValueError:
            self.problems.append(f"{label}: {status} with a body that is not JSON: {response.text[:200]}")
            return
        try:
            case.validate_response(response, checks=CONFORMANCE)
        except (AssertionError, BaseExceptionGroup) as e:  # the answer is not what the document says
            self.problems.append(f"{label}: {status} does not conform to openapi.yaml: {str(e)[:400]}")
        message = ""
        if status >= 500:
            self.problems.append(f"{label}: {status} {doc.get('error')}")
            return
        if status >= 400:
            if doc.get("type") != "error" or doc.get("error_code") != status or not doc.get("error"):
                self.problems.append(f"{label}: {status} with a bad error envelope {doc}")
            message = str(doc.get("error", ""))
        elif status == 202:
            op = self.wait(doc)
            if op["status"] == "Failure":
                message = op["err"] or "<empty err>"
        if not message:
            return
        self.refused += 1
        asked = (
            fuzzlib.tokens_of(case.path_parameters)
            | fuzzlib.tokens_of(case.query)
            | fuzzlib.tokens_of(dict(case.headers or {}))  # an upload's X-Incus-* values
            | fuzzlib.tokens_of(case.body if isinstance(case.body, dict | list) else {})
            | IMPLIED
        )
        if not fuzzlib.names_one_of(message, asked):
            self.problems.append(f"{label}: {status} refusal names nothing of the request: {message!r}")
        if changes:
            after = fuzzlib.host_view(self.daemon)
            moved = fuzzlib.describe(before, after)
            if fuzzlib.db_rows(self.daemon) != rows:
                moved.append("database")
            if moved:
                self.problems.append(f"{label}: refused ({message!r}) but changed {moved}")


def _fuzz_operation(fuzz: Fuzz, operation: Any, mode: GenerationMode, names: dict[str, Any] | None) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: problems are collected, not raised
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=names))
    def one(case: Any) -> None:
        fuzz.run(case)

    try:
        one()
    except Unsatisfiable:
        pass  # nothing in the document to break (no parameters or body) in the negative mode
    except Exception as e:  # a request the transport could not make: report it with the rest
        fuzz.problems.append(f"{operation.label} ({mode}): {type(e).__name__}: {str(e)[:300]}")


def _cleanup(daemon: Daemon, session: requests.Session, default_profile: dict[str, Any]) -> None:
    """Delete what the fuzz made, through the API, in the order their references allow."""
    call: Callable[..., requests.Response] = session.request
    url = fuzzlib.BASE_URL
    for inst in call("GET", f"{url}/1.0/instances?recursion=1").json()["metadata"]:
        name = quote(inst["name"], safe="")
        r = call("PUT", f"{url}/1.0/instances/{name}/state", json={"action": "stop", "force": True})
        if r.status_code == 202:
            call("GET", f"{url}{r.json()['operation']}/wait?timeout=60")
        r = call("DELETE", f"{url}/1.0/instances/{name}")
        assert r.status_code == 202, r.text
        op = call("GET", f"{url}{r.json()['operation']}/wait?timeout=60").json()["metadata"]
        assert op["status"] == "Success", op
    keep = {k: default_profile[k] for k in ("config", "description", "devices")}
    assert call("PUT", f"{url}/1.0/profiles/default", json=keep).status_code == 200
    for prof in call("GET", f"{url}/1.0/profiles?recursion=1").json()["metadata"]:
        if prof["name"] != "default":
            r = call("DELETE", f"{url}/1.0/profiles/{quote(prof['name'], safe='')}")
            assert r.status_code == 200, r.text
    for net in call("GET", f"{url}/1.0/networks?recursion=1").json()["metadata"]:
        if net.get("managed"):
            r = call("DELETE", f"{url}/1.0/networks/{quote(net['name'], safe='')}")
            assert r.status_code == 200, r.text


@pytest.mark.slow
@pytest.mark.timeout(max(600, EXAMPLES * 30))  # about 15 s an example here, twice that for a busy CI
def test_fuzzed_requests_never_fail_the_server_and_refusals_change_nothing(
    daemon: Daemon, prefix: str
) -> None:
    session = fuzzlib.session_for(daemon)
    schema = schemathesis.openapi.from_dict(document())
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    operations = [op for op in operations if op.definition.raw["operationId"] not in NOT_FUZZED]
    operations.sort(key=lambda op: op.definition.raw["operationId"].startswith(LAST))

    # The host as it was before anything was made, for the last comparison.
    baseline = fuzzlib.host_view(daemon)
    default_profile = daemon.api("GET", "/1.0/profiles/default")[1]["metadata"]
    net, prof, inst = f"{prefix}br", f"{prefix}p", f"{prefix}c"
    assert (
        daemon.api(
            "POST",
            "/1.0/networks",
            {"name": net, "config": {"ipv4.address": "10.250.77.1/24", "ipv6.address": "none"}},
        )[0]
        == 200
    )
    assert daemon.api("POST", "/1.0/profiles", {"name": prof})[0] == 200
    status, doc = daemon.api("POST", "/1.0/instances", {"name": inst, "source": {"type": "none"}})
    assert status == 202 and daemon.wait_op(doc)["status"] == "Success"
    real = {"/1.0/networks/": net, "/1.0/profiles/": prof, "/1.0/instances/": inst}

    fuzz = Fuzz(daemon, session)
    started = time.monotonic()
    try:
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(fuzz, op, mode, None)
                name = next((v for k, v in real.items() if op.path.startswith(k + "{name}")), None)
                if name is not None and op.definition.raw["operationId"] not in NOT_ON_REAL_OBJECTS:
                    _fuzz_operation(fuzz, op, mode, {"name": name})
    finally:
        print(
            f"\nAPI fuzz: {fuzz.cases} requests over {len(operations)} operations, {fuzz.refused} refused, "
            f"{len(fuzz.problems)} problems, {time.monotonic() - started:.0f} s"
        )
        _cleanup(daemon, session, default_profile)
    after = fuzzlib.host_view(daemon)
    assert fuzz.problems == [], "\n".join(fuzz.problems[:40])
    assert fuzzlib.describe(baseline, after) == [], "the host differs after everything was deleted"
