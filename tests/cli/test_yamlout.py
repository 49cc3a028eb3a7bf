"""yamlout.dump against PyYAML: whatever it writes is byte for byte what
`yaml.safe_dump(doc, default_flow_style=False, sort_keys=False, allow_unicode=True)` writes, and
the documents `show` commands print (names, addresses, paths) do not need PyYAML."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pincus.cli.yamlout import dump


def _pyyaml(doc: Any) -> str:
    return str(yaml.safe_dump(doc, default_flow_style=False, sort_keys=False, allow_unicode=True))


NETWORK = {
    "name": "br0",
    "description": "",
    "type": "bridge",
    "managed": True,
    "status": "Created",
    "config": {
        "ipv4.address": "10.250.0.1/24",
        "ipv4.nat": "true",
        "ipv6.address": "fd42:250::1/64",
        "mtu": "1500",
    },
    "used_by": ["/1.0/instances/c1", "/1.0/profiles/default"],
    "locations": [],
    "project": "default",
}
DEVICES = {"eth0": {"type": "nic", "network": "br0", "name": "eth0", "hwaddr": "00:16:3e:aa:bb:cc"}, "x": {}}


def test_shown_documents_take_the_fast_path() -> None:
    for doc in (
        NETWORK,
        DEVICES,
        {"config": {}, "devices": DEVICES, "ephemeral": False, "profiles": ["default"]},
    ):
        assert dump(doc) == _pyyaml(doc)


WORDS = st.text(alphabet="aZy0159._/-: 'x#\"é,\n", max_size=12) | st.sampled_from(
    ["yes", "No", "null", "~", "", "1500", "0", "012", "1.5", "1.2.3", "10.250.0.1", "fd42::1/64", "a b",
     "-a", "x" * 90, "a " * 40, "2001:db8::1", "1e5", ".inf", "0x1f", "12:30", "2026-01-01", "on", "OFF"]
)  # fmt: skip
SCALARS = WORDS | st.integers(-(10**12), 10**12) | st.booleans() | st.none() | st.floats(allow_nan=False)
DOCS = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(WORDS, kids, max_size=4), max_leaves=20
)


@settings(max_examples=300, deadline=None)
@given(DOCS)
def test_dump_writes_what_pyyaml_writes(doc: Any) -> None:
    ours = dump(doc)
    if ours is not None:
        assert ours == _pyyaml(doc)


def test_a_shared_object_is_left_to_pyyaml() -> None:
    shared = {"a": "b"}
    assert dump({"x": shared, "y": shared}) is None
