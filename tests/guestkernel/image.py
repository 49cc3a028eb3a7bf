"""An initramfs that runs tests/guestkernel inside a guest whose kernel has what this host's lacks.

MACHINE.md: the host kernel has no bridge VLAN filtering, no 802.1Q and no tc police; Debian's
cloud kernel (scripts/build-guest.sh) has all three. The guest gets this machine's own Python,
the project's virtualenv, iproute2, nftables, dnsmasq, nsenter, kmod, busybox, the kernel's
networking modules (openvswitch among them) and, when this host has them, the OVN and Open vSwitch
daemons, and the working tree's src/ and tests/ at their host paths, so the editable
install and the test fixtures run unchanged inside. It boots without any NIC: everything the
tests build lives in the guest's own namespaces.

Two archives, concatenated (the kernel unpacks one after the other): a base that is cached
under .cache/guest, and the working tree's code, packed on every run so the guest always tests
the code at hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from tests.imagelib import busybox_image

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PINCUS_GUEST_CACHE", REPO / ".cache" / "guest"))
MARKER = "PINCUS-GUEST"

# What the tests and pincusd run, found on this host's PATH.
GUEST_TEST_IMAGE = "/opt/pincus-test-images/busybox.tar.xz"
TOOLS = ("ip", "bridge", "tc", "nft", "dnsmasq", "nsenter", "unshare", "modprobe", "sh", "busybox",
         "env", "cat", "ls", "sleep")  # fmt: skip
# Host files the tools read: protocol names for nft, iproute2's tables, users for the daemon.
ETC = ("/etc/protocols", "/etc/services", "/etc/passwd", "/etc/group", "/etc/hosts", "/etc/iproute2",
       "/usr/share/iproute2")  # fmt: skip
# Stdlib and venv parts no test imports; mypy and ruff alone are a third of the venv.
_SKIP_DIRS = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "mypy",
              "mypyc", "pip", "ruff", "setuptools", "pkg_resources", "site-packages"}  # fmt: skip
_SKIP_PREFIXES = ("config-3", "mypy", "ruff", "pip-", "setuptools-", "_tkinter")
# Module directories for hardware and file systems the guest has not got.
_SKIP_MODULE_DIRS = {"ethernet", "wireless", "wwan", "usb", "can", "sunrpc", "ceph", "bluetooth",
                     "mac80211", "wimax", "ieee802154", "nfc", "rxrpc"}  # fmt: skip
# OVN on the kernel datapath (tests/guestkernel/test_ovn_kernel.py), when this host has OVN: what
# pincusd runs (ovsdb-client probes a central) and what the test reads the databases with.
# ovs-ofctl, ovs-dpctl and ovn-sbctl stay out (7 MB): the test reads the datapath from `ip -d link`.
OVN_TOOLS = ("ovsdb-server", "ovsdb-tool", "ovsdb-client", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl",
             "ovn-northd", "ovn-controller", "ovn-nbctl", "ovn-appctl")  # fmt: skip
OVN_SCHEMAS = ("/usr/share/openvswitch/vswitch.ovsschema", "/usr/share/ovn/ovn-nb.ovsschema",
               "/usr/share/ovn/ovn-sb.ovsschema")  # fmt: skip
BUSYBOX_DIR = "/usr/local/lib/pincus-guest/bin"  # applets, last on PATH: only what nothing else gives


class Archive:
    """A newc cpio archive built from host paths, each kept at its own absolute path."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, str]] = {}  # guest path -> (kind, source or target)

    def add_dir(self, path: str) -> None:
        parts = Path(path).parts
        for i in range(2, len(parts) + 1):
            self._entries.setdefault(str(Path(*parts[:i])), ("dir", ""))

    def add_file(self, path: str, source: str | None = None) -> None:
        self.add_dir(str(Path(path).parent))
        self._entries[path] = ("file", source or path)

    def add_symlink(self, path: str, target: str) -> None:
        self.add_dir(str(Path(path).parent))
        self._entries[path] = ("symlink", target)

    def add_host_path(self, path: str) -> None:
        """path as on the host, with every symlink on the way to it (merged /usr, venv links).

        Files and directories are stored under their real paths only: an archive entry below a
        symlink would make the kernel create a directory where the link should be.
        """
        path = os.path.normpath(path)
        if path in self._entries or path == "/":
            return
        parent = os.path.dirname(path)
        real_parent = os.path.realpath(parent)
        if real_parent != parent:
            self.add_host_path(parent)
            self.add_host_path(os.path.join(real_parent, os.path.basename(path)))
            return
        self.add_host_path(parent)
        if os.path.islink(path):
            target = os.readlink(path)
            self.add_symlink(path, target)
            self.add_host_path(os.path.join(parent, target))
        elif os.path.isdir(path):
            self.add_dir(path)
        elif os.path.isfile(path):
            self.add_file(path)

    def add_tree(self, root: str, skip: Callable[[str], bool] = lambda name: False) -> None:
        self.add_host_path(root)
        for dirpath, dirnames, filenames in os.walk(os.path.realpath(root)):
            dirnames[:] = [d for d in dirnames if not skip(d)]
            for name in [
                *(f for f in filenames if not skip(f)),
                *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))),
            ]:
                self.add_host_path(os.path.join(dirpath, name))
            for name in dirnames:
                self.add_dir(os.path.join(dirpath, name))

    def files(self) -> list[str]:
        return [src for kind, src in self._entries.values() if kind == "file"]

    def write(self, out: Path) -> None:
        with out.open("wb") as f:
            for ino, (path, (kind, src)) in enumerate(sorted(self._entries.items()), start=1):
                if kind == "dir":
                    self._record(f, ino, path, stat.S_IFDIR | 0o755, b"")
                elif kind == "symlink":
                    self._record(f, ino, path, stat.S_IFLNK | 0o777, src.encode())
                else:
                    st = os.stat(src)
                    data = Path(src).read_bytes()
                    self._record(
                        f, ino, path, stat.S_IFREG | stat.S_IMODE(st.st_mode), data, int(st.st_mtime)
                    )
            self._record(f, 0, "TRAILER!!!", 0, b"", nlink=1)

    @staticmethod
    def _record(
        f: BinaryIO, ino: int, path: str, mode: int, data: bytes, mtime: int = 0, nlink: int = 1
    ) -> None:
        name = path.lstrip("/").encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, 0, 0, len(name), 0)
        header = b"070701" + b"".join(b"%08x" % v for v in fields)
        f.write(header + name + b"\0" * (-(len(header) + len(name)) % 4))
        f.write(data + b"\0" * (-len(data) % 4))


def _is_elf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def _shared_libraries(paths: Iterable[str]) -> set[str]:
    libs: set[str] = set()
    for path in paths:
        if not _is_elf(path):
            continue
        out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        for line in out.splitlines():
            words = line.split()
            for word in words:
                if word.startswith("/") and os.path.exists(word):
                    libs.add(word)
    return libs


def ovn_installed() -> bool:
    """Whether the guest gets OVN: every tool and schema it needs is on this host."""
    return all(_which(t) for t in OVN_TOOLS) and all(os.path.exists(p) for p in OVN_SCHEMAS)


def _which(tool: str) -> str | None:
    return shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _skip(name: str) -> bool:
    return name in _SKIP_DIRS or name.startswith(_SKIP_PREFIXES)


def _venv_python() -> Path:
    return REPO / ".venv" / "bin" / "python3"


def _base_key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for stamp in (CACHE / "stamp", REPO / ".venv" / "pyvenv.cfg"):
        h.update(stamp.read_bytes() if stamp.exists() else b"")
    h.update(sys.version.encode())
    h.update(b"ovn" if ovn_installed() else b"")
    return h.hexdigest()[:16]


def _base(kernel_release: str) -> Archive:
    a = Archive()
    python = _venv_python()
    a.add_host_path(str(python))
    # Instances run host binaries with a standard PATH, where a host has its python3.
    a.add_symlink("/usr/local/bin/python3", os.path.realpath(python))
    stdlib = sysconfig.get_paths(vars={"installed_base": sys.base_prefix, "base": sys.base_prefix})
    a.add_tree(stdlib["stdlib"], _skip)
    a.add_tree(stdlib["platstdlib"], _skip)
    venv = REPO / ".venv"
    a.add_host_path(str(venv / "pyvenv.cfg"))
    a.add_tree(str(venv / "bin"), lambda name: name == "ruff")
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    a.add_dir(str(site))
    for entry in site.iterdir():
        if _skip(entry.name) or "__mypyc" in entry.name:  # mypy's compiled core, 36 MB
            continue
        if entry.is_dir():
            a.add_tree(str(entry), _skip)
        else:
            a.add_host_path(str(entry))
    for tool in TOOLS:
        found = _which(tool)
        if found is None:
            raise RuntimeError(f"guest image: {tool} is not installed (scripts/setup.sh installs it)")
        a.add_host_path(found)
    if ovn_installed():
        for tool in OVN_TOOLS:
            a.add_host_path(str(_which(tool)))
        for schema in OVN_SCHEMAS:
            a.add_host_path(schema)
    for path in ETC:
        if os.path.isdir(path):
            a.add_tree(path)
        elif os.path.exists(path):
            a.add_host_path(path)
    for lib in sorted(_shared_libraries(a.files())):
        a.add_host_path(lib)
    modules = CACHE / "modules" / "lib" / "modules" / kernel_release
    dest = os.path.realpath("/lib") + "/modules/" + kernel_release
    for dirpath, dirs, filenames in os.walk(modules):
        dirs[:] = [d for d in dirs if d not in _SKIP_MODULE_DIRS]
        for name in filenames:
            src = os.path.join(dirpath, name)
            a.add_file(dest + src[len(str(modules)) :], src)
    busybox = shutil.which("busybox") or "/bin/busybox"
    a.add_symlink(f"{BUSYBOX_DIR}/busybox", os.path.realpath(busybox))
    for d in ("/proc", "/sys", "/dev", "/tmp", "/run", "/var/tmp", "/root"):
        a.add_dir(d)
    return a


def _init_script(kernel_release: str, pytest_args: list[str]) -> str:
    path = ":".join(
        [str(REPO / ".venv" / "bin"), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin",
         "/bin", BUSYBOX_DIR]
    )  # fmt: skip
    args = " ".join(f"'{a}'" for a in pytest_args)
    bb = f"{BUSYBOX_DIR}/busybox"
    # A checkout under /tmp (a CI clone) is in the initramfs there: a tmpfs on /tmp would hide it,
    # and the initramfs is writable anyway.
    tmp_mount = "" if REPO.is_relative_to("/tmp") else "mount -t tmpfs tmpfs /tmp\n"
    return f"""#!{bb} sh
{bb} --install -s {BUSYBOX_DIR}
# The initramfs root is the kernel's rootfs, which pivot_root cannot leave: a container's own root
# needs the caller's root to be a real mount. A bind of / moved over / (as switch_root does) is one,
# and, unlike a plain chroot, the kernel does not count it as chrooted (which forbids user namespaces).
if [ -z "$PINCUS_GUEST_REROOTED" ]; then
  {bb} mkdir -p /newroot && {bb} mount -o rbind / /newroot && cd /newroot && {bb} mount -o move . /
  PINCUS_GUEST_REROOTED=1 exec {bb} chroot . /init
fi
export PATH={path} HOME=/root PYTHONDONTWRITEBYTECODE=1 PINCUS_IN_TEST_GUEST=1
export PINCUS_TEST_IMAGE={GUEST_TEST_IMAGE}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{tmp_mount}mount -t tmpfs tmpfs /run
mkdir -p /run/netns /dev/net
# busybox sh prefers its own applets over PATH: the kernel's module loader must be kmod's.
echo {shutil.which("modprobe", path="/usr/sbin:/sbin") or "/sbin/modprobe"} >/proc/sys/kernel/modprobe
exec >/dev/ttyS0 2>&1
echo "{MARKER} KERNEL $(uname -r)"
[ "$(uname -r)" = "{kernel_release}" ] || echo "{MARKER} MODULES-MISMATCH {kernel_release}"
hostname pincus-guest
ip link set lo up
cd {REPO}
python3 -m pytest -p no:cacheprovider -o addopts= -q -rfEs --color=no {args}
echo "{MARKER} PYTEST $?"
poweroff -f
"""


def build(pytest_args: list[str], out_dir: Path) -> tuple[Path, Path]:
    """(kernel, initrd) for a guest that runs `pytest pytest_args` in the repository and powers off.

    The console shows pytest's output and then `PINCUS-GUEST PYTEST <exit status>`.
    """
    built = subprocess.run(
        [str(REPO / "scripts" / "build-guest.sh")], check=True, capture_output=True, text=True, timeout=900
    ).stdout.splitlines()
    kernel = Path(built[-2])
    release = next(p.name for p in (CACHE / "modules" / "lib" / "modules").iterdir())
    base = CACHE / f"python-{_base_key()}.cpio"
    if not base.exists():
        tmp = base.with_suffix(f".{os.getpid()}.tmp")
        _base(release).write(tmp)
        tmp.replace(base)
        for old in CACHE.glob("python-*.cpio"):  # 160 MB each; a reader keeps its open copy
            if old != base:
                old.unlink(missing_ok=True)
    code = Archive()
    for tree in ("src", "tests"):
        code.add_tree(str(REPO / tree))
    code.add_host_path(str(REPO / "pyproject.toml"))
    # The test image, built here: the guest has none of the tools scripts/build-image.sh needs.
    code.add_file(GUEST_TEST_IMAGE, str(busybox_image()))
    init = out_dir / "init"
    init.write_text(_init_script(release, pytest_args))
    init.chmod(0o755)
    code.add_file("/init", str(init))
    code_cpio = out_dir / "code.cpio"
    code.write(code_cpio)
    initrd = out_dir / "initrd.cpio"
    with initrd.open("wb") as f:
        for part in (base, code_cpio):
            with part.open("rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
    return kernel, initrd
