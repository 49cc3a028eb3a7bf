"""Fault injection, run inside a throw-away network namespace (tests/faults/test_fault_injection.py).

`python -m tests.faults.run SCENARIO` starts pincus's server in this process on $PINCUS_DIR, sets
up what the scenario needs, and counts the host calls of one successful run of its operation
(then undoes it). Then for every N from 1 to that count it fails the Nth host call with a
HostError, and checks that the operation either failed leaving the host and the database exactly
as before, or succeeded (the failed call was one it may do without), in which case it is undone
and the same is checked. One JSON line on stdout reports the calls seen and every difference.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import functools
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pincus.db import instances as db_instances
from pincus.db.store import Store
from pincus.errors import HostError
from pincus.events import EventHub
from pincus.host.features import probe_kernel_features
from pincus.reverter import Reverter
from pincus.server.daemon import daemon_tag
from pincus.server.server import Server
from pincus.state import State
from tests import cgroupfiles, imagelib

# Fields the kernel changes on its own between two looks: timers, lifetimes, statistics.
_VOLATILE_SUFFIXES = ("_timer", "_life_time", "stats", "stats64")
# ... and the numbers the kernel and nft give a recreated object, which only say it was recreated
# ("state": STP port state; "link_netnsid": the id of a veth peer's namespace, which a new
# container's namespace may get while the old one's id is not yet given back).
_VOLATILE_KEYS = {"operstate", "linkmode", "ifindex", "handle", "link_index", "state", "link_netnsid"}


# Carrier follows a peer that just left or joined, a moment after the change.
_CARRIER_FLAGS = {"NO-CARRIER", "LOWER_UP", "linkdown"}


def _clean(doc: Any) -> Any:
    if isinstance(doc, dict) and re.fullmatch(r"if\d+", str(doc.get("link", ""))):
        doc = {k: v for k, v in doc.items() if k != "link"}  # a veth's peer by ifindex
    if isinstance(doc, dict) and isinstance(doc.get("flags"), list):
        doc = {**doc, "flags": [f for f in doc["flags"] if f not in _CARRIER_FLAGS]}
    if isinstance(doc, dict):
        return {
            k: _clean(v)
            for k, v in doc.items()
            if not k.endswith(_VOLATILE_SUFFIXES) and k not in _VOLATILE_KEYS
        }
    if isinstance(doc, list):
        return [_clean(v) for v in doc]
    return doc


def _json_of(*argv: str) -> Any:
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return _clean(json.loads(out)) if out.strip() else []


def _processes(needle: str) -> list[str]:
    """Command lines of this daemon's helpers (dnsmasq, container inits) other than this process."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            # The fd a container init reports ready on is whichever the daemon had free.
            out.append(re.sub(r"--ready-fd \d+", "--ready-fd N", cmdline.strip()))
    return sorted(out)


# Files whose content their own process writes (dnsmasq's leases and pid, pincusd's lock and
# stderr): checked for presence.
_OWN_CONTENT = {"dnsmasq.leases", "dnsmasq.pid", "pincusd.lock", "pincusd.stderr", "init.json"}


def _files(root: Path) -> dict[str, str]:
    """The daemon's files but its database and logs, by path, with their content."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = f"-> {os.readlink(path)}"  # never followed: an image's links point into it
            continue
        if rel.startswith("storage-pools/"):
            # An instance volume: an image's files, whose owners a shift changes.
            st = path.lstat()
            out[rel] = f"<{st.st_uid}:{st.st_gid} {st.st_mode:o} {st.st_size}>"
            continue
        if path.is_dir() or rel.startswith(("pincus.db", "logs")):
            continue
        if rel.startswith("disks/"):  # a pool's loop file: its file system is snapshotted as files
            out[rel] = "<present>"
            continue
        # OVSDB files are logs of transactions: they grow with every change, undone or not; an OVN
        # daemon started again has another pid, in its pid file and in ovn-controller's socket.
        ovn_own = rel.startswith("ovn/") and path.suffix in (".db", ".pid")
        rel = re.sub(r"ovn-controller\.\d+\.ctl$", "ovn-controller.PID.ctl", rel)
        if path.name.endswith(".log") or path.name in _OWN_CONTENT or ovn_own or not path.is_file():
            out[rel] = "<present>"  # logs grow, a netns handle is a mount: that they exist is what counts
            continue
        try:
            out[rel] = path.read_bytes().decode(errors="replace")
        except OSError as e:
            out[rel] = f"<{e.strerror}>"
    return out


def _storage(root: Path) -> dict[str, list[str]]:
    """What storage pools own beyond files: directories (a volume may be an empty one), the mounts
    under ROOT in this mount namespace, and the loop devices over files under it."""
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(f"{root}/")
    ]
    loops = []
    for entry in sorted(Path("/sys/block").glob("loop*")):
        try:
            backing = (entry / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(f"{root}/"):
            loops.append(backing)
    dirs = [
        str(p.relative_to(root))
        for top in ("storage-pools", "disks")
        for p in sorted((root / top).rglob("*"))
        if p.is_dir() or p.is_symlink()
    ]
    return {"mounts": sorted(mounts), "loops": loops, "dirs": dirs}


def _sysctls() -> dict[str, str]:
    """The forwarding and per-interface IPv6 sysctls pincus sets and gives back."""
    paths = [Path("/proc/sys/net/ipv4/ip_forward")]
    for conf in sorted(Path("/proc/sys/net/ipv6/conf").iterdir()):
        paths += [conf / key for key in ("forwarding", "accept_ra", "autoconf", "accept_dad")]
    out = {}
    for path in paths:
        try:
            out[str(path)] = path.read_text().strip()
        except OSError:
            continue  # the interface left while we looked
    return out


def _generated_names(tag: str) -> list[str]:
    """The host interfaces pincus names at random (veth, TAP and IFB of a NIC), in creation order."""
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout)
    prefixes = tuple(f"{kind}{tag}" for kind in ("veth", "tap", "pif"))
    mine = [link for link in links if str(link.get("ifname", "")).startswith(prefixes)]
    return [str(link["ifname"]) for link in sorted(mine, key=lambda link: int(link["ifindex"]))]


_VOLATILE_MAC = re.compile(r"'volatile\.([^.']+)\.hwaddr','([0-9a-f:]{17})'")
_RUNTIME_ROW = re.compile(r'(INSERT INTO "instances_runtime" VALUES\(\d+),\d+,\d+\)')


def _canonical(snap: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A NIC stopped and started again is the same NIC under another random name and kernel MAC,
    and an instance started again has another pid: name them by creation order instead."""
    # OVS and OVN daemons started again make their interfaces again (provider and integration
    # bridges, the datapath's tap, the uplink's veth) with new MACs, in an order of their own.
    remade = ("pov", "pint", "ovs-netdev")
    for key in ("link", "addr"):
        snap[key] = sorted(
            (
                {k: v for k, v in link.items() if k != "address"}
                if link.get("ifname") in names or str(link.get("ifname", "")).startswith(remade)
                else link
                for link in snap[key]
            ),
            key=lambda link: (
                str(link.get("ifname", "")) if str(link.get("ifname", "")).startswith(remade) else ""
            ),
        )
    snap["db"] = [_RUNTIME_ROW.sub(r"\1,PID,START)", line) for line in snap["db"]]
    # A NIC added anew gets a MAC of its own each time: named by its device instead.
    macs = [m.groups() for line in snap["db"] if (m := _VOLATILE_MAC.search(line))]
    text = json.dumps(snap)
    for device, mac in macs:
        text = text.replace(mac, f"<mac of {device}>")
    for i, name in enumerate(names):
        text = text.replace(name, f"<{name[:3]}#{i}>")
    return dict(json.loads(text))


_ISO_TIME = re.compile(r"'\d{4}-\d\d-\d\dT[0-9:.]+\+00:00'")


def snapshot(state: State) -> dict[str, Any]:
    """What pincus may touch on this host: the kernel's view, its processes and files, its database."""
    with state.store.tx() as c:
        # A recreated instance or volume (the undo of a delete) has a new creation time, as a
        # recreated link has a new ifindex: the time is not what is compared.
        db = [_ISO_TIME.sub("'<time>'", line) for line in c.iterdump() if "operations" not in line]
    return {**snapshot_of(state.dir, state.tag, db), "container-mounts": _container_mounts(state)}


def _container_mounts(state: State) -> dict[str, list[str]]:
    """The mount points inside each running instance (a hot-plugged disk is one)."""
    out = {}
    for name in db_instances.names(state.store):
        rt = db_instances.get_runtime(state.store, name)
        try:
            text = Path(f"/proc/{rt.pid}/mountinfo").read_text() if rt else ""
        except OSError:
            continue
        out[name] = sorted(line.split()[4] for line in text.splitlines())
    return out


def snapshot_of(root: Path, tag: str, db: list[str]) -> dict[str, Any]:
    """The same for the daemon of tag TAG on ROOT, whose database dump is DB."""
    return _canonical({**_raw_snapshot(root, db), "cgroups": _cgroups(tag)}, _generated_names(tag))


# The limit files of a group, in either layout: whatever of these exists is compared.
_CGROUP_FILES = (
    "cpuset.cpus", "cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.weight", "cpu.max",
    "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max", "memory.swap.max", "pids.max",
)  # fmt: skip


def _cgroups(tag: str) -> dict[str, dict[str, str]]:
    """The daemon's groups (under this process's own group in each hierarchy, as the daemon's) and
    their limit files, as the kernel has them."""
    out: dict[str, dict[str, str]] = {}
    if cgroupfiles.is_v2():
        tops = {cgroupfiles.ROOT: cgroupfiles.groups(os.getpid())[""]}
    else:
        own = cgroupfiles.groups(os.getpid())
        dirs = {c: c for c in ("cpu", "cpuacct", "cpuset", "memory", "pids")} | {"name=systemd": "systemd"}
        tops = {cgroupfiles.ROOT / d: own[c] for c, d in dirs.items() if c in own}
    for top, own_group in tops.items():
        parent = top / own_group.lstrip("/") / f"pincus-{tag}"
        if not parent.is_dir():
            continue
        out[str(parent)] = {}
        for group in sorted(parent.iterdir()):
            if group.is_dir():
                files = {f: (group / f).read_text().strip() for f in _CGROUP_FILES if (group / f).exists()}
                out[f"{parent}/{group.name}"] = files
    return out


def _raw_snapshot(root: Path, db: list[str]) -> dict[str, Any]:
    return {
        "link": _json_of("ip", "-d", "-j", "link", "show"),
        "addr": _json_of("ip", "-j", "addr", "show"),
        "route4": _json_of("ip", "-4", "-j", "route", "show", "table", "all"),
        "route6": _json_of("ip", "-6", "-j", "route", "show", "table", "all"),
        "bridge-link": _json_of("bridge", "-j", "link", "show"),
        "bridge-vlan": _json_of("bridge", "-j", "vlan", "show"),
        "qdisc": _json_of("tc", "-j", "qdisc", "show"),
        "nft": _json_of("nft", "-j", "list", "ruleset"),
        "sysctl": _sysctls(),
        "processes": _processes(str(root)),
        "files": _files(root),
        "storage": _storage(root),
        "db": db,
        "ovn": _ovn_view(root),
    }


def _ovn_view(root: Path) -> dict[str, list[str]]:
    """The rows and bridges of the daemon's embedded OVN central and chassis, by name."""
    out: dict[str, list[str]] = {}
    nb, switch = root / "ovn" / "central" / "nb.sock", root / "ovn" / "chassis" / "db.sock"
    if nb.exists():
        for table in ("Logical_Switch", "Logical_Switch_Port", "Logical_Router", "Logical_Router_Port"):
            argv = ["ovn-nbctl", f"--db=unix:{nb}", "--bare", "--columns=name", "list", table]
            out[table] = sorted(subprocess.run(argv, capture_output=True, text=True).stdout.split())
        for table in ("NAT", "DHCP_Options", "Logical_Router_Static_Route", "Gateway_Chassis"):
            argv = ["ovn-nbctl", f"--db=unix:{nb}", "--bare", "--columns=_uuid", "list", table]
            out[table] = [str(len(subprocess.run(argv, capture_output=True, text=True).stdout.split()))]
    if switch.exists():
        argv = ["ovs-vsctl", f"--db=unix:{switch}", "--bare", "--columns=name", "list", "Port"]
        ports = subprocess.run(argv, capture_output=True, text=True).stdout.split()
        # Patch ports are ovn-controller's, made from the northbound rows (compared above) when it
        # gets to them, which may be after a snapshot.
        out["ovs-ports"] = sorted(p for p in ports if not p.startswith("patch-"))
    return out


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per part that changed, with the lines that differ."""
    out = []
    for key in before:
        if before[key] == after[key]:
            continue
        old = json.dumps(before[key], indent=1, sort_keys=True).splitlines()
        new = json.dumps(after[key], indent=1, sort_keys=True).splitlines()
        changed = [line for line in difflib.unified_diff(old, new, lineterm="", n=1)][2:]
        out.append(f"{key}: " + " | ".join(line.strip() for line in changed)[:1200])
    return out


@dataclass
class Scenario:
    setup: Callable[[Server], None]
    do: Callable[[Server], None]
    undo: Callable[[Server], None]
    # "atomic": a failed DO leaves everything as before. "retry": a teardown goes on past a failed
    # step, so a failed DO tried again must end exactly where a clean DO ends.
    mode: str = "atomic"


NET = "fnet0"
NET_CONFIG = {
    "ipv4.address": "10.250.90.1/24",
    "ipv6.address": "fd42:250:90::1/64",
    "ipv4.nat": "true",
    "ipv4.dhcp.ranges": "10.250.90.50-10.250.90.60",
}
NIC = {
    "type": "nic",
    "network": NET,
    "name": "eth0",
    "ipv4.address": "10.250.90.7",
    "security.ipv4_filtering": "true",
    "security.mac_filtering": "true",
    "limits.ingress": "10Mbit",
}


def _make_network(server: Server) -> None:
    server.networks.create({"name": NET, "config": dict(NET_CONFIG)})


# Limits in every container scenario, so its cgroup is made, filled, changed and removed in each.
LIMITS = {"limits.cpu": "1", "limits.memory": "64MiB", "limits.processes": "100"}
LIMITS_CHANGED = {"limits.cpu": "0-1", "limits.memory": "96MiB", "limits.cpu.allowance": "20ms/100ms"}


BUSYBOX_FP = ""  # set by _make_busybox_and_pool


def _make_busybox_and_pool(server: Server) -> None:
    """The real test image (its busybox init runs), imported through the store's own receive/add,
    and a btrfs pool for the containers' roots."""
    global BUSYBOX_FP
    with imagelib.busybox_image().open("rb") as body:
        upload = server.images.receive(body, "application/octet-stream")
    BUSYBOX_FP = str(server.images.add(upload, {})["fingerprint"])
    _make_pool(server)


def _make_container(server: Server, devices: dict[str, dict[str, str]]) -> None:
    """C1 with its root from the busybox image on the pool, a NIC and limits (so its cgroup, its
    idmapped root and its network are made and undone in every container scenario)."""
    _make_network(server)
    _make_busybox_and_pool(server)
    server.instances.create(
        {"name": "c1", "type": "container", "config": dict(LIMITS), "devices": {**ROOT_ON_POOL, **devices},
         "source": {"type": "image", "fingerprint": BUSYBOX_FP}, "profiles": []}
    )  # fmt: skip


def _set_devices(devices: dict[str, dict[str, str]]) -> Callable[[Server], None]:
    """The instance's devices: DEVICES beside its root disk, which cannot change while it runs."""
    return lambda server: server.instances.update("c1", {"devices": {**ROOT_ON_POOL, **devices}}, patch=False)


def _set_limits(config: dict[str, str]) -> Callable[[Server], None]:
    """A PUT of CONFIG with the devices the instance has (its root disk and NIC): only the limits
    change, so every try makes the calls the recorded run made (a PUT without devices removes them)."""
    devices = {**ROOT_ON_POOL, "eth0": NIC}
    return lambda server: server.instances.update(
        "c1", {"config": dict(config), "devices": devices}, patch=False
    )


def _disk() -> dict[str, str]:
    """A read-only bind disk of a directory under the daemon's own dir."""
    source = Path(os.environ["PINCUS_DIR"]) / "disk-source"
    source.mkdir(exist_ok=True)
    (source / "from-host").write_text("host data\n")
    return {"type": "disk", "source": str(source), "path": "/mnt/hot/data", "readonly": "true"}


def _hot_plug_setup(server: Server) -> None:
    _make_container(server, {})
    server.instances.start("c1")


def _running_with(devices: dict[str, dict[str, str]]) -> Callable[[Server], None]:
    def setup(server: Server) -> None:
        _make_container(server, devices)
        server.instances.start("c1")

    return setup


# A live update that touches every kind of host object a NIC has: tc, nft, routes, DHCP, isolation.
NIC_CHANGED = {
    **NIC,
    "limits.ingress": "20Mbit",
    "limits.egress": "5Mbit",
    "ipv4.address": "10.250.90.8",
    "ipv4.routes": "10.250.91.0/24",
    "security.port_isolation": "true",
}


UPLINK = "fup0"
OVN_NET = "fovn0"
OVN_NIC = {"type": "nic", "network": OVN_NET, "name": "eth0", "ipv4.address": "10.250.92.7"}


def _make_uplink(server: Server) -> None:
    bridge = f"fb{daemon_tag(server.state.dir)}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    # No link-local address: its DAD finishing mid-scenario would read as a change.
    subprocess.run(["ip", "link", "set", bridge, "addrgenmode", "none"], check=True)
    # A MAC of its own, as an admin's bridge has: else the kernel gives it its lowest port's.
    subprocess.run(["ip", "link", "set", bridge, "address", "02:00:00:fa:00:01"], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    config = {
        "parent": bridge,
        "ipv4.gateway": "10.250.91.1/24",
        "ipv4.ovn.ranges": "10.250.91.100-10.250.91.110",
    }
    server.networks.create({"name": UPLINK, "type": "physical", "config": config})


def _make_ovn_network(server: Server) -> None:
    config = {"network": UPLINK, "ipv4.address": "10.250.92.1/24", "ipv4.nat": "true"}
    server.networks.create({"name": OVN_NET, "type": "ovn", "config": config})


def _uplink_and_ovn_network(server: Server) -> None:
    _make_uplink(server)
    _make_ovn_network(server)


def _ovn_container(server: Server) -> None:
    _uplink_and_ovn_network(server)
    _make_busybox_and_pool(server)
    server.instances.create(
        {"name": "c1", "type": "container", "config": {}, "devices": {**ROOT_ON_POOL, "eth0": OVN_NIC},
         "source": {"type": "image", "fingerprint": BUSYBOX_FP}, "profiles": []}
    )  # fmt: skip


POOL = "fpool"
IMAGE_FP = ""  # set by _make_image_and_pool
ROOT_ON_POOL = {"root": {"type": "disk", "path": "/", "pool": POOL}}


def _make_pool(server: Server) -> None:
    server.storage.create({"name": POOL, "driver": "btrfs", "config": {"size": "150MiB"}})


def _make_image_and_pool(server: Server) -> None:
    """The image imported into the store (through its own receive/add), and a btrfs pool."""
    global IMAGE_FP
    with tempfile.TemporaryDirectory() as tmp:
        out = imagelib.tarball(Path(tmp) / "tiny.tar.gz", [imagelib.member("rootfs/marker", data=b"image\n")])
        upload = server.images.receive(io.BytesIO(out.read_bytes()), "application/octet-stream")
    IMAGE_FP = str(server.images.add(upload, {})["fingerprint"])
    _make_pool(server)


def _create_from_image(server: Server) -> None:
    server.instances.create(
        {"name": "c1", "source": {"type": "image", "fingerprint": IMAGE_FP}, "devices": ROOT_ON_POOL,
         "profiles": []}
    )  # fmt: skip


def _delete_with_image(server: Server) -> None:
    """Undo of a create from an image: the image's volume too, so the next try unpacks again."""
    server.instances.delete("c1")
    server.storage.delete_image_volumes(IMAGE_FP)


def _image_back(server: Server) -> None:
    """Undo of an image delete: the same image imported again, and its volume on the pool as the
    instance's create left it."""
    global IMAGE_FP
    with tempfile.TemporaryDirectory() as tmp:
        out = imagelib.tarball(Path(tmp) / "tiny.tar.gz", [imagelib.member("rootfs/marker", data=b"image\n")])
        upload = server.images.receive(io.BytesIO(out.read_bytes()), "application/octet-stream")
    IMAGE_FP = str(server.images.add(upload, {})["fingerprint"])
    with Reverter() as undo:
        fill = functools.partial(server.images.unpack, IMAGE_FP, skip_devices=True)
        server.storage.ensure_image_volume(POOL, IMAGE_FP, lambda target: fill(target), undo)
        undo.success()


def _image_instance_setup(server: Server) -> None:
    _make_image_and_pool(server)
    _create_from_image(server)


SCENARIOS = {
    "pool-create": Scenario(
        setup=lambda server: None,
        do=_make_pool,
        undo=lambda server: server.storage.delete(POOL),
    ),
    "instance-create-image": Scenario(
        setup=_make_image_and_pool,
        do=_create_from_image,
        undo=_delete_with_image,
    ),
    "image-delete": Scenario(
        setup=_image_instance_setup,
        do=lambda server: server.images.delete(IMAGE_FP),
        undo=_image_back,
        mode="retry",
    ),
    "instance-rename": Scenario(
        setup=_image_instance_setup,
        do=lambda server: server.instances.rename("c1", "c2"),
        undo=lambda server: server.instances.rename("c2", "c1"),
    ),
    "instance-delete": Scenario(
        setup=_image_instance_setup,
        do=lambda server: server.instances.delete("c1"),
        undo=_create_from_image,
    ),
    "ovn-network-create": Scenario(
        setup=_make_uplink,
        do=_make_ovn_network,
        undo=lambda server: server.networks.delete(OVN_NET),
    ),
    "ovn-network-delete": Scenario(
        setup=_uplink_and_ovn_network,
        do=lambda server: server.networks.delete(OVN_NET),
        undo=_make_ovn_network,
        mode="retry",
    ),
    "ovn-instance-start": Scenario(
        setup=_ovn_container,
        do=lambda server: server.instances.start("c1"),
        undo=lambda server: server.instances.stop("c1", timeout=5, force=True),
    ),
    "network-create": Scenario(
        setup=lambda server: None,
        do=_make_network,
        undo=lambda server: server.networks.delete(NET),
    ),
    "instance-start": Scenario(
        setup=lambda server: _make_container(server, {"eth0": NIC}),
        do=lambda server: server.instances.start("c1"),
        undo=lambda server: server.instances.stop("c1", timeout=5, force=True),
    ),
    "hot-plug": Scenario(
        setup=_hot_plug_setup,
        do=_set_devices({"eth0": NIC}),
        undo=_set_devices({}),
    ),
    "unplug": Scenario(
        setup=_running_with({"eth0": NIC}),
        do=_set_devices({}),
        undo=_set_devices({"eth0": NIC}),
    ),
    "disk-hot-plug": Scenario(
        setup=_hot_plug_setup,
        do=lambda server: _set_devices({"data": _disk()})(server),
        undo=_set_devices({}),
    ),
    "disk-unplug": Scenario(
        setup=lambda server: _running_with({"data": _disk()})(server),
        do=_set_devices({}),
        undo=lambda server: _set_devices({"data": _disk()})(server),
    ),
    "live-update": Scenario(
        setup=_running_with({"eth0": NIC}),
        do=_set_devices({"eth0": NIC_CHANGED}),
        undo=_set_devices({"eth0": NIC}),
    ),
    "live-limits": Scenario(
        setup=_running_with({"eth0": NIC}),
        do=_set_limits(LIMITS_CHANGED),
        undo=_set_limits(LIMITS),
    ),
    "instance-stop": Scenario(
        setup=_running_with({"eth0": NIC}),
        do=lambda server: server.instances.stop("c1", timeout=5, force=True),
        undo=lambda server: server.instances.start("c1"),
        mode="retry",
    ),
    "network-delete": Scenario(
        setup=_make_network,
        do=lambda server: server.networks.delete(NET),
        undo=_make_network,
        mode="retry",
    ),
}


def _failure(kind: str, n: int, name: str) -> Exception:
    """What the Nth call raises: the host layer's own error, or a raw OS error escaping it."""
    if kind == "oserror":
        return OSError(errno.EBUSY, f"injected EBUSY at host call {n} ({name})")
    return HostError(f"injected failure of host call {n} ({name})")


def run(
    scenario: Scenario, state: State, server: Server, limit: int, trials: int = 0, seed: int = 0
) -> dict[str, Any]:
    """Fail each of the first LIMIT calls in turn; with TRIALS, that many calls picked at random
    (SEED), with a random kind of failure."""
    scenario.setup(server)
    names: list[str] = []

    def record(name: str, call: Callable[[], Any]) -> Any:
        names.append(name)
        return call()

    with state.host.hooked(record):
        scenario.do(server)
    done = snapshot(state)
    scenario.undo(server)
    problems: list[str] = []
    tolerated: list[str] = []
    rng = random.Random(seed)
    if trials:
        plan = [(rng.randint(1, len(names)), rng.choice(["host", "oserror"])) for _ in range(trials)]
    else:
        plan = [(n, "host") for n in range(1, min(len(names), limit) + 1)]
    for n, kind in plan:
        before = snapshot(state)
        count = 0
        failed_at = ""

        def fail_nth(name: str, call: Callable[[], Any], n: int = n, kind: str = kind) -> Any:
            nonlocal count, failed_at
            count += 1
            if count == n:
                failed_at = name
                raise _failure(kind, n, name)
            return call()

        try:
            with state.host.hooked(fail_nth):
                scenario.do(server)
        except Exception as e:  # the injected failure, or what it became on its way up
            if not failed_at:
                problems.append(f"call {n}: failed without reaching its injected failure: {e!r}")
            if scenario.mode == "retry":
                try:
                    scenario.do(server)
                except Exception as again:
                    problems.append(f"call {n} ({failed_at}): trying again failed too: {again!r}")
                    break  # what follows would start from a broken state
                problems += [f"call {n} ({failed_at}), tried again: {d}" for d in diff(done, snapshot(state))]
                scenario.undo(server)
        else:
            failed_at = failed_at or "not reached: this run made fewer calls"
            tolerated.append(f"{n}:{failed_at}")
            try:
                scenario.undo(server)
            except Exception as e:
                problems.append(f"call {n} ({failed_at}) was tolerated, but the undo failed: {e!r}")
        problems += [f"call {n} ({failed_at}): {d}" for d in diff(before, snapshot(state))]
        if len(problems) > 40:
            break
    return {"calls": names, "tried": len(plan), "tolerated": tolerated, "problems": problems}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--limit", type=int, default=10_000, help="fail at most the first LIMIT calls")
    ap.add_argument("--random", type=int, default=0, metavar="N", help="N failures at random calls instead")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    path = Path(os.environ["PINCUS_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o711)  # as pincusd makes it: dnsmasq, as nobody, reads its hosts files below
    state = State(
        dir=path,
        store=Store(path / "pincus.db"),
        events=EventHub(),
        features=probe_kernel_features(),
        tag=daemon_tag(path),
    )
    server = Server(state)
    server.start()
    try:
        report = run(SCENARIOS[args.scenario], state, server, args.limit, args.random, args.seed)
    finally:
        server.shutdown_instances(timeout=5)
        server.stop()
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
