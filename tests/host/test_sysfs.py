"""host/sysfs.py against a fake sysfs tree (PINCUS_SYSFS_ROOT) laid out as the kernel does."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pincus.errors import HostError, InvalidError
from pincus.host import sysfs

UEVENT = "DRIVER=e1000e\nPCI_CLASS=20000\nPCI_ID=8086:15BB\nPCI_SLOT_NAME=0000:00:1f.6\nMODALIAS=pci:v8086\n"


def _iface(root: Path, name: str, mtu: int = 1500) -> Path:
    # Real sysfs: class/net/<name> is a symlink into devices/; tests follow it the same way.
    real = root / "devices" / "virtual" / "net" / name
    real.mkdir(parents=True)
    (real / "mtu").write_text(f"{mtu}\n")
    link = root / "class" / "net" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(real, link.parent))
    return real


def _enslave(root: Path, name: str, master: str) -> None:
    (root / "devices" / "virtual" / "net" / name / "master").symlink_to(f"../{master}")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """br-lan (bridge, VLAN filtering off) with eth1 and veth9; bond0 with eth2 (bonding_slave)
    and eth3 (master only); eth1 is a PCI NIC with a uevent; br-vlan has filtering on."""
    monkeypatch.setenv("PINCUS_SYSFS_ROOT", str(tmp_path))
    br = _iface(tmp_path, "br-lan", mtu=9000)
    (br / "bridge").mkdir()
    (br / "bridge" / "vlan_filtering").write_text("0\n")
    (br / "brif").mkdir()
    for port in ("veth9", "eth1"):
        _iface(tmp_path, port)
        _enslave(tmp_path, port, "br-lan")
        (br / "brif" / port).symlink_to(f"../../{port}/brport")
    eth1 = tmp_path / "devices" / "virtual" / "net" / "eth1"
    (eth1 / "device").mkdir()
    (eth1 / "device" / "uevent").write_text(UEVENT)
    brv = _iface(tmp_path, "br-vlan")
    (brv / "bridge").mkdir()
    (brv / "bridge" / "vlan_filtering").write_text("1\n")
    (brv / "brif").mkdir()
    bond = _iface(tmp_path, "bond0")
    (bond / "bonding").mkdir()
    _iface(tmp_path, "eth2")
    (tmp_path / "devices" / "virtual" / "net" / "eth2" / "bonding_slave").mkdir()
    _enslave(tmp_path, "eth2", "bond0")
    _iface(tmp_path, "eth3")
    _enslave(tmp_path, "eth3", "bond0")
    _iface(tmp_path, "eth4")
    return tmp_path


def test_root_follows_the_environment_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINCUS_SYSFS_ROOT", raising=False)
    assert sysfs.root() == Path("/sys")
    monkeypatch.setenv("PINCUS_SYSFS_ROOT", "/tmp/elsewhere")
    assert sysfs.root() == Path("/tmp/elsewhere")


def test_existence(fake: Path) -> None:
    assert sysfs.interface_exists("br-lan") and sysfs.interface_exists("eth4")
    assert not sysfs.interface_exists("eth9")


def test_listing(fake: Path) -> None:
    assert sysfs.list_interfaces() == ["bond0", "br-lan", "br-vlan", "eth1", "eth2", "eth3", "eth4", "veth9"]


def test_kinds_as_incus_names_them(fake: Path) -> None:
    lo = _iface(fake, "lo")
    (lo / "type").write_text("772\n")
    vlan = _iface(fake, "eth1.10")
    (vlan / "uevent").write_text("DEVTYPE=vlan\nINTERFACE=eth1.10\nIFINDEX=9\n")
    kinds = {name: sysfs.interface_kind(name) for name in sysfs.list_interfaces()}
    assert kinds == {
        "bond0": "bond",
        "br-lan": "bridge",
        "br-vlan": "bridge",
        "eth1": "physical",
        "eth1.10": "vlan",
        "eth2": "unknown",
        "eth3": "unknown",
        "eth4": "unknown",
        "lo": "loopback",
        "veth9": "unknown",
    }


def test_a_bridge_is_told_from_a_nic(fake: Path) -> None:
    assert sysfs.is_bridge("br-lan") and sysfs.is_bridge("br-vlan")
    assert not sysfs.is_bridge("eth1") and not sysfs.is_bridge("bond0")
    assert not sysfs.is_bridge("missing")


def test_master_is_the_basename_of_the_link(fake: Path) -> None:
    assert sysfs.bridge_master("eth1") == "br-lan"
    assert sysfs.bridge_master("eth3") == "bond0"
    assert sysfs.bridge_master("eth4") is None
    assert sysfs.bridge_master("missing") is None


def test_bond_members_by_bonding_slave_or_by_master(fake: Path) -> None:
    assert sysfs.is_bond_member("eth2")
    assert sysfs.is_bond_member("eth3")
    assert not sysfs.is_bond_member("eth1")  # a bridge port
    assert not sysfs.is_bond_member("eth4")


def test_vlan_filtering(fake: Path) -> None:
    assert sysfs.bridge_vlan_filtering("br-vlan") is True
    assert sysfs.bridge_vlan_filtering("br-lan") is False
    (fake / "devices/virtual/net/br-lan/bridge/vlan_filtering").unlink()  # kernel without the option
    assert sysfs.bridge_vlan_filtering("br-lan") is False
    with pytest.raises(HostError, match=r'"eth1": not a bridge'):
        sysfs.bridge_vlan_filtering("eth1")


def test_bridge_members(fake: Path) -> None:
    assert sysfs.bridge_members("br-lan") == ["eth1", "veth9"]
    assert sysfs.bridge_members("br-vlan") == []
    with pytest.raises(HostError, match=r'ports of bridge "eth1"'):
        sysfs.bridge_members("eth1")


def test_uevent_of_a_pci_nic(fake: Path) -> None:
    event = sysfs.read_uevent("eth1")
    assert event["PCI_SLOT_NAME"] == "0000:00:1f.6"
    assert event["DRIVER"] == "e1000e"
    assert len(event) == 5


def test_a_bridge_has_no_uevent_and_the_error_names_the_path(fake: Path) -> None:
    with pytest.raises(HostError) as err:
        sysfs.read_uevent("br-lan")
    assert f"{fake}/class/net/br-lan/device/uevent" in str(err.value)
    assert "No such file or directory" in str(err.value)


def test_mtu(fake: Path) -> None:
    assert sysfs.interface_mtu("br-lan") == 9000
    assert sysfs.interface_mtu("eth1") == 1500
    with pytest.raises(HostError, match=r"class/net/eth9/mtu"):
        sysfs.interface_mtu("eth9")


def test_names_cannot_leave_class_net(fake: Path) -> None:
    for bad in ("", ".", "..", "../../etc", "a/b"):
        with pytest.raises(InvalidError):
            sysfs.interface_exists(bad)


def test_the_real_sysfs_agrees_with_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINCUS_SYSFS_ROOT", raising=False)
    lo = json.loads(
        subprocess.run(["ip", "-j", "link", "show", "lo"], capture_output=True, text=True).stdout
    )[0]
    assert sysfs.interface_exists("lo")
    assert "lo" in sysfs.list_interfaces()
    assert sysfs.interface_kind("lo") == "loopback"
    assert sysfs.interface_mtu("lo") == lo["mtu"]
    assert not sysfs.is_bridge("lo")
    with pytest.raises(HostError, match=r"/sys/class/net/lo/device/uevent"):
        sysfs.read_uevent("lo")


def test_bridge_state(fake: Path) -> None:
    brv = fake / "devices" / "virtual" / "net" / "br-vlan" / "bridge"
    for name, value in (("bridge_id", "8000.00163e000001"), ("stp_state", "1"), ("forward_delay", "1500"),
                        ("default_pvid", "7")):  # fmt: skip
        (brv / name).write_text(f"{value}\n")
    assert sysfs.bridge_state("br-vlan") == sysfs.BridgeState(
        id="8000.00163e000001",
        stp=True,
        forward_delay=1500,
        vlan_default=7,
        vlan_filtering=True,
        upper_devices=(),
    )
    # br-lan: a kernel without VLAN filtering files gives 0 and off; no bridge_id is an error
    with pytest.raises(HostError, match=r"class/net/br-lan/bridge/bridge_id"):
        sysfs.bridge_state("br-lan")
    (fake / "devices" / "virtual" / "net" / "br-lan" / "bridge" / "bridge_id").write_text("8000.1\n")
    state = sysfs.bridge_state("br-lan")
    assert state is not None and state.upper_devices == ("eth1", "veth9")
    assert (state.stp, state.forward_delay, state.vlan_default, state.vlan_filtering) == (False, 0, 0, False)
    assert sysfs.bridge_state("eth1") is None
