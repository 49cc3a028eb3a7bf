"""Hand the device behind a host NIC to a VM: a PCI function through VFIO, a USB NIC as USB.

PCI: the function is moved from its host driver to `vfio-pci` with the kernel's
`driver_override` mechanism (override, unbind, `drivers_probe`), and moved back the same way.
USB: nothing changes on the host; QEMU's `usb-host` detaches the kernel driver itself while
it holds the device and gives it back when it lets go.

Every path is built from `sysfs.root()` (`PINCUS_SYSFS_ROOT`, default `/sys`). Everything
read from sysfs or given by a caller that becomes a path component or a QEMU option is
checked against a strict pattern first. Which NIC to pass through, and when, is decided
above this layer.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pincus.errors import ConflictError, HostError, InvalidError, UnsupportedError
from pincus.host import sysfs
from pincus.reverter import Reverter

VFIO_DRIVER = "vfio-pci"
# Drivers that may hold another device of the same IOMMU group while one of its devices is
# given to VFIO: the kernel lets drivers that manage their own DMA (vfio-pci, pci-stub, and
# pcieport for the PCIe bridges that often share a group with the device) coexist with it.
GROUP_SAFE_DRIVERS = frozenset({VFIO_DRIVER, "pci-stub", "pcieport"})
# QEMU's usb-host needs a USB controller; the caller adds `usb_controller_args()` once per VM.
USB_CONTROLLER_ID = "xhci"

# Used with fullmatch: `$` would also accept a trailing newline.
_SLOT = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_DRIVER = re.compile(r"[A-Za-z0-9_.-]+")
_USB_ID = re.compile(r"[0-9a-f]{4}")
# QEMU's own rule for ids: a letter, then letters, digits, '-', '.', '_'.
_QEMU_ID = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")

_POLL_INTERVAL = 0.01
_MODPROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class PciDevice:
    slot: str  # e.g. "0000:05:00.0"
    driver: str | None  # the host driver it had when found; restore_driver puts it back
    iommu_group: int | None  # None: no IOMMU (or it is off), so VFIO cannot take it


@dataclass(frozen=True)
class UsbDevice:
    bus: int
    addr: int  # devnum: changes whenever the device is re-plugged
    vendor: str  # idVendor, 4 lower-case hex digits
    product: str  # idProduct


# --- validation ----------------------------------------------------------------------------


def check_slot(slot: str) -> str:
    if not _SLOT.fullmatch(slot):
        raise InvalidError(f'Invalid PCI slot "{slot}": expected DDDD:BB:DD.F in lower-case hex')
    return slot


def check_driver(driver: str) -> str:
    if not _DRIVER.fullmatch(driver) or driver in (".", ".."):
        raise InvalidError(f'Invalid driver name "{driver}"')
    return driver


def check_device_id(device_id: str) -> str:
    if not _QEMU_ID.fullmatch(device_id):
        raise InvalidError(
            f'Invalid QEMU device id "{device_id}": a letter, then letters, digits, "-", "." or "_"'
        )
    return device_id


# --- sysfs access --------------------------------------------------------------------------


def _pci() -> Path:
    return sysfs.root() / "bus" / "pci"


def _device_dir(slot: str) -> Path:
    return _pci() / "devices" / check_slot(slot)


def _read_uevent(path: Path, what: str) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as e:
        raise HostError(f"Failed to read {what}: {path}: {e.strerror or e}") from e
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key.strip()] = value.strip()
    return result


def _write_attr(path: Path, value: str, what: str) -> None:
    """One write() to an existing sysfs attribute: the kernel handles each write as a whole,
    and a missing attribute must fail rather than be created (as a plain open would)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        raise HostError(f"Failed to {what}: open {path}: {e.strerror or e}") from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise HostError(f"Failed to {what}: write {path}: {e.strerror or e}") from e
    finally:
        os.close(fd)


def current_driver(slot: str) -> str | None:
    """The driver bound to PCI function `slot` now, from its `driver` link."""
    path = _device_dir(slot)
    if not path.exists():
        raise HostError(f'Failed to read the driver of PCI device "{slot}": no {path}')
    return sysfs.link_name(path / "driver")


def _iommu_group(slot: str) -> int | None:
    name = sysfs.link_name(_device_dir(slot) / "iommu_group")
    if name is None:
        return None
    try:
        return int(name)
    except ValueError:
        raise HostError(f'Failed to read the IOMMU group of "{slot}": "{name}" is not a number') from None


def iommu_group_devices(group: int) -> list[str]:
    """Every device of IOMMU group `group`, sorted."""
    path = sysfs.root() / "kernel" / "iommu_groups" / str(group) / "devices"
    try:
        return sorted(entry.name for entry in path.iterdir())
    except OSError as e:
        raise HostError(f"Failed to list IOMMU group {group}: {path}: {e.strerror or e}") from e


def interfaces_of(dev: PciDevice) -> list[str]:
    """Network interfaces the host driver made for `dev`, sorted: after restore_driver the
    NIC is a new interface whose name udev may change, so look it up again here."""
    path = _device_dir(dev.slot) / "net"
    try:
        return sorted(entry.name for entry in path.iterdir())
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HostError(f'Failed to list the interfaces of PCI device "{dev.slot}": {e.strerror or e}') from e


# --- finding the device --------------------------------------------------------------------


def _pci_device(uevent: dict[str, str], nic: str, path: Path) -> PciDevice:
    slot = uevent["PCI_SLOT_NAME"]
    driver = uevent.get("DRIVER") or None
    if not _SLOT.fullmatch(slot) or (driver is not None and not _DRIVER.fullmatch(driver)):
        raise HostError(f'Failed to find the device of "{nic}": unexpected contents of {path}')
    return PciDevice(slot=slot, driver=driver, iommu_group=_iommu_group(slot))


def _read_int(path: Path, what: str) -> int:
    text = path.read_text().strip() if path.exists() else ""
    if not text.isdigit():
        raise HostError(f'Failed to read {what}: {path}: "{text}" is not a number')
    return int(text)


def _usb_device(interface_dir: Path, nic: str) -> UsbDevice:
    # A USB NIC's `device` is a USB interface ("2-1:1.0"); the USB device ("2-1") holding
    # bus number, address and ids is its parent directory.
    usb = interface_dir.resolve().parent
    try:
        bus = _read_int(usb / "busnum", f'the USB bus of "{nic}"')
        addr = _read_int(usb / "devnum", f'the USB address of "{nic}"')
        vendor = (usb / "idVendor").read_text().strip().lower()
        product = (usb / "idProduct").read_text().strip().lower()
    except OSError as e:
        raise HostError(f'Failed to read the USB device of "{nic}": {usb}: {e.strerror or e}') from e
    if not (_USB_ID.fullmatch(vendor) and _USB_ID.fullmatch(product)):
        raise HostError(f'Failed to read the USB device of "{nic}": unexpected ids in {usb}')
    return UsbDevice(bus=bus, addr=addr, vendor=vendor, product=product)


def nic_device(nic: str) -> PciDevice | UsbDevice:
    """The PCI function or USB device behind host interface `nic`.

    A virtio NIC's `device` is a virtio device whose parent is the virtio-pci function: that
    function is what a VM would be given. Virtual interfaces (veth, bridge, ...) have no
    device: HostError naming the uevent path.
    """
    if not sysfs.interface_exists(nic):
        raise HostError(f'Failed to find the device of "{nic}": no such interface')
    device = sysfs.root() / "class" / "net" / nic / "device"
    path = device / "uevent"
    if not path.exists():
        raise HostError(f'Failed to find the device of "{nic}": no {path} (not a PCI or USB NIC)')
    uevent = _read_uevent(path, f'the device of "{nic}"')
    if uevent.get("DEVTYPE") == "usb_interface":
        return _usb_device(device, nic)
    if "PCI_SLOT_NAME" in uevent:
        return _pci_device(uevent, nic, path)
    if sysfs.link_name(device / "subsystem") == "virtio":
        parent = device.resolve().parent
        if sysfs.link_name(parent / "subsystem") == "pci":
            parent_path = parent / "uevent"
            parent_uevent = _read_uevent(parent_path, f'the PCI device of "{nic}"')
            if "PCI_SLOT_NAME" in parent_uevent:
                return _pci_device(parent_uevent, nic, parent_path)
    raise HostError(f'Failed to find the device of "{nic}": {path} names no PCI slot (not a PCI or USB NIC)')


# --- binding -------------------------------------------------------------------------------


def _require_vfio_driver() -> None:
    drivers = _pci() / "drivers"
    if (drivers / VFIO_DRIVER).is_dir():
        return
    # Loading a module only makes sense on the real /sys: a fake tree (tests) cannot grow a
    # driver directory from a module loaded into the running kernel.
    if sysfs.root() == Path("/sys"):
        # A failed modprobe says nothing the check below does not.
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                ["modprobe", VFIO_DRIVER],
                capture_output=True,
                timeout=_MODPROBE_TIMEOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        if (drivers / VFIO_DRIVER).is_dir():
            return
    raise UnsupportedError("VFIO PCI passthrough is not supported on this host (no vfio-pci driver)")


def group_blockers(slot: str, group: int) -> list[tuple[str, str]]:
    """(device, driver) for every other device of `group` still held by a host driver that
    would keep VFIO from using the group."""
    blockers: list[tuple[str, str]] = []
    for other in iommu_group_devices(group):
        if other == slot:
            continue
        entry = sysfs.root() / "kernel" / "iommu_groups" / str(group) / "devices" / other
        driver = sysfs.link_name(entry / "driver")
        if driver is not None and driver not in GROUP_SAFE_DRIVERS:
            blockers.append((other, driver))
    return blockers


def _wait_driver(slot: str, want: str | None, timeout: float) -> bool:
    # drivers_probe and bind return once the probe ran, so this normally succeeds at once;
    # the poll covers drivers that probe asynchronously.
    deadline = time.monotonic() + timeout
    while True:
        if current_driver(slot) == want:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)


def _override_is_clear(slot: str) -> bool:
    path = _device_dir(slot) / "driver_override"
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise HostError(f'Failed to read the driver override of "{slot}": {path}: {e.strerror or e}') from e
    return text in ("", "(null)")


def bind_vfio(dev: PciDevice, timeout: float = 5.0) -> None:
    """Move PCI function `dev` to vfio-pci; return once vfio-pci holds it.

    Refused, with nothing written, when vfio-pci is missing, the device has no IOMMU group,
    or another device of its group is held by a host driver. On failure the device goes back
    to the driver it had.
    """
    slot = check_slot(dev.slot)
    original = current_driver(slot)
    if original == VFIO_DRIVER:
        return
    if original is not None:
        check_driver(original)
    _require_vfio_driver()
    group = _iommu_group(slot)
    if group is None:
        raise UnsupportedError(
            "VFIO PCI passthrough is not supported on this host "
            f'(PCI device "{slot}" has no IOMMU group: is the IOMMU enabled?)'
        )
    blockers = group_blockers(slot, group)
    if blockers:
        held = ", ".join(f'"{other}" (bound to {driver})' for other, driver in blockers)
        raise ConflictError(
            f'Cannot pass through PCI device "{slot}": IOMMU group {group} also holds {held}; '
            "unbind them or bind them to vfio-pci first"
        )
    device = _device_dir(slot)
    with Reverter() as undo:
        undo.add(restore_driver, PciDevice(slot, original, group), timeout)
        _write_attr(device / "driver_override", VFIO_DRIVER, f'set the driver override of "{slot}"')
        if original is not None:
            # Through the `driver` link: the unbind file of whichever driver holds it now.
            _write_attr(device / "driver" / "unbind", slot, f'unbind "{slot}" from {original}')
        _write_attr(_pci() / "drivers_probe", slot, f'probe a driver for "{slot}"')
        if not _wait_driver(slot, VFIO_DRIVER, timeout):
            now = current_driver(slot)
            raise HostError(
                f'Failed to bind "{slot}" to {VFIO_DRIVER}: '
                f"{'bound to ' + now if now else 'no driver'} after {timeout:g}s"
            )
        undo.success()


def restore_driver(dev: PciDevice, timeout: float = 5.0) -> None:
    """Give PCI function `dev` back to `dev.driver` (left unbound when that is None).

    Clears the driver override first, since the kernel matches only the overriding driver
    while one is set. Safe to repeat: a device already on its driver is left alone.
    """
    slot = check_slot(dev.slot)
    original = check_driver(dev.driver) if dev.driver is not None else None
    device = _device_dir(slot)
    if not _override_is_clear(slot):
        _write_attr(device / "driver_override", "\n", f'clear the driver override of "{slot}"')
    now = current_driver(slot)
    if now == original:
        return
    if now is not None:
        _write_attr(device / "driver" / "unbind", slot, f'unbind "{slot}" from {now}')
    if original is not None:
        bind = _pci() / "drivers" / original / "bind"
        if bind.exists():
            _write_attr(bind, slot, f'bind "{slot}" to {original}')
        else:
            # The driver's module is gone: let the kernel match whatever driver fits.
            _write_attr(_pci() / "drivers_probe", slot, f'probe a driver for "{slot}"')
    if not _wait_driver(slot, original, timeout):
        now = current_driver(slot)
        raise HostError(
            f'Failed to restore driver {original or "(none)"} of "{slot}": '
            f"{'bound to ' + now if now else 'no driver'} after {timeout:g}s"
        )


# --- QEMU ----------------------------------------------------------------------------------


def usb_controller_args() -> list[str]:
    """The USB controller usb-host devices attach to; add it once per VM that has any."""
    return ["-device", f"qemu-xhci,id={USB_CONTROLLER_ID}"]


def qemu_args(dev: PciDevice | UsbDevice, device_id: str) -> list[str]:
    """QEMU arguments that give `dev` to the guest. A USB device needs
    `usb_controller_args()` on the same command line (once, however many USB devices)."""
    check_device_id(device_id)
    if isinstance(dev, PciDevice):
        return ["-device", f"{VFIO_DRIVER},host={check_slot(dev.slot)},id={device_id}"]
    if not (1 <= dev.bus <= 65535 and 1 <= dev.addr <= 127):
        raise InvalidError(f"Invalid USB device {dev.bus}:{dev.addr}")
    return [
        "-device",
        f"usb-host,bus={USB_CONTROLLER_ID}.0,hostbus={dev.bus},hostaddr={dev.addr},id={device_id}",
    ]
