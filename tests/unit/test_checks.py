"""The host layer's last-line checks and the user-facing validators apply one rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pincus.config import validators
from pincus.errors import InvalidError
from pincus.host import checks


def _host_accepts(name: str) -> bool:
    try:
        checks.interface_name(name)
    except InvalidError:
        return False
    return True


def _user_accepts(name: str) -> bool:
    try:
        validators.is_interface_name(name)
    except ValueError:
        return False
    return True


@given(st.text(max_size=20))
def test_host_check_and_validator_agree_on_interface_names(name: str) -> None:
    assert _host_accepts(name) == _user_accepts(name)


@pytest.mark.parametrize("name", ["", ".", "..", "-x", "a/b", "a:b", "a b", "a*b", "x" * 16, "é" * 8])
def test_bad_interface_names_are_refused(name: str) -> None:
    assert not _host_accepts(name)


def test_macs_come_back_in_lower_case_or_are_refused() -> None:
    assert checks.mac("0A:92:a7:00:00:01") == "0a:92:a7:00:00:01"
    for bad in ["0a:92:a7:00:00:1", "0a-92-a7-00-00-01", "0a:92:a7:00:00:01,ignore", 5]:
        with pytest.raises(InvalidError):
            checks.mac(bad)
