"""pylxd, the Python client of LXD's API, against pincusd: networks, profiles, instances, exec, events.

pylxd reads a path that exists as a unix socket (it URL-encodes it into `http+unix://` itself),
follows every background operation on `/1.0/operations/<id>/wait`, and runs exec and events over
websockets (ws4py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pylxd
import pytest
from pylxd.exceptions import LXDAPIException

from tests.clients.kernel import addresses, bridge_ports
from tests.pincus_testlib import Daemon, image_source


@pytest.fixture
def client(daemon: Daemon) -> pylxd.Client:
    daemon.image()  # instances come from the test image
    return pylxd.Client(endpoint=str(daemon.dir / "unix.socket"))


@pytest.fixture
def net(client: pylxd.Client, prefix: str) -> Iterator[str]:
    """A managed bridge made through pylxd."""
    name = f"{prefix}net"
    client.networks.create(
        name, type="bridge", config={"ipv4.address": "10.250.70.1/24", "ipv6.address": "none"}
    )
    yield name


def _instance(client: pylxd.Client, name: str, start: bool = True, **req: Any) -> Any:
    """A new instance, fetched afresh: the object create() returns keeps what it was created with
    (pylxd's sync() does not overwrite the attributes passed to the model)."""
    inst = client.instances.create(
        {"name": name, "profiles": ["default"], "source": image_source(), **req}, wait=True
    )
    if start:
        inst.start(wait=True)
    return client.instances.get(name)


def _host_name(client: pylxd.Client, instance: str, device: str) -> str:
    return str(client.instances.get(instance).config[f"volatile.{device}.host_name"])


# --- server ---------------------------------------------------------------------------------------


def test_pylxd_host_info(client: pylxd.Client) -> None:
    info = client.host_info
    assert info["api_version"] == "1.0"
    assert info["environment"]["server"] == "pincus"
    assert client.has_api_extension("network_type_physical")
    assert client.has_api_extension("operation_wait")
    assert client.trusted


# --- networks -------------------------------------------------------------------------------------


def test_pylxd_managed_bridge_create_list_set_unset_delete(
    client: pylxd.Client, daemon: Daemon, prefix: str
) -> None:
    name = f"{prefix}net"
    client.networks.create(
        name, type="bridge", config={"ipv4.address": "10.250.71.1/24", "ipv6.address": "none"}
    )
    assert addresses(daemon, name) == ["10.250.71.1/24"]
    assert client.networks.exists(name)
    managed = {n.name: n for n in client.networks.all() if n.managed}
    assert managed[name].type == "bridge"

    network = client.networks.get(name)
    network.config["ipv4.address"] = "10.250.72.1/24"
    network.config["ipv4.dhcp"] = "false"
    network.save(wait=True)
    assert addresses(daemon, name) == ["10.250.72.1/24"]
    assert client.networks.get(name).config["ipv4.dhcp"] == "false"

    network = client.networks.get(name)
    del network.config["ipv4.dhcp"]
    network.save(wait=True)
    assert "ipv4.dhcp" not in client.networks.get(name).config

    client.networks.get(name).delete(wait=True)
    assert not client.networks.exists(name)
    assert daemon.ns.link(name) is None


def test_pylxd_physical_network_on_a_bridge_parent(client: pylxd.Client, daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    name = f"{prefix}phy"
    client.networks.create(name, type="physical", config={"parent": br})
    network = client.networks.get(name)
    assert (network.type, network.config, network.managed) == ("physical", {"parent": br}, True)
    network.config["mtu"] = "1400"
    network.save(wait=True)
    assert client.networks.get(name).config["mtu"] == "1400"
    network.delete(wait=True)
    assert not client.networks.exists(name)
    assert daemon.ns.link(br) is not None


def test_pylxd_network_state_and_leases(client: pylxd.Client, daemon: Daemon, net: str) -> None:
    state = client.networks.get(net).state()
    link = daemon.ns.link(net)
    assert link is not None
    assert state.hwaddr == link["address"]
    assert state.state == "up"
    assert {"family": "inet", "address": "10.250.70.1", "netmask": "24", "scope": "global"} in state.addresses
    assert client.has_api_extension("network_leases")
    leases = client.api.networks[net].leases.get().json()["metadata"]
    assert leases == []


# --- profiles and instances -----------------------------------------------------------------------


def test_pylxd_profile_nic_gives_the_instance_its_port(
    client: pylxd.Client, daemon: Daemon, net: str, prefix: str
) -> None:
    profile = f"{prefix}p"
    client.profiles.create(
        profile, config={}, devices={"eth0": {"type": "nic", "network": net, "name": "eth0"}}
    )
    assert client.profiles.get(profile).devices["eth0"]["network"] == net
    inst = client.instances.create(
        {"name": "c1", "profiles": ["default", profile], "source": image_source()}, wait=True
    )
    assert inst.profiles == ["default", profile]
    inst.start(wait=True)
    inst = client.instances.get("c1")
    assert inst.status == "Running"
    host = _host_name(client, "c1", "eth0")
    assert bridge_ports(daemon)[host] == net
    eth0 = inst.state().network["eth0"]
    assert eth0["hwaddr"] == inst.config["volatile.eth0.hwaddr"]
    assert [a["scope"] for a in eth0["addresses"] if a["family"] == "inet6"] == ["link"]


def test_pylxd_instance_state_as_incus_shapes_it(client: pylxd.Client, net: str) -> None:
    inst = _instance(client, "c1", devices={"eth0": {"type": "nic", "network": net, "name": "eth0"}})
    state = inst.state()
    assert state.status == "Running"
    assert state.pid > 0
    assert state.network["eth0"]["host_name"] == inst.config["volatile.eth0.host_name"]
    # api.InstanceState: every field is there, zero where pincus does not measure it.
    assert {"disk", "memory", "processes", "cpu"} <= set(vars(state))


def test_pylxd_hotplug_and_unplug_a_nic_by_saving_devices(
    client: pylxd.Client, daemon: Daemon, net: str, prefix: str
) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    client.networks.create(f"{prefix}phy", type="physical", config={"parent": br})
    inst = _instance(client, "c1", devices={"eth0": {"type": "nic", "network": net, "name": "eth0"}})
    before = bridge_ports(daemon)

    inst.devices["eth1"] = {"type": "nic", "network": f"{prefix}phy", "name": "eth1"}
    inst.save(wait=True)
    host = _host_name(client, "c1", "eth1")
    assert bridge_ports(daemon) == {**before, host: br}

    inst = client.instances.get("c1")
    del inst.devices["eth1"]
    inst.save(wait=True)
    assert bridge_ports(daemon) == before
    assert daemon.ns.link(host) is None
    assert "eth1" not in client.instances.get("c1").devices


def test_pylxd_execute_returns_exit_code_and_output(client: pylxd.Client) -> None:
    inst = _instance(client, "c1")
    started = time.monotonic()
    result = inst.execute(["sh", "-c", "echo hi; echo oops >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, "hi\n", "oops\n")
    assert time.monotonic() - started < 5
    assert inst.execute(["cat"], stdin_payload="fed in\n").stdout == "fed in\n"


def test_pylxd_stop_and_delete_take_the_port_away(client: pylxd.Client, daemon: Daemon, net: str) -> None:
    inst = _instance(client, "c1", devices={"eth0": {"type": "nic", "network": net, "name": "eth0"}})
    host = _host_name(client, "c1", "eth0")
    assert host in bridge_ports(daemon)
    inst.stop(wait=True)
    assert client.instances.get("c1").status == "Stopped"
    assert daemon.ns.link(host) is None
    inst.delete(wait=True)
    assert not client.instances.exists("c1")
    assert client.instances.all() == []


def test_pylxd_events_websocket_sees_instance_started(client: pylxd.Client) -> None:
    inst = _instance(client, "c1", start=False)
    events = client.events(event_types={pylxd.EventType.Lifecycle})
    events.connect()  # the handshake is done when this returns: nothing after it is missed
    reader = threading.Thread(target=events.run, daemon=True)
    reader.start()
    try:
        inst.start(wait=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            started = [
                m for m in list(events.messages)
                if m["type"] == "lifecycle" and m["metadata"]["action"] == "instance-started"
            ]  # fmt: skip
            if started:
                break
            time.sleep(0.05)
        assert started, events.messages
        assert started[0]["metadata"]["source"] == "/1.0/instances/c1"
        assert {m["type"] for m in events.messages} == {"lifecycle"}
    finally:
        events.close()
        reader.join(5)


# --- refusals -------------------------------------------------------------------------------------


def test_pylxd_refuses_a_physical_nic_on_a_bridge(client: pylxd.Client, daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    inst = _instance(client, "c1")
    before = bridge_ports(daemon)
    inst.devices["eth2"] = {"type": "nic", "nictype": "physical", "parent": br}
    with pytest.raises(LXDAPIException) as e:
        inst.save(wait=True)
    assert f'"{br}" is a bridge, use nictype=bridged instead' in str(e.value)
    assert "eth2" not in client.instances.get("c1").devices
    assert bridge_ports(daemon) == before
    # Nor at creation.
    with pytest.raises(LXDAPIException) as e:
        _instance(client, "c2", devices={"eth0": {"type": "nic", "nictype": "physical", "parent": br}})
    assert "is a bridge, use nictype=bridged instead" in str(e.value)
    assert not client.instances.exists("c2")


def test_pylxd_bad_network_key_is_named(client: pylxd.Client, net: str, prefix: str) -> None:
    network = client.networks.get(net)
    network.config["bogus.key"] = "1"
    with pytest.raises(LXDAPIException) as e:
        network.save(wait=True)
    assert '"bogus.key"' in str(e.value)
    assert "bogus.key" not in client.networks.get(net).config
    with pytest.raises(LXDAPIException) as e:
        client.networks.create(f"{prefix}bog", type="bridge", config={"bogus.key": "1"})
    assert '"bogus.key"' in str(e.value)
    assert not client.networks.exists(f"{prefix}bog")
