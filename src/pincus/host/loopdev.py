"""Loop block devices over files, through /dev/loop-control and LOOP_CONFIGURE.

Devices are attached with LO_FLAGS_AUTOCLEAR: once the file system on one is unmounted and our
descriptor closed, the kernel detaches it itself, so a daemon killed at any point leaks no
loop device that nothing uses.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from pathlib import Path

from pincus.errors import HostError
from pincus.host import mounts

_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LOOP_CLR_FD = 0x4C01
_LO_FLAGS_AUTOCLEAR = 4
# struct loop_info64: 5 u64, 4 u32, file name (64), crypt name (64), key (32), 2 u64 = 232 bytes.
_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
# struct loop_config: u32 fd, u32 block_size, loop_info64, u64 reserved[8] = 304 bytes.
_CONFIG = struct.Struct(f"=II{_INFO64.size}s64x")


def _config(fd: int, backing: Path) -> bytes:
    info = _INFO64.pack(
        0, 0, 0, 0, 0, 0, 0, 0, _LO_FLAGS_AUTOCLEAR, str(backing).encode()[:63], b"", b"", 0, 0
    )
    return _CONFIG.pack(fd, 0, info)


def attach(backing: Path) -> tuple[str, int]:
    """A free loop device bound to file BACKING: its path and an open descriptor of it, whose
    close detaches it unless something else (a mount) holds it by then."""
    try:
        file_fd = os.open(backing, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise HostError(f"open {backing}: {e.strerror or e}") from e
    try:
        for _ in range(20):  # another process may take the free device between our two calls
            ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
            try:
                number = fcntl.ioctl(ctl, _LOOP_CTL_GET_FREE)
            finally:
                os.close(ctl)
            device = f"/dev/loop{number}"
            dev_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(dev_fd, _LOOP_CONFIGURE, _config(file_fd, backing))
            except OSError as e:
                os.close(dev_fd)
                if e.errno == errno.EBUSY:
                    continue
                raise HostError(f"attach {backing} to {device}: {e.strerror or e}") from e
            return device, dev_fd
        raise HostError(f"attach {backing}: no free loop device after 20 tries")
    except OSError as e:
        raise HostError(f"attach {backing} to a loop device: {e.strerror or e}") from e
    finally:
        os.close(file_fd)


def mount_file(backing: Path, target: Path, fstype: str) -> str:
    """Mount the file system in file BACKING at TARGET through a free loop device (its path).

    One step, so nothing is left half-way: once mounted, the mount alone holds the device and
    unmounting detaches it; a failed mount detaches it at once.
    """
    device, fd = attach(backing)
    try:
        mounts.mount(device, target, fstype)
    finally:
        os.close(fd)
    return device


def devices_of(backing: Path) -> list[str]:
    """The loop devices bound to file BACKING, as sysfs says."""
    found = []
    for entry in Path("/sys/block").glob("loop*"):
        try:
            name = (entry / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if name == str(backing) or name == f"{backing} (deleted)":
            found.append(f"/dev/{entry.name}")
    return sorted(found)


def detach(device: str) -> None:
    """Detach DEVICE from its file (a busy device detaches when its last user lets go)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as e:
        raise HostError(f"open {device}: {e.strerror or e}") from e
    try:
        fcntl.ioctl(fd, _LOOP_CLR_FD)
    except OSError as e:
        if e.errno != errno.ENXIO:  # not bound any more
            raise HostError(f"detach {device}: {e.strerror or e}") from e
    finally:
        os.close(fd)


def wait_detached(backing: Path, timeout: float = 5.0) -> None:
    """Until no loop device holds BACKING (an autoclear detach finishes after the unmount returns)."""
    deadline = time.monotonic() + timeout
    while devices_of(backing):
        if time.monotonic() > deadline:
            for device in devices_of(backing):
                detach(device)
            if devices_of(backing):
                raise HostError(f"loop devices {', '.join(devices_of(backing))} still hold {backing}")
            return
        time.sleep(0.02)
