"""The guest kernel has what the host kernel lacks: otherwise nothing here would test anything."""

from __future__ import annotations

from pincus.host.features import probe_kernel_features


def test_the_guest_kernel_has_the_features_the_host_lacks() -> None:
    features = probe_kernel_features()
    for name in ("bridge_vlan_filtering", "vlan_8021q", "tc_police", "dummy", "nftables_bridge"):
        assert features[name], name
