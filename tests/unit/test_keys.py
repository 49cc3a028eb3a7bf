"""Key tables: every key has a validator; unknown keys and misplaced keys are refused by name."""

from __future__ import annotations

import pytest

from pincus.config.keys import CONTAINER, VM, Key, check_config, check_value, not_live
from pincus.config.network_keys import BRIDGE, PHYSICAL
from pincus.config.validators import is_bool
from pincus.errors import InvalidError


@pytest.mark.parametrize("table", [BRIDGE, PHYSICAL])
def test_every_key_is_described(table: dict[str, Key]) -> None:
    for name, key in table.items():
        assert key.description, name
        assert callable(key.validator)


def test_physical_keys_are_those_of_the_design() -> None:
    assert set(PHYSICAL) == {
        "parent", "mtu", "vlan", "vlan.tagged", "gvrp", "ipv4.gateway", "ipv6.gateway",
        "ipv4.routes", "ipv6.routes", "dns.nameservers",
        "ipv4.ovn.ranges", "ipv6.ovn.ranges", "ovn.ingress_mode",
    }  # fmt: skip


def test_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(InvalidError, match=r'"ipv4\.nope"'):
        check_config(BRIDGE, {"ipv4.nope": "1"}, 'network "x"')


def test_bad_value_names_key_and_value() -> None:
    with pytest.raises(InvalidError) as e:
        check_config(PHYSICAL, {"parent": "eth0", "vlan": "4095"}, 'network "x"')
    assert '"vlan"' in str(e.value) and "4095" in str(e.value)


def test_user_keys_are_free_form_but_need_a_name() -> None:
    check_config(BRIDGE, {"user.note": "any text at all"}, "n")
    with pytest.raises(InvalidError):
        check_config(BRIDGE, {"user.": "x"}, "n")


def test_instance_type_restriction_and_live_flag() -> None:
    table = {
        "a": Key(is_bool, "both"),
        "b": Key(is_bool, "vm only", frozenset({VM}), live=False),
    }
    check_value(table, "b", "true", "dev", VM)
    with pytest.raises(InvalidError, match="not supported for containers"):
        check_value(table, "b", "true", "dev", CONTAINER)
    assert not_live(table, {"a": "1", "b": "1"}, {"a": "0", "b": "0"}) == ["b"]


@pytest.mark.parametrize(
    "key,value",
    [("ipv4.gateway", "10.250.0.1/24"), ("ipv4.routes", "10.250.9.0/24"), ("dns.nameservers", "10.250.0.53"),
     ("ipv4.ovn.ranges", "10.250.0.100-10.250.0.109"), ("ovn.ingress_mode", "routed"),
     ("ipv6.gateway", "fd42:250::1/64"), ("ipv6.routes", "fd42:250:9::/64"),
     ("ipv6.ovn.ranges", "fd42::1-fd42::9")],
)  # fmt: skip
def test_uplink_keys_of_ovn_networks_are_accepted(key: str, value: str) -> None:
    check_config(PHYSICAL, {"parent": "eth9", key: value}, 'network "x"')
