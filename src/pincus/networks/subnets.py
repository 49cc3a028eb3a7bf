"""Free subnets for `ipv4.address=auto` / `ipv6.address=auto`: a random /24 or /64 from a pool
(overridable by environment) that overlaps nothing the host or another network already uses."""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Sequence

from pincus.errors import ConflictError, InvalidError

IPV4_POOL_ENV = "PINCUS_AUTO_IPV4_POOL"
IPV6_POOL_ENV = "PINCUS_AUTO_IPV6_POOL"
DEFAULT_IPV4_POOL = "10.0.0.0/8"
DEFAULT_IPV6_POOL = "fd42::/16"
AUTO_PREFIX = {4: 24, 6: 64}

# Pools of up to this many subnets are searched exhaustively (in random order); bigger ones
# by random draws, which in a sparsely used pool find a free subnet at the first try.
_SCAN_MAX = 4096
_RANDOM_TRIES = 1000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _pool(version: int) -> tuple[Network, str]:
    env, default = (IPV4_POOL_ENV, DEFAULT_IPV4_POOL) if version == 4 else (IPV6_POOL_ENV, DEFAULT_IPV6_POOL)
    text = os.environ.get(env) or default
    try:
        pool = ipaddress.ip_network(text)
    except ValueError as e:
        raise InvalidError(f'Invalid {env} "{text}": {e}') from None
    if pool.version != version or pool.prefixlen > AUTO_PREFIX[version]:
        raise InvalidError(
            f'Invalid {env} "{text}": expected an IPv{version} network of /{AUTO_PREFIX[version]} or larger'
        )
    return pool, env


def pick_subnet(pool: Network, prefix: int, used: Sequence[Network], rng: random.Random) -> Network | None:
    """A random /prefix inside pool that overlaps none of used, or None if there is none."""
    bits = pool.max_prefixlen
    count = 1 << (prefix - pool.prefixlen)
    base, step = int(pool.network_address), 1 << (bits - prefix)
    same = [u for u in used if u.version == pool.version and u.prefixlen > 0]

    def make(i: int) -> Network:
        return ipaddress.ip_network((base + i * step, prefix))

    def free(n: Network) -> bool:
        return not any(n.overlaps(u) for u in same)

    if count <= _SCAN_MAX:
        order = list(range(count))
        rng.shuffle(order)
        return next((n for n in map(make, order) if free(n)), None)
    for _ in range(_RANDOM_TRIES):
        n = make(rng.randrange(count))
        if free(n):
            return n
    return None


def auto_address(version: int, used: list[Network], rng: random.Random, network: str) -> str:
    """The bridge's address ("10.x.y.1/24") in a free subnet of the IPv<VERSION> pool for NETWORK;
    the subnet is added to USED, so the next call picks another."""
    pool, env = _pool(version)
    subnet = pick_subnet(pool, AUTO_PREFIX[version], used, rng)
    if subnet is None:
        raise ConflictError(
            f'No free /{AUTO_PREFIX[version]} subnet left in {pool} ({env}) for network "{network}"'
        )
    used.append(subnet)
    return f"{subnet.network_address + 1}/{subnet.prefixlen}"
