"""How profiles expand into an instance, as Incus does: each profile in order, then the
instance's own; config key by key, devices whole (a later device of the same name replaces)."""

from __future__ import annotations

from collections.abc import Iterable

Devices = dict[str, dict[str, str]]


def expand(
    layers: Iterable[tuple[dict[str, str], Devices]], config: dict[str, str], devices: Devices
) -> tuple[dict[str, str], Devices]:
    """(config, devices) once every (config, devices) layer and then the instance's own are applied."""
    out_config: dict[str, str] = {}
    out_devices: Devices = {}
    for layer_config, layer_devices in [*layers, (config, devices)]:
        out_config.update(layer_config)
        out_devices.update({name: dict(dev) for name, dev in layer_devices.items()})
    return out_config, dict(sorted(out_devices.items()))
