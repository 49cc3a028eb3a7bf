"""dqlite's wire encoding and the checks before a value reaches libdqlite (the real cluster is in
tests/integration/test_clusterdb.py)."""

from __future__ import annotations

import struct

import pytest

from pincus.db import dqlite_client
from pincus.db.dqlite_store import _QUERY, Row
from pincus.errors import InvalidError
from pincus.host.dqlite_node import check_address


@pytest.mark.parametrize(
    "bad", ["", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "host:80", "1.2.3.4:08", 5]
)
def test_a_member_address_must_be_an_ip_and_a_port(bad: object) -> None:
    with pytest.raises(InvalidError):
        check_address(bad)


def test_member_addresses_of_both_families_pass() -> None:
    assert check_address("10.250.0.1:9001") == "10.250.0.1:9001"
    assert check_address("[fd42:250::1]:9001") == "[fd42:250::1]:9001"


def test_parameters_are_typed_bytes_then_words() -> None:
    raw = dqlite_client._params([7, "ab", None])
    assert raw[:8] == bytes([3, 1, 3, 5, 0, 0, 0, 0])
    assert raw[8:16] == struct.pack("<q", 7)
    assert raw[16:24] == b"ab\0\0\0\0\0\0"
    assert raw[24:32] == bytes(8)
    with pytest.raises(InvalidError):
        dqlite_client._params([object()])  # type: ignore[list-item]


def test_rows_answer_by_name_and_position() -> None:
    row = Row((1, "c1"), {"id": 0, "name": 1})
    assert row["name"] == row[1] == "c1"
    assert row.keys() == ["id", "name"]


@pytest.mark.parametrize(
    ("sql", "rows"),
    [("SELECT 1", True), ("  with x as (select 1) select * from x", True), ("PRAGMA user_version", True),
     ("PRAGMA user_version = 3", False), ("INSERT INTO t VALUES (1)", False), ("BEGIN IMMEDIATE", False)],
)  # fmt: skip
def test_only_row_returning_statements_are_sent_as_queries(sql: str, rows: bool) -> None:
    assert bool(_QUERY.match(sql)) is rows
