"""OVN on a cluster, the parts that need no daemon: the central's TCP listeners, the southbound
connection derived from an existing central's northbound one, the server key's values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pincus.config import server_keys
from pincus.errors import InvalidError
from pincus.host import ovs_layout
from pincus.networks.ovn_chassis import _southbound_of


def test_an_embedded_central_on_a_cluster_also_listens_on_the_members_address() -> None:
    nb, sb, _ = ovs_layout.central_specs(Path("/x"), "10.250.3.1")
    assert "--remote=ptcp:6641:10.250.3.1" in nb.argv() and "--remote=punix:/x/nb.sock" in nb.argv()
    assert "--remote=ptcp:6642:10.250.3.1" in sb.argv()
    nb6, _, _ = ovs_layout.central_specs(Path("/x"), "fd42:250::1")
    assert "--remote=ptcp:6641:[fd42:250::1]" in nb6.argv()
    # A single server's central stays on its unix sockets only.
    assert not any("ptcp" in a for spec in ovs_layout.central_specs(Path("/x")) for a in spec.argv())
    assert ovs_layout.tcp_remote("fd42:250::1", 6642) == "tcp:[fd42:250::1]:6642"


def test_the_southbound_of_an_existing_central_is_next_to_its_northbound() -> None:
    assert (
        _southbound_of("tcp:10.250.3.1:6641,ssl:10.250.3.2:6641") == "tcp:10.250.3.1:6642,ssl:10.250.3.2:6642"
    )
    with pytest.raises(InvalidError, match="PINCUS_OVN_SOUTHBOUND"):
        _southbound_of("tcp:10.250.3.1:7000")


@pytest.mark.parametrize("value", ["tcp:10.250.3.1:6641", "ssl:[fd42:250::1]:6641,tcp:10.250.3.2:6641"])
def test_the_northbound_key_takes_ovsdb_connections(value: str) -> None:
    server_keys.check({"network.ovn.northbound_connection": value})


@pytest.mark.parametrize(
    "value", ["10.250.3.1:6641", "tcp:ovn.example:6641", "unix:/run/nb.sock", "tcp:1.2.3.4"]
)
def test_the_northbound_key_refuses_anything_else(value: str) -> None:
    with pytest.raises(InvalidError, match="northbound_connection"):
        server_keys.check({"network.ovn.northbound_connection": value})


def test_enabling_clustering_with_an_ovn_network_is_refused_changing_nothing(tmp_path: Path) -> None:
    from pincus.db import cluster as db_cluster
    from pincus.db import networks as db_networks
    from pincus.db.store import Store
    from pincus.errors import ConflictError
    from pincus.events import EventHub
    from pincus.server.cluster import Cluster
    from pincus.state import State

    store = Store(tmp_path / "pincus.db")
    db_cluster.set_config(store, {"cluster.https_address": ("", "10.250.3.1:8443")})
    db_networks.create(store, db_networks.NetworkRecord("o1", "ovn", "", {"network": "up"}))
    cluster = Cluster(State(dir=tmp_path, store=store, events=EventHub()), None, lambda: None)
    with pytest.raises(ConflictError, match="delete the OVN networks o1 first"):
        cluster.enable("m1")
    assert not (tmp_path / "cluster.crt").exists() and not cluster.clustered
