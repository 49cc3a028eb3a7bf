"""host/pci.py against a fake sysfs tree laid out as the kernel does, and a fake "kernel"
that reacts to the writes (this machine has no VFIO and no PCI NIC to give away).

The fake kernel wraps pci's own attribute writer: the real write happens first (so a write
to a missing attribute fails as it would in /sys), then the fake moves the `driver` links
the way the PCI core does for driver_override, unbind, bind and drivers_probe. The last
tests read the real /sys and run the real QEMU, read-only.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pincus.errors import ConflictError, HostError, InvalidError, UnsupportedError
from pincus.host import pci

SLOT = "0000:05:00.0"
SIBLING = "0000:05:00.1"  # the second port of the same card
BRIDGE = "0000:00:1c.0"  # the PCIe root port above the card
GROUP = 14
DEVICE_PATH = f"pci0000:00/{BRIDGE}/{SLOT}"
DRIVERS = ("igb", "vfio-pci", "pcieport", "r8152", "virtio-pci")


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


class FakeSysfs:
    """The bits of /sys that PCI passthrough reads and writes, plus a kernel that reacts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.writes: list[tuple[str, str]] = []  # (path relative to root, value) in order
        self.probe_fails: set[str] = set()  # drivers whose probe fails (VFIO without IOMMU)
        self.native: dict[str, str] = {}  # slot -> the driver drivers_probe picks without override
        self.netdevs: dict[str, str] = {}  # slot -> name of the interface its host driver makes
        pci_bus = root / "bus" / "pci"
        (pci_bus / "devices").mkdir(parents=True)
        for name in ("drivers_probe", "drivers_autoprobe", "rescan"):
            (pci_bus / name).write_text("")
        for driver in DRIVERS:
            self.add_driver(driver)

    def add_driver(self, driver: str) -> None:
        d = self.root / "bus" / "pci" / "drivers" / driver
        d.mkdir(parents=True)
        for name in ("bind", "unbind", "new_id", "remove_id", "uevent"):
            (d / name).write_text("")

    def pci_function(
        self, path: str, driver: str | None, group: int | None, netdev: str | None = None
    ) -> Path:
        slot = path.rsplit("/", 1)[1]
        dev = self.root / "devices" / path
        dev.mkdir(parents=True)
        (dev / "driver_override").write_text("(null)\n")
        for name in ("vendor", "device", "class", "config", "remove", "reset"):
            (dev / name).write_text("")
        _link(dev / "subsystem", self.root / "bus" / "pci")
        _link(self.root / "bus" / "pci" / "devices" / slot, dev)
        if group is not None:
            group_dir = self.root / "kernel" / "iommu_groups" / str(group)
            (group_dir / "devices").mkdir(parents=True, exist_ok=True)
            _link(dev / "iommu_group", group_dir)
            _link(group_dir / "devices" / slot, dev)
        if driver is not None:
            self.native[slot] = driver
        if netdev is not None:
            self.netdevs[slot] = netdev
        self._bind(slot, driver)
        return dev

    def dev(self, slot: str) -> Path:
        return Path(os.path.realpath(self.root / "bus" / "pci" / "devices" / slot))

    def driver(self, slot: str) -> str | None:
        link = self.dev(slot) / "driver"
        return os.path.basename(os.readlink(link)) if os.path.islink(link) else None

    def override(self, slot: str) -> str:
        return (self.dev(slot) / "driver_override").read_text()

    def _uevent(self, slot: str, driver: str | None) -> None:
        lines = [f"DRIVER={driver}"] if driver else []
        lines += ["PCI_CLASS=20000", "PCI_ID=8086:1521", "PCI_SUBSYS_ID=8086:0001", f"PCI_SLOT_NAME={slot}"]
        lines.append("MODALIAS=pci:v00008086d00001521sv00008086sd00000001bc02sc00i00")
        (self.dev(slot) / "uevent").write_text("\n".join(lines) + "\n")

    def _bind(self, slot: str, driver: str | None) -> None:
        dev = self.dev(slot)
        self._uevent(slot, driver)
        if driver is None:
            return
        drv = self.root / "bus" / "pci" / "drivers" / driver
        _link(dev / "driver", drv)
        _link(drv / slot, dev)
        name = self.netdevs.get(slot)
        if name is not None and driver == self.native.get(slot):
            # A NIC driver registers its interface in probe; class/net follows.
            net = dev / "net" / name
            net.mkdir(parents=True)
            (net / "uevent").write_text(f"INTERFACE={name}\nIFINDEX=7\n")
            (net / "mtu").write_text("1500\n")
            _link(net / "device", dev)
            _link(self.root / "class" / "net" / name, net)

    def _unbind(self, slot: str) -> None:
        dev = self.dev(slot)
        driver = self.driver(slot)
        (dev / "driver").unlink()
        (self.root / "bus" / "pci" / "drivers" / str(driver) / slot).unlink()
        self._uevent(slot, None)
        name = self.netdevs.get(slot)
        if name is not None and (dev / "net" / name).exists():
            (self.root / "class" / "net" / name).unlink()
            for entry in (dev / "net" / name).iterdir():
                entry.unlink()
            (dev / "net" / name).rmdir()
            (dev / "net").rmdir()

    def _probe(self, slot: str, driver: str) -> None:
        if driver not in self.probe_fails and (self.root / "bus" / "pci" / "drivers" / driver).is_dir():
            self._bind(slot, driver)

    def write(self, path: Path, value: str, what: str) -> None:
        """Stands in for pci._write_attr: write, then do what the PCI core would."""
        real_write(path, value, what)
        self.writes.append((os.path.relpath(path, self.root), value))
        target = Path(os.path.realpath(path))
        slot = value.strip()

        def fail(reason: str) -> None:
            raise HostError(f"Failed to {what}: write {path}: {reason}")

        if target.name == "driver_override":
            text = value.strip()
            target.write_text(f"{text}\n" if text else "(null)\n")
        elif target.name == "unbind":
            if self.driver(slot) != target.parent.name:
                fail("No such device")
            self._unbind(slot)
        elif target.name == "bind":
            override = self.override(slot).strip()
            if self.driver(slot) is not None:
                fail("Device or resource busy")
            if override != "(null)" and override != target.parent.name:
                fail("No such device")  # driver_override lets only the named driver match
            self._probe(slot, target.parent.name)
        elif target.name == "drivers_probe" and self.driver(slot) is None:
            override = self.override(slot).strip()
            wanted = override if override != "(null)" else self.native.get(slot)
            if wanted is not None:
                self._probe(slot, wanted)

    def snapshot(self) -> dict[str, str]:
        """Every file's contents and every link's target: to show nothing changed."""
        found: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                key = os.path.relpath(path, self.root)
                if os.path.islink(path):
                    found[key] = "-> " + os.readlink(path)
                elif os.path.isfile(path):
                    found[key] = Path(path).read_text()
        return found


real_write = pci._write_attr


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSysfs]:
    """eth7 on igb at 0000:05:00.0, alone in IOMMU group 14 but for its root port (pcieport)."""
    monkeypatch.setenv("PINCUS_SYSFS_ROOT", str(tmp_path))
    sysfs = FakeSysfs(tmp_path)
    sysfs.pci_function(f"pci0000:00/{BRIDGE}", "pcieport", GROUP)
    sysfs.pci_function(DEVICE_PATH, "igb", GROUP, netdev="eth7")
    monkeypatch.setattr(pci, "_write_attr", sysfs.write)
    yield sysfs


def _pci_nic(name: str) -> pci.PciDevice:
    dev = pci.nic_device(name)
    assert isinstance(dev, pci.PciDevice)
    return dev


def _veth(root: Path, name: str) -> None:
    net = root / "devices" / "virtual" / "net" / name
    net.mkdir(parents=True)
    (net / "uevent").write_text(f"INTERFACE={name}\nIFINDEX=9\n")
    _link(root / "class" / "net" / name, net)


# --- finding the device --------------------------------------------------------------------


def test_nic_device_finds_slot_driver_and_iommu_group(fake: FakeSysfs) -> None:
    assert os.readlink(fake.root / "class" / "net" / "eth7") == f"../../devices/{DEVICE_PATH}/net/eth7"
    assert pci.nic_device("eth7") == pci.PciDevice(slot=SLOT, driver="igb", iommu_group=GROUP)


def test_a_virtio_nic_is_the_virtio_pci_function_above_it(fake: FakeSysfs) -> None:
    # As on this machine: class/net/eth0 -> .../0000:00:03.0/virtio2/net/eth0.
    fake.pci_function("pci0000:00/0000:00:03.0", "virtio-pci", None)
    virtio = fake.dev("0000:00:03.0") / "virtio2"
    (virtio / "net" / "ens3").mkdir(parents=True)
    (virtio / "uevent").write_text("DRIVER=virtio_net\nMODALIAS=virtio:d00000001v00001AF4\n")
    (fake.root / "bus" / "virtio").mkdir()
    _link(virtio / "subsystem", fake.root / "bus" / "virtio")
    _link(virtio / "net" / "ens3" / "device", virtio)
    _link(fake.root / "class" / "net" / "ens3", virtio / "net" / "ens3")

    dev = pci.nic_device("ens3")

    assert dev == pci.PciDevice(slot="0000:00:03.0", driver="virtio-pci", iommu_group=None)
    with pytest.raises(UnsupportedError, match="has no IOMMU group"):
        pci.bind_vfio(dev)
    assert fake.writes == []


def test_usb_nic_is_passed_through_as_usb_host(fake: FakeSysfs) -> None:
    usb = fake.root / "devices" / "pci0000:00" / "0000:00:14.0" / "usb2" / "2-1"
    interface = usb / "2-1:1.0"
    (interface / "net" / "enx00e04c680001").mkdir(parents=True)
    for name, value in {"busnum": "2", "devnum": "5", "idVendor": "0bda", "idProduct": "8153"}.items():
        (usb / name).write_text(f"{value}\n")
    (usb / "uevent").write_text("DEVTYPE=usb_device\nDRIVER=usb\nBUSNUM=002\nDEVNUM=005\n")
    (interface / "uevent").write_text(
        "DEVTYPE=usb_interface\nDRIVER=r8152\nPRODUCT=bda/8153/3000\nTYPE=0/0/0\nINTERFACE=255/255/0\n"
    )
    _link(interface / "net" / "enx00e04c680001" / "device", interface)
    _link(fake.root / "class" / "net" / "enx00e04c680001", interface / "net" / "enx00e04c680001")

    dev = pci.nic_device("enx00e04c680001")

    assert dev == pci.UsbDevice(bus=2, addr=5, vendor="0bda", product="8153")
    assert pci.qemu_args(dev, "dev-eth1") == [
        "-device", "usb-host,bus=xhci.0,hostbus=2,hostaddr=5,id=dev-eth1",
    ]  # fmt: skip
    assert pci.usb_controller_args() == ["-device", "qemu-xhci,id=xhci"]


@pytest.mark.parametrize("kind", ["veth", "bridge"])
def test_interface_without_a_device_is_refused_naming_the_uevent_path(fake: FakeSysfs, kind: str) -> None:
    _veth(fake.root, "v7")
    if kind == "bridge":
        (fake.root / "devices" / "virtual" / "net" / "v7" / "bridge").mkdir()
    with pytest.raises(HostError) as err:
        pci.nic_device("v7")
    assert str(fake.root / "class" / "net" / "v7" / "device" / "uevent") in str(err.value)
    assert "not a PCI or USB NIC" in str(err.value)


def test_missing_interface_and_bad_names_are_refused(fake: FakeSysfs) -> None:
    with pytest.raises(HostError, match="no such interface"):
        pci.nic_device("eth9")
    with pytest.raises(InvalidError):
        pci.nic_device("../eth7")


def test_a_malformed_slot_in_the_uevent_is_a_host_error(fake: FakeSysfs) -> None:
    uevent = fake.dev(SLOT) / "uevent"
    uevent.write_text(uevent.read_text().replace(f"PCI_SLOT_NAME={SLOT}", "PCI_SLOT_NAME=../../../x"))
    with pytest.raises(HostError, match="unexpected contents"):
        pci.nic_device("eth7")


# --- binding and restoring -----------------------------------------------------------------


def test_bind_vfio_moves_the_function_to_vfio_pci(fake: FakeSysfs) -> None:
    dev = _pci_nic("eth7")

    pci.bind_vfio(dev)

    devdir = f"bus/pci/devices/{SLOT}"
    assert fake.writes == [
        (f"{devdir}/driver_override", "vfio-pci"),
        (f"{devdir}/driver/unbind", SLOT),
        ("bus/pci/drivers_probe", SLOT),
    ]
    assert fake.driver(SLOT) == "vfio-pci"
    assert fake.override(SLOT) == "vfio-pci\n"
    assert pci.current_driver(SLOT) == "vfio-pci"
    assert not (fake.root / "class" / "net" / "eth7").exists()  # igb let go of the NIC
    assert fake.driver(BRIDGE) == "pcieport"


def test_bind_vfio_is_a_no_op_when_vfio_pci_already_holds_it(fake: FakeSysfs) -> None:
    dev = _pci_nic("eth7")
    pci.bind_vfio(dev)
    fake.writes.clear()

    pci.bind_vfio(dev)

    assert fake.writes == []


def test_restore_driver_gives_the_function_back_to_its_driver(fake: FakeSysfs) -> None:
    dev = _pci_nic("eth7")
    pci.bind_vfio(dev)
    fake.writes.clear()

    pci.restore_driver(dev)

    devdir = f"bus/pci/devices/{SLOT}"
    assert fake.writes == [
        (f"{devdir}/driver_override", "\n"),
        (f"{devdir}/driver/unbind", SLOT),
        ("bus/pci/drivers/igb/bind", SLOT),
    ]
    assert fake.driver(SLOT) == "igb"
    assert fake.override(SLOT) == "(null)\n"
    assert pci.interfaces_of(dev) == ["eth7"]
    assert _pci_nic("eth7") == dev


def test_restore_driver_is_a_no_op_when_already_restored(fake: FakeSysfs) -> None:
    before = fake.snapshot()
    pci.restore_driver(_pci_nic("eth7"))
    assert fake.writes == []
    assert fake.snapshot() == before


def test_restore_driver_leaves_an_originally_unbound_function_unbound(fake: FakeSysfs) -> None:
    fake.pci_function(f"pci0000:00/{BRIDGE}/{SIBLING}", None, GROUP + 1)
    dev = pci.PciDevice(SIBLING, None, GROUP + 1)
    pci.bind_vfio(dev)
    assert fake.driver(SIBLING) == "vfio-pci"

    pci.restore_driver(dev)

    assert fake.driver(SIBLING) is None
    assert fake.override(SIBLING) == "(null)\n"


def test_a_group_member_held_by_a_host_driver_is_refused_naming_it(fake: FakeSysfs) -> None:
    fake.pci_function(f"pci0000:00/{BRIDGE}/{SIBLING}", "igb", GROUP, netdev="eth8")
    before = fake.snapshot()

    with pytest.raises(ConflictError) as err:
        pci.bind_vfio(_pci_nic("eth7"))

    assert f'"{SIBLING}" (bound to igb)' in str(err.value)
    assert f"IOMMU group {GROUP}" in str(err.value)
    assert BRIDGE not in str(err.value)  # a PCIe port does not stop VFIO
    assert fake.writes == []
    assert fake.snapshot() == before


def test_group_members_that_are_unbound_or_on_vfio_pci_are_accepted(fake: FakeSysfs) -> None:
    fake.pci_function(f"pci0000:00/{BRIDGE}/{SIBLING}", "vfio-pci", GROUP)
    fake.pci_function(f"pci0000:00/{BRIDGE}/0000:05:00.2", None, GROUP)
    assert pci.group_blockers(SLOT, GROUP) == []
    pci.bind_vfio(_pci_nic("eth7"))
    assert fake.driver(SLOT) == "vfio-pci"


def test_no_vfio_pci_driver_is_unsupported_and_writes_nothing(fake: FakeSysfs) -> None:
    vfio = fake.root / "bus" / "pci" / "drivers" / "vfio-pci"
    for entry in vfio.iterdir():
        entry.unlink()
    vfio.rmdir()
    before = fake.snapshot()

    with pytest.raises(UnsupportedError) as err:
        pci.bind_vfio(_pci_nic("eth7"))

    assert str(err.value) == "VFIO PCI passthrough is not supported on this host (no vfio-pci driver)"
    assert fake.writes == []
    assert fake.snapshot() == before


def test_failed_vfio_probe_gives_the_function_back_to_igb(fake: FakeSysfs) -> None:
    fake.probe_fails.add("vfio-pci")
    dev = _pci_nic("eth7")

    with pytest.raises(HostError, match=f'Failed to bind "{SLOT}" to vfio-pci: no driver after 0.05s'):
        pci.bind_vfio(dev, timeout=0.05)

    assert fake.driver(SLOT) == "igb"
    assert fake.override(SLOT) == "(null)\n"
    assert (fake.root / "class" / "net" / "eth7").exists()
    assert fake.writes[-2:] == [
        (f"bus/pci/devices/{SLOT}/driver_override", "\n"),
        ("bus/pci/drivers/igb/bind", SLOT),
    ]


def test_restore_fails_clearly_when_the_driver_does_not_take_the_function(fake: FakeSysfs) -> None:
    dev = _pci_nic("eth7")
    pci.bind_vfio(dev)
    fake.probe_fails.add("igb")

    with pytest.raises(HostError, match=f'Failed to restore driver igb of "{SLOT}": no driver after 0.05s'):
        pci.restore_driver(dev, timeout=0.05)


def test_restore_probes_when_the_original_driver_is_gone(fake: FakeSysfs) -> None:
    dev = _pci_nic("eth7")
    pci.bind_vfio(dev)
    fake.writes.clear()

    # e1000e is not loaded: the kernel's own match (igb, in this fake) is all it can get.
    with pytest.raises(HostError, match=r"Failed to restore driver e1000e .*bound to igb"):
        pci.restore_driver(pci.PciDevice(SLOT, "e1000e", GROUP), timeout=0.05)
    assert fake.writes[-1] == ("bus/pci/drivers_probe", SLOT)


def test_writing_a_missing_attribute_fails_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "unbind"
    with pytest.raises(HostError, match=f"Failed to unbind x: open {path}"):
        real_write(path, SLOT, "unbind x")
    assert not path.exists()


# --- validation ----------------------------------------------------------------------------


BAD_SLOTS = [
    "../../../../tmp/x",
    f"{SLOT}/../..",
    f"{SLOT}\n",
    "0000:05:00.8",
    "0000:5:00.0",
    "05:00.0",
    "0000:0A:00.0",
    "0000:05:00.0,id=x",
    "",
]


@pytest.mark.parametrize("slot", BAD_SLOTS)
def test_bad_slot_strings_are_refused(fake: FakeSysfs, slot: str) -> None:
    dev = pci.PciDevice(slot, "igb", GROUP)
    before = fake.snapshot()
    for call in (pci.bind_vfio, pci.restore_driver):
        with pytest.raises(InvalidError, match="Invalid PCI slot"):
            call(dev)
    with pytest.raises(InvalidError, match="Invalid PCI slot"):
        pci.qemu_args(dev, "dev-eth7")
    assert fake.writes == []
    assert fake.snapshot() == before


@pytest.mark.parametrize("driver", ["../vfio-pci", "..", "igb/bind", "igb\n", ""])
def test_bad_driver_names_are_refused(fake: FakeSysfs, driver: str) -> None:
    with pytest.raises(InvalidError, match="Invalid driver name"):
        pci.restore_driver(pci.PciDevice(SLOT, driver, GROUP))
    assert fake.writes == []


@pytest.mark.parametrize("device_id", ["", "7nic", "dev,x=1", "dev eth", "dev-eth7\n", "a" * 129])
def test_bad_device_ids_are_refused(device_id: str) -> None:
    with pytest.raises(InvalidError, match="Invalid QEMU device id"):
        pci.qemu_args(pci.PciDevice(SLOT, "igb", GROUP), device_id)


def test_qemu_args_for_a_pci_function() -> None:
    assert pci.qemu_args(pci.PciDevice(SLOT, "igb", GROUP), "dev-eth7") == [
        "-device", f"vfio-pci,host={SLOT},id=dev-eth7",
    ]  # fmt: skip


# --- the real /sys and the real QEMU, read-only --------------------------------------------


def test_nic_device_agrees_with_the_real_sysfs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINCUS_SYSFS_ROOT", raising=False)
    sys_net = Path("/sys/class/net")
    checked = 0
    for name in sorted(os.listdir(sys_net)):
        if not (sys_net / name / "device").exists():
            # (or gone already: other tests make and delete interfaces meanwhile)
            with pytest.raises(HostError, match=r"not a PCI or USB NIC|no such interface"):
                pci.nic_device(name)
            continue
        try:
            dev = pci.nic_device(name)
        except HostError:
            continue  # a platform or virtio-mmio NIC: neither PCI nor USB
        if isinstance(dev, pci.PciDevice):
            # The kernel's own view: the function's directory and its driver link.
            function = Path("/sys/bus/pci/devices") / dev.slot
            assert function.is_dir()
            assert dev.driver == os.path.basename(os.readlink(function / "driver"))
            assert Path(os.path.realpath(sys_net / name)).is_relative_to(function.resolve())
            checked += 1
    if checked == 0:
        pytest.skip("no PCI network interface on this machine")


def _qemu_refusal(args: list[str]) -> str:
    proc = subprocess.run(
        ["qemu-system-x86_64", "-accel", "tcg", "-S", "-nodefaults", "-display", "none", "-monitor", "none",
         *args],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode != 0
    return proc.stderr


def test_qemu_takes_the_arguments_and_looks_for_the_host_devices() -> None:
    # No such devices here: QEMU must get as far as looking for them, which it does only
    # after it accepted every property (host=, hostbus=, hostaddr=, bus=xhci.0, id=).
    vfio = _qemu_refusal(pci.qemu_args(pci.PciDevice(SLOT, "igb", GROUP), "dev-eth7"))
    assert f"/sys/bus/pci/devices/{SLOT}: no such host device" in vfio
    usb = _qemu_refusal(
        pci.usb_controller_args() + pci.qemu_args(pci.UsbDevice(99, 99, "0bda", "8153"), "u1")
    )
    assert "failed to find host usb device 99:99" in usb
