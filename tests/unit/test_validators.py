"""Config value validators: examples, refusals with usable messages, and properties."""

from __future__ import annotations

import ipaddress
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pincus.config import validators as v
from pincus.config.validators import Validator

ADDR4 = v.is_address_or_keyword(("auto", "none"), v.is_address_cidr4)

# Every validator, by a readable name; property tests run over all of them.
ALL: dict[str, Validator] = {
    "is_bool": v.is_bool,
    "is_int_range(0,10)": v.is_int_range(0, 10),
    "is_int_range(-5,5)": v.is_int_range(-5, 5),
    "is_mtu": v.is_mtu,
    "is_mac": v.is_mac,
    "is_interface_name": v.is_interface_name,
    "is_vlan_id": v.is_vlan_id,
    "is_vlan_list": v.is_vlan_list,
    "is_cidr4": v.is_cidr4,
    "is_cidr6": v.is_cidr6,
    "is_address_cidr4": v.is_address_cidr4,
    "is_address_cidr6": v.is_address_cidr6,
    "is_ipv4": v.is_ipv4,
    "is_ipv6": v.is_ipv6,
    "is_ip_any": v.is_ip_any,
    "is_list_of(is_cidr4)": v.is_list_of(v.is_cidr4),
    "is_list_of(is_interface_name)": v.is_list_of(v.is_interface_name),
    "is_ip_range4": v.is_ip_range4,
    "is_ip_range6": v.is_ip_range6,
    "is_list_of(is_ip_range4)": v.is_list_of(v.is_ip_range4),
    "is_bit_rate": v.is_bit_rate,
    "is_size": v.is_size,
    "is_priority": v.is_priority,
    "is_dns_domain": v.is_dns_domain,
    "is_hostname": v.is_hostname,
    "is_instance_name": v.is_instance_name,
    "is_device_name": v.is_device_name,
    "is_one_of": v.is_one_of("none", "managed", "dynamic"),
    "is_any": v.is_any,
    "is_argv": v.is_argv,
    "is_address_or_keyword": ADDR4,
    "is_duration": v.is_duration,
    "optional(is_mac)": v.optional(v.is_mac),
    "is_cpu_limit": v.is_cpu_limit,
    "is_cpu_allowance": v.is_cpu_allowance,
    "is_memory_limit": v.is_memory_limit,
    "is_processes_limit": v.is_processes_limit,
}

# Characters that must never get through to a dnsmasq config line or an nftables rule.
UNSAFE = set("\"'\\#;`$*{}") | {chr(c) for c in range(32)} | {"\x7f"}


def refusal(validator: Validator, value: str) -> str:
    with pytest.raises(ValueError) as info:
        validator(value)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------

VALID = [
    (v.is_device_name, ["eth0", "uplink.1", "_x", "a-b_c", "a" * 64]),
    (v.is_bool, ["true", "FALSE", "1", "0", "yes", "No", "on", "OFF"]),
    (v.is_int_range(0, 10), ["0", "10", "007"]),
    (v.is_int_range(-5, 5), ["-5", "-0", "5"]),
    (v.is_mtu, ["1280", "1500", "9000", "16384"]),
    (v.is_mac, ["0a:92:a7:0d:b7:d9", "00:16:3E:AA:BB:CC", "02:00:00:00:00:01"]),
    (v.is_interface_name, ["eth0", "br-lan", "veth_x.10", "enp5s0f1np1234", "a", "lan@1", "brü"]),
    (v.is_vlan_id, ["0", "1", "4094"]),
    (v.is_vlan_list, ["10", "10,20-30,4000", "1 , 2", "5-5", "0-4094"]),
    (v.is_cidr4, ["10.250.1.0/24", "0.0.0.0/0", "10.250.1.5/32"]),
    (v.is_cidr6, ["fd42:250:1::/64", "::/0", "fd42:250::1/128"]),
    (v.is_address_cidr4, ["10.250.1.1/24", "10.250.1.254/24", "10.250.1.0/31", "10.250.1.7/32"]),
    (v.is_address_cidr6, ["fd42:250:1::1/64", "fd42:250::/127", "2001:db8::5/128"]),
    (v.is_ipv4, ["10.250.1.20", "0.0.0.0"]),
    (v.is_ipv6, ["fd42:250::20", "::", "::ffff:10.250.1.1"]),
    (v.is_ip_any, ["10.250.1.20", "fd42:250::20"]),
    (v.is_list_of(v.is_cidr4), ["10.250.1.0/24", "10.250.1.0/24,10.250.2.0/24", "10.0.0.0/8 , 10.1.0.0/16"]),
    (v.is_ip_range4, ["10.250.1.10-10.250.1.50", "10.250.1.10-10.250.1.10"]),
    (v.is_ip_range6, ["fd42:250::10-fd42:250::50"]),
    (v.is_bit_rate, ["10Mbit", "1Gbit", "500kbit", "1.5Mbit", "100", "1MB", "10mbit", "2Gibit", "64KiB"]),
    (v.is_size, ["512MiB", "1GB", "100kB", "4096", "1.5GiB", "0"]),
    (v.is_priority, ["0", "10", "4294967295"]),
    (v.is_dns_domain, ["incus", "lan.example.org", "a-b.c1", "xn--bcher-kva.example"]),
    (v.is_hostname, ["web", "web-1", "1web", "a" * 63]),
    (v.is_instance_name, ["web", "web-1", "Web2"]),
    (v.is_one_of("none", "managed"), ["none", "managed"]),
    (v.is_any, ["", "anything at all\nwith ;#\"' and ünïcode"]),
    (ADDR4, ["auto", "none", "10.250.1.1/24"]),
    (v.is_duration, ["1h", "30m", "3600", "infinite", "2d", "1w", "120", "2m", "12H"]),
    (v.optional(v.is_mac), ["", "0a:92:a7:0d:b7:d9"]),
]


def _param_id(value: object) -> str:
    """Stable across processes (xdist compares test ids): functions by name, not address."""
    if callable(value):
        return getattr(value, "__qualname__", type(value).__name__)
    return repr(value)


@pytest.mark.parametrize(("validator", "value"), [(f, x) for f, xs in VALID for x in xs], ids=_param_id)
def test_accepts_valid_examples(validator: Validator, value: str) -> None:
    validator(value)


# (validator, value, a fragment the message must contain)
INVALID = [
    (v.is_bool, "maybe", '"maybe" is not a boolean'),
    (v.is_bool, " true", "not a boolean"),
    (v.is_int_range(0, 10), "11", "11 is outside 0-10"),
    (v.is_int_range(0, 10), "+5", "not a decimal integer"),
    (v.is_int_range(0, 10), "5 ", "not a decimal integer"),
    (v.is_int_range(0, 10), "\u0665", "not a decimal integer"),  # Arabic-Indic five
    (v.is_int_range(0, 10), "1_0", "not a decimal integer"),
    (v.is_int_range(0, 10), "9" * 5000, "outside 0-10"),
    (v.is_mtu, "1279", "1279 is outside 1280-16384"),
    (v.is_mtu, "16385", "outside 1280-16384"),
    (v.is_mac, "01:00:5e:00:00:01", "multicast"),
    (v.is_mac, "ff:ff:ff:ff:ff:ff", "multicast"),
    (v.is_mac, "00:00:00:00:00:00", "all-zero"),
    (v.is_mac, "0a-92-a7-0d-b7-d9", "not a MAC address"),
    (v.is_mac, "0a:92:a7:0d:b7", "not a MAC address"),
    (v.is_mac, "0a:92:a7:0d:b7:d9\n", "not a MAC address"),
    (v.is_interface_name, "eth\n0", "contains a newline"),
    (v.is_argv, "-name 'x", "does not split into arguments"),
    (v.is_device_name, "../x", 'contains "/"'),
    (v.is_device_name, "-x", 'starts with "-"'),
    (v.is_device_name, ".x", 'starts with "."'),
    (v.is_device_name, "a;b", 'contains ";"'),
    (v.is_device_name, "a" * 65, "at most 64"),
    (v.is_interface_name, "eth 0", "contains a space"),
    (v.is_interface_name, "eth/0", 'contains "/"'),
    (v.is_interface_name, "eth:0", 'contains ":"'),
    (v.is_interface_name, "..", '".." is not allowed'),
    (v.is_interface_name, ".", '"." is not allowed'),
    (v.is_interface_name, "abcdefghijklmnop", "16 bytes long"),
    (v.is_interface_name, "ü" * 8, "16 bytes long"),
    (v.is_interface_name, "", "empty value"),
    (v.is_interface_name, 'a"b', "'\"'"),
    (v.is_interface_name, "eth*", '"*"'),
    (v.is_interface_name, "a#b", '"#"'),
    (v.is_interface_name, "-x", 'starts with "-"'),
    (v.is_interface_name, "a\u00a0b", "U+00A0"),
    (v.is_vlan_id, "4095", "4095 is outside 0-4094"),
    (v.is_vlan_id, "-1", "-1 is outside 0-4094"),
    (v.is_vlan_list, "30-20", '"30-20" is a reversed range'),
    (v.is_vlan_list, "10,,20", "empty item"),
    (v.is_vlan_list, "10,4095", "4095 is outside 0-4094"),
    (v.is_vlan_list, "10-", "not a decimal integer"),
    (v.is_vlan_list, "", "empty value"),
    (v.is_cidr4, "10.250.1.0/33", "prefix length 33, IPv4 allows 0-32"),
    (v.is_cidr4, "10.250.1.5/24", "host bits set (the network is 10.250.1.0/24)"),
    (v.is_cidr4, "10.250.1.0", "no prefix length"),
    (v.is_cidr4, "10.250.1.0/255.255.255.0", "prefix length"),
    (v.is_cidr4, "10.250.1.0/024", "prefix length"),
    (v.is_cidr4, "10.250.1/24", "not an IPv4 network"),
    (v.is_cidr6, "fd42:250:1::1/64", "host bits set"),
    (v.is_cidr6, "fd42::/129", "prefix length 129, IPv6 allows 0-128"),
    (v.is_cidr6, "fe80::%eth0/64", "not an IPv6 network"),
    (v.is_address_cidr4, "10.250.1.0/24", "network address"),
    (v.is_address_cidr4, "10.250.1.255/24", "broadcast address"),
    (v.is_address_cidr4, "0.0.0.0/8", "unspecified"),
    (v.is_address_cidr4, "224.0.0.1/4", "multicast"),
    (v.is_address_cidr4, "10.250.1.1", "no prefix length"),
    (v.is_address_cidr6, "fd42:250:1::/64", "subnet-router anycast"),
    (v.is_address_cidr6, "ff02::1/64", "multicast"),
    (v.is_address_cidr6, "::/64", "unspecified"),
    (v.is_ipv4, "10.250.1.20/24", "not an IPv4 address"),
    (v.is_ipv4, "010.250.1.20", "not an IPv4 address"),
    (v.is_ipv4, "fd42::1", "not an IPv4 address"),
    (v.is_ipv6, "fe80::1%eth0", "not an IPv6 address"),
    (v.is_ipv6, "fe80::1%\n", "not an IPv6 address"),
    (v.is_ip_any, "10.250.1", "not an IPv4 address"),
    (v.is_list_of(v.is_cidr4), "10.0.0.0/8,", "empty item"),
    (v.is_list_of(v.is_cidr4), "10.0.0.0/8,\n10.1.0.0/16", "not an IPv4 network"),
    (v.is_ip_range4, "10.250.1.50-10.250.1.10", "reversed range"),
    (v.is_ip_range4, "10.250.1.50", "not an IPv4 range"),
    (v.is_ip_range4, "10.250.1.10 - 10.250.1.50", "not an IPv4 address"),
    (v.is_ip_range6, "fd42:250::50-fd42:250::10", "reversed range"),
    (v.is_bit_rate, "10 parsecs", '"10 parsecs" is not a bit rate (expected e.g. 10Mbit, 1Gbit, 500kbit)'),
    (v.is_bit_rate, "10 Mbit", "not a bit rate"),
    (v.is_bit_rate, "10Mbps", "not a bit rate"),
    (v.is_bit_rate, "10mb", "not a bit rate"),
    (v.is_bit_rate, "0Mbit", "not above zero"),
    (v.is_bit_rate, "0.5bit", "not a whole number of bits"),
    (v.is_bit_rate, "-1Mbit", "not a bit rate"),
    (v.is_bit_rate, "10Ebit", "above the largest rate"),
    (v.is_bit_rate, "1" * 5000, "too many digits"),
    (v.is_bit_rate, "", "not a bit rate"),
    (v.is_size, "1.5B", "not a whole number of bytes"),
    (v.is_size, "512mib", "not a size"),
    (v.is_size, "1Mbit", "not a size"),
    (v.is_priority, "4294967296", "outside 0-4294967295"),
    (v.is_dns_domain, "a..b", "empty label"),
    (v.is_dns_domain, "example.org.", "empty label"),
    (v.is_dns_domain, "-a.org", 'starting or ending with "-"'),
    (v.is_dns_domain, "a_b.org", '"_"'),
    (v.is_dns_domain, "a\nb", "a newline"),
    (v.is_dns_domain, "a" * 64 + ".org", "label of 64 characters"),
    (v.is_dns_domain, ".".join(["a" * 63] * 4), "255 characters long"),
    (v.is_dns_domain, "10.250.1.1", "all-digit label"),
    (v.is_hostname, "-web", 'starting or ending with "-"'),
    (v.is_hostname, "web-", 'starting or ending with "-"'),
    (v.is_hostname, "123", "all digits"),
    (v.is_hostname, "a" * 64, "64 characters"),
    (v.is_hostname, "web.lan", '"."'),
    (v.is_instance_name, "1web", "starts with a digit"),
    (v.is_instance_name, "web 1", "a space"),
    (v.is_instance_name, "", "empty value"),
    (v.is_one_of("none", "managed"), "Managed", '"Managed" is not one of: none, managed'),
    (v.is_any, "a\x00b", "NUL"),
    (v.is_any, "\ud800", "not valid Unicode"),
    (ADDR4, "atuo", "other accepted values: auto, none"),
    (ADDR4, "10.250.1.0/33", "prefix length 33"),
    (v.is_duration, "1m", "shorter than 2m"),
    (v.is_duration, "0", "shorter than 2m"),
    (v.is_duration, "1h30m", "not a lease time"),
    (v.is_duration, "Infinite", "not a lease time"),
    (v.is_duration, "99999999w", "longer than"),
    (v.is_duration, "9" * 5000, "longer than"),
    (v.optional(v.is_mac), " ", "not a MAC address"),
]


@pytest.mark.parametrize(("validator", "value", "fragment"), INVALID, ids=_param_id)
def test_refuses_invalid_examples_with_a_message_about_the_value(
    validator: Validator, value: str, fragment: str
) -> None:
    assert fragment in refusal(validator, value)


def test_message_formats_match_the_design_examples() -> None:
    assert refusal(v.is_vlan_id, "4095") == "4095 is outside 0-4094"
    assert (
        refusal(v.is_bit_rate, "10 parsecs")
        == '"10 parsecs" is not a bit rate (expected e.g. 10Mbit, 1Gbit, 500kbit)'
    )


def test_long_values_are_cut_short_in_messages() -> None:
    message = refusal(v.is_mac, "x" * 10_000)
    assert len(message) < 200
    assert "10000 characters" in message


def test_factories_refuse_nonsense_arguments() -> None:
    with pytest.raises(TypeError):
        v.is_int_range(5, 1)
    with pytest.raises(TypeError):
        v.is_one_of()


# ---------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("10Mbit", 10_000_000),
        ("1MB", 8_000_000),
        ("1.5Mbit", 1_500_000),
        ("500kbit", 500_000),
        ("1Gbit", 1_000_000_000),
        ("1Kibit", 1024),
        ("1KiB", 8192),
        ("100", 100),
        ("100bit", 100),
        ("1B", 8),
        ("10MBIT", 10_000_000),
    ],
)
def test_parse_bit_rate(text: str, bits: int) -> None:
    assert v.parse_bit_rate(text) == bits


@pytest.mark.parametrize(
    ("text", "size"),
    [("512MiB", 512 * 2**20), ("1GB", 10**9), ("100kB", 100_000), ("4096", 4096), ("1.5KiB", 1536)],
)
def test_parse_size(text: str, size: int) -> None:
    assert v.parse_size(text) == size


def test_parse_bool() -> None:
    assert [v.parse_bool(x) for x in ("true", "On", "1", "YES")] == [True] * 4
    assert [v.parse_bool(x) for x in ("false", "Off", "0", "no")] == [False] * 4


def test_parse_vlan_list_is_expanded_sorted_unique() -> None:
    assert v.parse_vlan_list("4000, 20-23,10,21") == [10, 20, 21, 22, 23, 4000]


def test_parse_duration() -> None:
    assert v.parse_duration("1h") == 3600
    assert v.parse_duration("30m") == 1800
    assert v.parse_duration("3600") == 3600
    assert v.parse_duration("1w") == 604800
    assert v.parse_duration("infinite") is None


def test_split_list_drops_spaces_around_commas() -> None:
    assert v.split_list(" a ,b,  c ") == ["a", "b", "c"]


def test_parse_cidr_and_address_return_ipaddress_objects() -> None:
    assert v.parse_cidr4("10.250.1.0/24") == ipaddress.IPv4Network("10.250.1.0/24")
    assert v.parse_address_cidr6("fd42:250::1/64") == ipaddress.IPv6Interface("fd42:250::1/64")
    assert v.parse_ip_range4("10.250.1.10-10.250.1.50") == (
        ipaddress.IPv4Address("10.250.1.10"),
        ipaddress.IPv4Address("10.250.1.50"),
    )


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=40)
# Text built from the characters validators care about reaches deeper than arbitrary Unicode.
near_text = st.text(
    st.sampled_from(list('0123456789abcdefABCDEF:./-, kMGTiBbitmhswx_\n\t"*#;\\ü\x00')),
    max_size=30,
)


def outcome(validator: Validator, value: str) -> str | None:
    """None if accepted, else the message; anything but ValueError propagates and fails."""
    try:
        validator(value)
    except ValueError as e:
        return str(e)
    return None


@given(st.one_of(any_text, near_text))
def test_any_text_is_accepted_or_refused_with_a_clean_message(value: str) -> None:
    for name, validator in ALL.items():
        message = outcome(validator, value)
        if message is None:
            if name not in ("is_any", "is_argv"):  # free-form by design
                assert not (set(value) & UNSAFE), (name, value)
            continue
        assert message
        # Messages go into logs and terminals: control characters show escaped.
        assert all(ch.isprintable() for ch in message), (name, message)


unicast_mac = st.integers(0, 2**48 - 1).map(lambda n: n & ~(1 << 40)).filter(lambda n: n != 0)


def format_mac(number: int, upper: bool) -> str:
    text = ":".join(f"{b:02x}" for b in number.to_bytes(6, "big"))
    return text.upper() if upper else text


@given(unicast_mac, st.booleans())
def test_unicast_macs_are_accepted(number: int, upper: bool) -> None:
    v.is_mac(format_mac(number, upper))


@given(unicast_mac, st.booleans())
def test_multicast_macs_are_refused(number: int, upper: bool) -> None:
    assert "multicast" in refusal(v.is_mac, format_mac(number | (1 << 40), upper))


ifname_chars = st.characters(categories=("L", "N"), exclude_characters="\u00a0") | st.sampled_from(
    list("-_.@+%")
)
valid_ifname = st.text(ifname_chars, min_size=1, max_size=15).filter(
    lambda s: len(s.encode()) <= 15 and s not in (".", "..") and not s.startswith("-")
)


@given(valid_ifname)
def test_valid_interface_names_are_accepted(name: str) -> None:
    v.is_interface_name(name)


@given(valid_ifname, st.sampled_from(list("/: \n\t\r\x00\"'\\#;*,=$`")), st.integers(0, 15))
def test_interface_names_with_a_forbidden_character_are_refused(name: str, bad: str, at: int) -> None:
    at = min(at, len(name))
    refusal(v.is_interface_name, name[:at] + bad + name[at:])


@given(st.text(ifname_chars, min_size=1, max_size=40).filter(lambda s: len(s.encode()) > 15))
def test_interface_names_over_15_bytes_are_refused(name: str) -> None:
    refusal(v.is_interface_name, name)


vlan_id = st.integers(0, 4094)
vlan_item = st.one_of(
    vlan_id.map(lambda n: (n, n)),
    st.tuples(vlan_id, vlan_id).map(lambda t: (min(t), max(t))),
)


def format_vlan_item(item: tuple[int, int], as_range: bool) -> str:
    start, end = item
    return f"{start}-{end}" if as_range or start != end else str(start)


@given(
    st.lists(st.tuples(vlan_item, st.booleans()), min_size=1, max_size=8), st.sampled_from([",", ", ", " , "])
)
def test_vlan_lists_round_trip(items: list[tuple[tuple[int, int], bool]], sep: str) -> None:
    text = sep.join(format_vlan_item(item, as_range) for item, as_range in items)
    expected = sorted({n for (start, end), _ in items for n in range(start, end + 1)})
    assert v.parse_vlan_list(text) == expected


@given(st.tuples(vlan_id, vlan_id).filter(lambda t: t[0] != t[1]))
def test_reversed_vlan_ranges_are_refused(pair: tuple[int, int]) -> None:
    low, high = sorted(pair)
    assert "reversed range" in refusal(v.is_vlan_list, f"{high}-{low}")


@given(st.integers(4095, 10**30) | st.integers(-(10**30), -1))
def test_vlan_ids_outside_range_are_refused(number: int) -> None:
    assert refusal(v.is_vlan_id, str(number)) == f"{number} is outside 0-4094"


@given(st.integers(-100, 100), st.integers(-100, 100), st.integers(-1000, 1000))
def test_int_range_accepts_exactly_the_range(lo: int, width: int, number: int) -> None:
    hi = lo + abs(width)
    accepted = outcome(v.is_int_range(lo, hi), str(number)) is None
    assert accepted == (lo <= number <= hi)


@given(st.ip_addresses(v=4), st.integers(0, 32))
def test_ipv4_networks_from_ipaddress(address: ipaddress.IPv4Address, length: int) -> None:
    network = ipaddress.IPv4Network((address, length), strict=False)
    assert v.parse_cidr4(str(network)) == network
    if network.network_address != address:
        assert "host bits set" in refusal(v.is_cidr4, f"{address}/{length}")


@given(st.ip_addresses(v=6), st.integers(0, 128))
def test_ipv6_networks_from_ipaddress(address: ipaddress.IPv6Address, length: int) -> None:
    network = ipaddress.IPv6Network((address, length), strict=False)
    assert v.parse_cidr6(str(network)) == network
    assert v.parse_cidr6(network.exploded) == network
    if network.network_address != address:
        assert "host bits set" in refusal(v.is_cidr6, f"{address}/{length}")


@given(st.ip_addresses(v=4), st.integers(33, 999))
def test_ipv4_prefixes_over_32_are_refused(address: ipaddress.IPv4Address, length: int) -> None:
    assert f"prefix length {length}" in refusal(v.is_cidr4, f"{address}/{length}")


@given(st.ip_addresses(v=4), st.integers(0, 32))
def test_ipv4_host_addresses_with_prefix(address: ipaddress.IPv4Address, length: int) -> None:
    interface = ipaddress.IPv4Interface((address, length))
    net = interface.network
    special = length <= 30 and address in (net.network_address, net.broadcast_address)
    bad = special or address.is_multicast or address.is_unspecified or int(address) == 2**32 - 1
    assert (outcome(v.is_address_cidr4, f"{address}/{length}") is None) == (not bad)


@given(st.ip_addresses(v=6), st.integers(0, 128))
def test_ipv6_host_addresses_with_prefix(address: ipaddress.IPv6Address, length: int) -> None:
    net = ipaddress.IPv6Interface((address, length)).network
    bad = (length <= 126 and address == net.network_address) or address.is_multicast or address.is_unspecified
    assert (outcome(v.is_address_cidr6, f"{address}/{length}") is None) == (not bad)


@given(st.ip_addresses(v=4), st.ip_addresses(v=4))
def test_ipv4_ranges_need_start_not_above_end(a: ipaddress.IPv4Address, b: ipaddress.IPv4Address) -> None:
    assert (outcome(v.is_ip_range4, f"{a}-{b}") is None) == (a <= b)


@given(st.ip_addresses(v=6), st.ip_addresses(v=6))
def test_ipv6_ranges_need_start_not_above_end(a: ipaddress.IPv6Address, b: ipaddress.IPv6Address) -> None:
    assert (outcome(v.is_ip_range6, f"{a}-{b}") is None) == (a <= b)


@given(st.lists(st.ip_addresses(v=4), min_size=1, max_size=5), st.sampled_from([",", ", ", " ,  "]))
def test_lists_accept_spaces_around_commas(addresses: list[ipaddress.IPv4Address], sep: str) -> None:
    text = sep.join(str(a) for a in addresses)
    v.is_list_of(v.is_ipv4)(text)
    assert v.split_list(text) == [str(a) for a in addresses]


BIT_UNITS = {"bit": 1, "kbit": 10**3, "Mbit": 10**6, "Gbit": 10**9, "Kibit": 2**10, "Mibit": 2**20}
BYTE_UNITS = {"B": 8, "kB": 8 * 10**3, "MB": 8 * 10**6, "KiB": 8 * 2**10, "GiB": 8 * 2**30}


@given(
    st.integers(1, 10**6),
    st.integers(0, 3),
    st.sampled_from(sorted({**BIT_UNITS, **BYTE_UNITS}.items())),
)
def test_bit_rates_parse_to_bits_per_second(mantissa: int, decimals: int, unit: tuple[str, int]) -> None:
    suffix, factor = unit
    number = Fraction(mantissa, 10**decimals)
    text = f"{mantissa // 10**decimals}.{mantissa % 10**decimals:0{decimals}d}" if decimals else str(mantissa)
    expected = number * factor
    if expected.denominator == 1:
        assert v.parse_bit_rate(text + suffix) == expected
    else:
        assert "whole number" in refusal(v.is_bit_rate, text + suffix)


@given(st.integers(0, 10**9), st.sampled_from(["", "B", "kB", "MB", "GB", "KiB", "MiB", "GiB"]))
def test_sizes_parse_to_bytes(number: int, suffix: str) -> None:
    factor = {"": 1, "B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9}.get(
        suffix, {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}.get(suffix, 0)
    )
    assert v.parse_size(f"{number}{suffix}") == number * factor


@given(st.integers(0, 10**7), st.sampled_from(["", "s", "m", "h", "d", "w", "H", "D"]))
def test_durations_parse_to_seconds(number: int, unit: str) -> None:
    seconds = number * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit.lower()]
    result = outcome(v.is_duration, f"{number}{unit}")
    assert (result is None) == (120 <= seconds <= 2**31 - 1)
    if result is None:
        assert v.parse_duration(f"{number}{unit}") == seconds


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(st.lists(label, min_size=1, max_size=5).filter(lambda ls: not ls[-1].isdigit()))
def test_generated_dns_domains_are_accepted(labels: list[str]) -> None:
    v.is_dns_domain(".".join(labels))


@given(label.filter(lambda s: not s[0].isdigit()))
def test_generated_instance_names_are_accepted(name: str) -> None:
    v.is_instance_name(name)
    v.is_hostname(name)


@given(st.sampled_from(["true", "false", "yes", "no", "on", "off", "1", "0"]), st.data())
def test_booleans_in_any_case(word: str, data: st.DataObject) -> None:
    mixed = "".join(c.upper() if data.draw(st.booleans()) else c for c in word)
    assert v.parse_bool(mixed) == (word in ("true", "yes", "on", "1"))
