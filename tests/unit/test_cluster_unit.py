"""Join tokens, server config keys and the cluster repositories, without a daemon."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from pincus.config import server_keys
from pincus.db import cluster as db
from pincus.db.store import Store
from pincus.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from pincus.host import certs
from pincus.server.join_token import JoinToken, check_member_name, decode

TOKEN = JoinToken("m2", "ab" * 32, ("10.250.1.1:8443", "[fd42:250::1]:8443"), "cd" * 32, 1_900_000_000.0)


def _forge(**changes: object) -> str:
    doc = json.loads(base64.b64decode(TOKEN.encode()))
    return base64.b64encode(json.dumps({**doc, **changes}).encode()).decode()


def test_a_token_decodes_to_what_was_encoded_in_incus_shape() -> None:
    text = TOKEN.encode()
    assert decode(text) == TOKEN
    doc = json.loads(base64.b64decode(text))
    assert set(doc) == {"server_name", "fingerprint", "addresses", "secret", "expires_at"}
    assert doc["expires_at"] == "2030-03-17T17:46:40Z"
    assert decode(f"  {text}\n") == TOKEN  # pasted with blanks around it


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("not base64!", "not base64"),
        (base64.b64encode(b"[1]").decode(), "not a JSON object"),
        (_forge(server_name="-bad"), "Invalid cluster member name"),
        (_forge(fingerprint="xyz"), "bad certificate fingerprint"),
        (_forge(secret="00"), "bad secret"),
        (_forge(addresses=[]), "no member addresses"),
        (_forge(addresses=["host.example:8443"]), "not an IP address"),
        (_forge(addresses=["fd42:250::1:8443"]), "must be in brackets"),
        (_forge(expires_at="tomorrow"), "bad expiry time"),
        (_forge(expires_at="2030-01-01T00:00:00"), "without a time zone"),
    ],
)
def test_a_bad_token_is_refused_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        decode(text)


@pytest.mark.parametrize("name", ["m1", "node-2", "A" * 63])
def test_member_names_as_incus_takes_them(name: str) -> None:
    assert check_member_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a_b", "a.b", "12", "A" * 64, None, 3])
def test_bad_member_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidError):
        check_member_name(name)


@pytest.mark.parametrize(
    ("value", "seconds"), [("3H", 3 * 3600), ("1d 3H", 27 * 3600), ("30S", 30), ("2w", 14 * 86400)]
)
def test_expiry_expressions_as_incus_writes_them(value: str, seconds: int) -> None:
    assert server_keys.parse_expiry(value) == seconds


@pytest.mark.parametrize("value", ["", "3", "3h", "1H 2H", "0S", "H"])
def test_bad_expiry_expressions_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        server_keys.parse_expiry(value)


def test_server_config_keys_are_checked_by_name_and_value() -> None:
    server_keys.check(
        {"core.https_address": "10.250.0.1:8443", "cluster.https_address": "[fd42:250::1]:8443"}
    )
    server_keys.check({"core.https_address": ""})  # unsets
    with pytest.raises(InvalidError, match=r'"core\.bogus": unknown key'):
        server_keys.check({"core.bogus": "1"})
    with pytest.raises(InvalidError, match="not an IP address"):
        server_keys.check({"cluster.https_address": "example.org:8443"})
    with pytest.raises(InvalidError, match="port"):
        server_keys.check({"core.https_address": "10.250.0.1:0"})
    with pytest.raises(InvalidError, match=r"cluster\.offline_threshold"):
        server_keys.check({"cluster.offline_threshold": "1"})


def test_a_token_is_consumed_once_and_a_refused_one_stays(tmp_path: Path) -> None:
    store = Store(tmp_path / "pincus.db")
    db.add_member(store, db.MemberRecord(1, "m1", "10.250.0.1:8443", 0.0, "online"))
    db.add_token(store, db.TokenRecord("m2", "s" * 64, time.time() + 60))
    with pytest.raises(ConflictError, match="exists already"):
        db.add_token(store, db.TokenRecord("m2", "t" * 64, time.time() + 60))
    with pytest.raises(ConflictError, match="already has a member"):
        db.add_token(store, db.TokenRecord("m1", "t" * 64, time.time() + 60))

    def refuse(tok: db.TokenRecord | None) -> None:
        raise ForbiddenError("wrong")

    with pytest.raises(ForbiddenError):
        db.take_token(store, "m2", refuse)
    assert [t.name for t in db.tokens(store)] == ["m2"]
    seen: list[db.TokenRecord | None] = []
    db.take_token(store, "m2", seen.append)
    assert seen[0] is not None and seen[0].secret == "s" * 64
    assert db.tokens(store) == []
    db.take_token(store, "m2", seen.append)
    assert seen[1] is None


def test_members_rename_carries_their_local_config(tmp_path: Path) -> None:
    store = Store(tmp_path / "pincus.db")
    db.add_member(store, db.MemberRecord(1, "m1", "10.250.0.1:8443", 0.0, "online"))
    db.set_config(
        store, {"core.https_address": ("m1", "10.250.0.1:8443"), "cluster.offline_threshold": ("", "4")}
    )
    db.rename_member(store, "m1", "n1")
    assert db.config(store, "n1") == {
        "core.https_address": "10.250.0.1:8443",
        "cluster.offline_threshold": "4",
    }
    assert db.config(store, "m1") == {"cluster.offline_threshold": "4"}
    with pytest.raises(NotFoundError):
        db.rename_member(store, "m1", "x")
    with pytest.raises(ConflictError):
        db.add_member(store, db.MemberRecord(2, "n2", "10.250.0.1:8443", 0.0, "online"))


def test_a_generated_key_is_private_and_its_certificate_pinned_by_fingerprint(tmp_path: Path) -> None:
    crt, key = tmp_path / "cluster.crt", tmp_path / "cluster.key"
    certs.ensure_pair(crt, key, "pincus cluster")
    assert key.stat().st_mode & 0o777 == 0o600
    fp = certs.fingerprint(crt.read_bytes())
    assert len(fp) == 64
    certs.ensure_pair(crt, key, "pincus cluster")  # kept as it is
    assert certs.fingerprint(crt.read_bytes()) == fp


def test_a_members_view_of_a_network_has_its_own_keys_over_the_shared_ones(tmp_path: Path) -> None:
    from pincus.db import networks as db_networks

    store = Store(tmp_path / "pincus.db")
    db_networks.create(store, db_networks.NetworkRecord("up", "physical", "", {"mtu": "1400"}, "pending"))
    db_networks.set_member_config(store, "up", "m1", {"parent": "eth1"})
    db_networks.set_member_config(store, "up", "m2", {"parent": "eth2", "mtu": "9000"})
    db_networks.set_member_state(store, "up", "m1", "created")
    db_networks.set_member_state(store, "up", "m1", "errored", "no eth1")
    assert db_networks.member_states(store, "up") == {"m1": ("errored", "no eth1")}
    rec = db_networks.get(store, "up")
    assert rec is not None and rec.config == {"mtu": "1400"} and rec.status == "pending"  # a single server
    store.member = "m2"
    with store.tx():
        pass  # a write ends what the memo kept
    rec = db_networks.get(store, "up")
    assert rec is not None and rec.config == {"parent": "eth2", "mtu": "9000"}
    # Writing m2's view back keeps its own keys out of the shared config.
    db_networks.replace(store, "up", "", {"parent": "eth2", "mtu": "9000", "ipv4.gateway": "10.250.0.1/24"})
    store.member = "m1"
    with store.tx():
        pass
    rec = db_networks.get(store, "up")
    assert rec is not None and rec.config == {"parent": "eth1", "ipv4.gateway": "10.250.0.1/24"}
    with pytest.raises(NotFoundError):
        db_networks.member_config(store, "nope", "m1")
