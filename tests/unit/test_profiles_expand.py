"""Profile expansion order as a pure function: profiles in order, then the instance's own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pincus.expansion import expand

Config = dict[str, str]
Devices = dict[str, dict[str, str]]
Layer = tuple[Config, Devices]

keys = st.sampled_from(["user.a", "user.b", "limits.cpu", "boot.autostart"])
values = st.text(alphabet="xyz01", min_size=1, max_size=3)
configs = st.dictionaries(keys, values, max_size=4)
devices = st.dictionaries(
    st.sampled_from(["eth0", "eth1", "eth2"]),
    st.fixed_dictionaries({"type": st.just("nic")}, optional={"network": values, "name": values}),
    max_size=3,
)
layers = st.lists(st.tuples(configs, devices), max_size=4)


@given(layers, configs, devices)
def test_the_last_layer_holding_a_key_or_device_wins(
    ls: list[Layer], own_config: Config, own_devices: Devices
) -> None:
    config, devs = expand(ls, own_config, own_devices)
    everything = [*ls, (own_config, own_devices)]
    for key in {k for c, _ in everything for k in c}:
        assert config[key] == next(c[key] for c, _ in reversed(everything) if key in c)
    for name in {n for _, d in everything for n in d}:
        # A device is replaced whole, never merged key by key with an earlier one.
        assert devs[name] == next(d[name] for _, d in reversed(everything) if name in d)
    assert set(config) == {k for c, _ in everything for k in c}


@given(layers, configs, devices)
def test_expansion_copies_never_aliases(ls: list[Layer], own_config: Config, own_devices: Devices) -> None:
    _, devs = expand(ls, own_config, own_devices)
    for dev in devs.values():
        dev["touched"] = "1"
    assert all("touched" not in d for _, layer in ls for d in layer.values())
    assert all("touched" not in d for d in own_devices.values())


def test_no_profiles_is_the_instance_itself() -> None:
    own = {"eth0": {"type": "nic", "network": "lan"}}
    assert expand([], {"user.a": "1"}, own) == ({"user.a": "1"}, own)
