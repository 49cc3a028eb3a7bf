"""nictype=physical on a real NIC: moved into a container (and given back), or passed through to a VM.

A bridge is never a physical NIC: pincus refuses to move a host bridge into an instance. The bridge
case is reachable only through a managed physical network, which runs it as a bridged NIC.
"""

from __future__ import annotations

from typing import ClassVar

from pincus.config.device_keys import NIC_BRIDGED, NIC_PHYSICAL
from pincus.config.keys import CONTAINER, KeyTable, check_config
from pincus.config.validators import parse_bool
from pincus.db import instances as db_instances
from pincus.devices import names
from pincus.devices.base import Device, NicRun, RunConfig
from pincus.errors import ConflictError, HostError, InvalidError, NotFoundError, UnsupportedError
from pincus.host import addresses, links, pci, sysfs
from pincus.ownership import Difference, Owned
from pincus.reverter import Reverter

# What is saved before anything changes, so stop, unplug and crash recovery can put it back.
LAST_STATE = (
    "name", "mtu", "hwaddr", "up", "ifindex", "created", "vlan_parent", "parent_up", "pci.slot", "pci.driver",
)  # fmt: skip


class PhysicalNic(Device):
    keys: ClassVar[KeyTable] = NIC_PHYSICAL

    @property
    def parent(self) -> str:
        return self.config.get("parent", "")

    @property
    def vlan(self) -> int | None:
        return int(self.config["vlan"]) if "vlan" in self.config else None

    def host_link(self) -> str:
        """The host interface that goes into the instance: the parent, or its VLAN sub-interface."""
        if self.vlan is None:
            return self.parent
        name = f"{self.parent}.{self.vlan}"
        return name if len(name.encode()) <= 15 else names.host_link_name("pvl", self.state.tag)

    def last(self, key: str) -> str | None:
        return self.instance.volatile(self.vkey(f"last_state.{key}"))

    # --- validation ------------------------------------------------------------------------------

    def validate_config(self) -> None:
        what = self.what
        for key in self.config:
            if key in NIC_BRIDGED and key not in NIC_PHYSICAL and not key.startswith("user."):
                raise InvalidError(
                    f'Device "{self.name}": key "{key}" needs a bridged NIC; parent "{self.parent}" is a '
                    "plain NIC, which is moved into the instance as it is"
                )
        check_config(self.keys, self.config, what, self.instance.type)
        if not self.parent:
            raise InvalidError(f'Device "{self.name}": nictype=physical needs a "parent" interface')
        if self.host(sysfs.interface_exists, self.parent) and self.host(sysfs.is_bridge, self.parent):
            raise InvalidError(f'Parent device "{self.parent}" is a bridge, use nictype=bridged instead')

    def missing_parent_error(self, what: str) -> Exception:
        """Why the parent is not on the host: another instance holds it, or it is gone."""
        holders = db_instances.volatile_holders(self.state.store, ".last_state.name", self.parent)
        others = [i for i, _ in holders if i != self.instance.name]
        if others:
            return ConflictError(f'Interface "{self.parent}" is in use by instance "{others[0]}"')
        return NotFoundError(f'Device "{self.name}": parent "{self.parent}" of {what} does not exist')

    def validate_environment(self) -> None:
        parent = self.parent
        if not self.host(sysfs.interface_exists, parent):
            raise self.missing_parent_error("the device")
        if self.host(sysfs.is_bridge, parent):
            raise InvalidError(f'Parent device "{parent}" is a bridge, use nictype=bridged instead')
        master = self.host(sysfs.bridge_master, parent)
        if master is not None:
            raise ConflictError(f'Interface "{parent}" is in use by the host (member of "{master}")')
        if self.host(sysfs.is_bond_member, parent):
            raise ConflictError(f'Interface "{parent}" is in use by the host (member of a bond)')
        if self.vlan is None:
            addrs = self.host(addresses.global_addresses, parent)
            if addrs:
                raise ConflictError(
                    f'Interface "{parent}" is in use by the host (it has addresses {", ".join(addrs)})'
                )
        elif not self.state.features.get("vlan_8021q", False):
            raise UnsupportedError(
                f'Device "{self.name}": 802.1Q VLAN interfaces are not supported by this kernel '
                '(needed for "vlan")'
            )

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> RunConfig:
        if self.instance.type != CONTAINER:
            return self._start_passthrough()
        with Reverter() as undo:
            link_name, created, vlan_state = self.parent, False, {}
            if self.vlan is not None:
                link_name = self.host_link()
                vlan_state = self._parent_up_for_vlan(undo)
                self.host(
                    links.create_vlan,
                    link_name,
                    self.parent,
                    self.vlan,
                    parse_bool(self.config.get("gvrp", "false")),
                )
                undo.add(self.host, links.delete_link, link_name)
                created = True
            info = self.host(links.get_link, link_name)
            if info is None:
                raise NotFoundError(f'Interface "{link_name}" vanished before it could be moved')
            inside = self.inside_name or self._free_inside_name()
            # Saved before anything changes: what stop, unplug and crash recovery restore.
            self.instance.set_volatile(
                {
                    **({} if "name" in self.config else {self.vkey("name"): inside}),
                    self.vkey("last_state.name"): link_name,
                    self.vkey("last_state.mtu"): str(info.mtu),
                    self.vkey("last_state.hwaddr"): info.mac,
                    self.vkey("last_state.up"): "true" if info.up else "false",
                    self.vkey("last_state.ifindex"): str(info.index),
                    self.vkey("last_state.created"): "true" if created else "false",
                    **vlan_state,
                }
            )
            undo.add(self._forget_last_state)
            undo.success()
        nic = NicRun(
            device=self.name,
            hwaddr=self.config.get("hwaddr", ""),
            name=inside,
            move_link=link_name,
            mtu=int(self.config["mtu"]) if "mtu" in self.config else None,
        )
        return RunConfig(nics=[nic])

    def _start_passthrough(self) -> RunConfig:
        dev = self.host(pci.nic_device, self.parent)
        if isinstance(dev, pci.PciDevice):
            self.instance.set_volatile(
                {
                    self.vkey("last_state.name"): self.parent,
                    self.vkey("last_state.pci.slot"): dev.slot,
                    self.vkey("last_state.pci.driver"): dev.driver or "",
                }
            )
            try:
                self.host(pci.bind_vfio, dev)
            except Exception:
                self._forget_last_state()
                raise
        else:
            self.instance.set_volatile({self.vkey("last_state.name"): self.parent})
        args = self.host(pci.qemu_args, dev, f"dev-{self.name}")
        if isinstance(dev, pci.UsbDevice):
            args = self.host(pci.usb_controller_args) + args
        nic = NicRun(device=self.name, hwaddr="", qemu_args=args, passthrough=True)
        return RunConfig(nics=[nic])

    def _parent_up_for_vlan(self, undo: Reverter) -> dict[str, str]:
        """A VLAN interface only comes up on a parent that is up (as Incus, bring it up).

        Returns the volatile keys that let the last VLAN user of this parent put it back down:
        every user remembers that it was down, so whichever stops last knows.
        """
        parent = self.host(links.get_link, self.parent)
        if parent is None:
            raise self.missing_parent_error("the device")
        was_down = not parent.up or any(self._remembers_parent_down(h) for h in self._other_vlan_users())
        if not parent.up:
            self.host(links.set_up, self.parent)
            undo.add(self.host, links.set_down, self.parent)
        state = {self.vkey("last_state.vlan_parent"): self.parent}
        if was_down:
            state[self.vkey("last_state.parent_up")] = "false"
        return state

    def _other_vlan_users(self) -> list[tuple[str, str]]:
        """(instance, volatile key) of every other NIC with a VLAN interface on this parent."""
        mine = (self.instance.name, self.vkey("last_state.vlan_parent"))
        holders = db_instances.volatile_holders(self.state.store, ".last_state.vlan_parent", self.parent)
        return [h for h in holders if h != mine]

    def _remembers_parent_down(self, holder: tuple[str, str]) -> bool:
        instance, key = holder
        flag = (instance, key.removesuffix("vlan_parent") + "parent_up")
        return flag in db_instances.volatile_holders(self.state.store, ".last_state.parent_up", "false")

    def _parent_down_if_last(self) -> None:
        last_user = self.last("parent_up") == "false" and not self._other_vlan_users()
        if last_user and self.host(links.get_link, self.parent) is not None:
            self.host(links.set_down, self.parent)

    def stop(self) -> RunConfig:
        return RunConfig(
            nics=[NicRun(device=self.name, hwaddr="", passthrough=self.instance.type != CONTAINER)]
        )

    def owned(self) -> list[Owned]:
        moved = self.last("name")
        if moved is None:
            return []
        if self.instance.type != CONTAINER:
            return [Owned("pci device" if self.last("pci.slot") else "interface", moved)]
        return [Owned("interface", f"{moved} (inside the instance as {self.config.get('name', '')})")]

    def check(self) -> list[Difference]:
        """A NIC moved into a container must be inside its netns; it cannot be put back from here."""
        moved, netns = self.last("name"), self.instance.netns
        if moved is None or self.instance.type != CONTAINER or netns is None:
            return []
        inside = self.config.get("name", "")
        if self.host(links.get_link, inside, netns=str(netns)) is not None:
            return []
        return [
            Difference(
                self.owner, "interface", inside, f"inside the instance (host NIC {moved})", "missing", False
            )
        ]

    def post_stop(self) -> None:
        if self.last("name") is None:
            return
        if self.instance.type == CONTAINER:
            self._give_back()
        else:
            self._restore_driver()
        self._forget_last_state()

    def _give_back(self) -> None:
        """Move the interface home under its old name with its old MTU, MAC and up state."""
        original = self.last("name") or self.parent
        inside = self.inside_name
        netns = self.instance.netns
        here = None
        if netns is not None and self.host(links.get_link, inside, netns=str(netns)) is not None:
            self.host(links.set_down, inside, netns=str(netns))
            self.host(links.move_link_to_netns, inside, None, new_name=original, from_netns=str(netns))
            here = original
        else:
            here = self._find_on_host(original)
        if self.last("created") == "true":
            if here is not None:  # a VLAN interface in a netns that died went with it
                self.host(links.delete_link, here)
            self._parent_down_if_last()
            return
        if here is None:
            raise HostError(
                f'Interface "{original}" of device "{self.name}" is neither in the instance nor on the host'
            )
        if here != original:
            self.host(links.rename_link, here, original)
        if self.last("mtu"):
            self.host(links.set_mtu, original, int(self.last("mtu") or 0))
        if (
            self.last("hwaddr")
            and self.last("hwaddr") != (self.host(links.get_link, original) or self._nolink()).mac
        ):
            self.host(links.set_mac, original, self.last("hwaddr") or "")
        if self.last("up") == "true":
            self.host(links.set_up, original)

    def _nolink(self) -> links.LinkInfo:
        raise HostError(f'Interface of device "{self.name}" disappeared while being restored')

    def _find_on_host(self, original: str) -> str | None:
        """After a crash the kernel returns a NIC to the host, possibly under its inside name."""
        candidates = [self.inside_name, original]
        for name in candidates:
            if name and self.host(links.get_link, name) is not None:
                return name
        want = {self.config.get("hwaddr"), self.last("hwaddr")} - {None, ""}
        for link in self.host(links.list_links):
            if link.mac in want:
                return link.name
        return None

    def _restore_driver(self) -> None:
        slot, driver = self.last("pci.slot"), self.last("pci.driver")
        if slot:
            self.host(pci.restore_driver, pci.PciDevice(slot=slot, driver=driver or None, iommu_group=None))

    def _forget_last_state(self) -> None:
        forget: dict[str, str | None] = {self.vkey(f"last_state.{k}"): None for k in LAST_STATE}
        self.instance.set_volatile({**forget, self.vkey("name"): None})

    @property
    def inside_name(self) -> str:
        """Its name in the container: "name", else the ethN it was given at start (volatile)."""
        return self.config.get("name") or self.instance.volatile(self.vkey("name")) or ""

    def _free_inside_name(self) -> str:
        """As Incus: without "name", the first ethN no other NIC of the instance takes."""
        taken = self.instance.names_inside(self.name)
        return next(f"eth{n}" for n in range(len(taken) + 1) if f"eth{n}" not in taken)

    def remove(self) -> None:
        self._forget_last_state()

    def describe(self) -> str:
        original = self.last("name") or self.parent
        if self.instance.type != CONTAINER:
            return f"physical: {self.parent} passed through to the VM"
        mtu = self.last("mtu")
        return f"physical: {original} moved in" + (f", restores to {original} mtu {mtu}" if mtu else "")
