"""What the API fuzz (test_fuzz.py) found, each as the request that showed it: a 500, a route that
did not answer, or a refusal that did not say what it refused."""

from __future__ import annotations

import math

from tests.pincus_testlib import Daemon


def test_the_root_answers_with_the_api_versions(daemon: Daemon) -> None:
    status, doc = daemon.api("GET", "/")
    assert status == 200 and doc["metadata"] == ["/1.0"]


def test_an_unknown_path_is_named_in_its_404(daemon: Daemon) -> None:
    status, doc = daemon.api("GET", "/1.0/nothing-here")
    assert status == 404 and "/1.0/nothing-here" in doc["error"]


def test_shutdown_with_a_timeout_that_is_no_number_is_refused_and_the_daemon_stays(daemon: Daemon) -> None:
    for bad in ("abc", "nan", "-5", "1e300"):
        status, doc = daemon.api("PUT", f"/internal/shutdown?timeout={bad}")
        assert status == 400 and "timeout" in doc["error"], doc
    assert daemon.api("GET", "/1.0")[0] == 200


def test_an_instance_type_that_is_no_string_is_refused(daemon: Daemon) -> None:
    for bad in (["container"], {"a": 1}, 7):
        status, doc = daemon.api("POST", "/1.0/instances", {"name": "c1", "type": bad})
        assert status == 400 and "instance type" in doc["error"], doc
    assert daemon.api("GET", "/1.0/instances")[1]["metadata"] == []


def test_json_without_nan_or_infinity(daemon: Daemon) -> None:
    status, doc = daemon.api("POST", "/1.0/instances", {"name": "c1", "timeout": math.nan})
    assert status == 400 and "NaN" in doc["error"], doc


def test_stop_and_wait_timeouts_out_of_range(daemon: Daemon) -> None:
    status, doc = daemon.api("POST", "/1.0/instances", {"name": "c1", "source": {"type": "none"}})
    op = daemon.wait_op(doc)
    assert op["status"] == "Success"
    # A wait longer than time_t can hold is a wait for ever, not an OverflowError.
    for huge in ("1e300", "inf"):
        status, doc = daemon.api("GET", f"/1.0/operations/{op['id']}/wait?timeout={huge}")
        assert status == 200 and doc["metadata"]["id"] == op["id"], doc
    status, doc = daemon.api("GET", f"/1.0/operations/{op['id']}/wait?timeout=nan")
    assert status == 400 and "timeout" in doc["error"]
    # poll() takes an int of milliseconds: a huge stop timeout is refused before the operation.
    for bad in (1e300, -2, "10", True):
        status, doc = daemon.api("PUT", "/1.0/instances/c1/state", {"action": "stop", "timeout": bad})
        assert status == 400 and "timeout" in doc["error"], doc


def test_refusals_name_the_instance_or_operation(daemon: Daemon) -> None:
    status, doc = daemon.api("POST", "/1.0/instances", {"name": "c1", "source": {"type": "none"}})
    daemon.wait_op(doc)
    status, doc = daemon.api("PUT", "/1.0/instances/c1/state", {"action": "stop"})
    assert 'Instance "c1" is already stopped' in daemon.wait_op(doc)["err"]
    status, doc = daemon.api("GET", "/1.0/operations/no-such-op")
    assert status == 404 and '"no-such-op"' in doc["error"]
    status, doc = daemon.api("POST", "/1.0/instances/c1", {"name": "c2", "migration": True})
    assert status == 400 and '"migration"' in doc["error"]


def test_a_network_name_the_kernel_takes_but_sysctl_paths_do_not_is_refused_before_any_change(
    daemon: Daemon, prefix: str
) -> None:
    """A rename to "uÜ" tore the bridge down, failed on its /proc/sys path, and brought it back as a
    new link (another ifindex): refused up front now, with the bridge untouched."""
    br = f"{prefix}br"
    config = {"ipv4.address": "10.250.77.1/24", "ipv6.address": "none"}
    assert daemon.api("POST", "/1.0/networks", {"name": br, "config": config})[0] == 200
    before = daemon.ns.link(br)
    status, doc = daemon.api("POST", f"/1.0/networks/{br}", {"name": "u\u00dc"})
    assert status == 400 and "network name" in doc["error"], doc
    assert daemon.ns.link(br) == before
    status, doc = daemon.api("POST", "/1.0/networks", {"name": "br\u00fc", "config": config})
    assert status == 400 and "network name" in doc["error"], doc
