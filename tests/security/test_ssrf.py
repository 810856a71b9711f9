"""SSRF: every block of the IANA IPv4 and IPv6 Special-Purpose Address Registries is refused.

Each block is tried as a literal in the callback URL and as a DNS answer, and every IPv4 block also
in its IPv4-mapped, IPv4-compatible, NAT64 (well-known and local-use prefix), 6to4 and Teredo
forms, and in decimal, octal and hex spellings. The expectations are written out here, not taken
from ``ipaddress.is_global``, so they hold on every Python version.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from paywatch.callbacks.guard import BlockedDestinationError, vet
from paywatch.errors import InputError
from paywatch.netguard import SPECIAL_PURPOSE, is_public, validate_callback_url
from tests.support.callback_receiver import MappingResolver

pytestmark = pytest.mark.attack("ssrf")
ip = ipaddress.ip_address

# (block, registry name): the registries' rows, written out independently of the code's table
IPV4_BLOCKS = [
    ("0.0.0.0/8", '"This network"'),
    ("0.0.0.0/32", '"This host on this network"'),
    ("10.0.0.0/8", "Private-Use"),
    ("100.64.0.0/10", "Shared Address Space"),
    ("127.0.0.0/8", "Loopback"),
    ("169.254.0.0/16", "Link Local"),
    ("172.16.0.0/12", "Private-Use"),
    ("192.0.0.0/24", "IETF Protocol Assignments"),
    ("192.0.0.0/29", "IPv4 Service Continuity Prefix"),
    ("192.0.0.8/32", "IPv4 dummy address"),
    ("192.0.0.9/32", "Port Control Protocol Anycast"),
    ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast"),
    ("192.0.0.170/32", "NAT64/DNS64 Discovery"),
    ("192.0.0.171/32", "NAT64/DNS64 Discovery"),
    ("192.0.2.0/24", "Documentation (TEST-NET-1)"),
    ("192.31.196.0/24", "AS112-v4"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)"),
    ("192.88.99.2/32", "6a44-relay anycast address"),
    ("192.168.0.0/16", "Private-Use"),
    ("192.175.48.0/24", "Direct Delegation AS112 Service"),
    ("198.18.0.0/15", "Benchmarking"),
    ("198.51.100.0/24", "Documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "Documentation (TEST-NET-3)"),
    ("240.0.0.0/4", "Reserved"),
    ("255.255.255.255/32", "Limited Broadcast"),
    ("224.0.0.0/4", "Multicast (IANA IPv4 Multicast Address Space Registry)"),
]
IPV6_BLOCKS = [
    ("::1/128", "Loopback Address"),
    ("::/128", "Unspecified Address"),
    ("::ffff:0:0/96", "IPv4-mapped Address"),
    ("64:ff9b:1::/48", "IPv4-IPv6 Translat. (local use)"),
    ("100::/64", "Discard-Only Address Block"),
    ("100:0:0:1::/64", "Dummy IPv6 Prefix"),
    ("2001::/23", "IETF Protocol Assignments"),
    ("2001::/32", "TEREDO"),
    ("2001:1::1/128", "Port Control Protocol Anycast"),
    ("2001:1::2/128", "Traversal Using Relays around NAT Anycast"),
    ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast"),
    ("2001:2::/48", "Benchmarking"),
    ("2001:3::/32", "AMT"),
    ("2001:4:112::/48", "AS112-v6"),
    ("2001:10::/28", "Deprecated (previously ORCHID)"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix"),
    ("2001:db8::/32", "Documentation"),
    ("2002::/16", "6to4"),
    ("2620:4f:8000::/48", "Direct Delegation AS112 Service"),
    ("3fff::/20", "Documentation"),
    ("5f00::/16", "Segment Routing (SRv6) SIDs"),
    ("fc00::/7", "Unique-Local"),
    ("fe80::/10", "Link-Local Unicast"),
    ("fec0::/10", "Deprecated site-local (RFC 3879)"),
    ("ff00::/8", "Multicast (IANA IPv6 Multicast Address Space Registry)"),
    ("::/96", "Deprecated IPv4-compatible (RFC 4291)"),
]


def _samples(block: str) -> list[str]:
    net = ipaddress.ip_network(block)
    picks = {net.network_address, net.broadcast_address, net.network_address + (net.num_addresses // 2)}
    return sorted(str(a) for a in picks)


def _url(address: str) -> str:
    return f"http://[{address}]/hook" if ":" in address else f"http://{address}/hook"


BLOCK_CASES = [pytest.param(b, n, id=f"{b} {n}") for b, n in IPV4_BLOCKS + IPV6_BLOCKS]


@pytest.mark.parametrize(("block", "name"), BLOCK_CASES)
async def test_every_registry_block_is_refused_as_a_literal_and_as_a_dns_answer(block: str, name: str) -> None:
    for address in _samples(block):
        assert not is_public(ip(address)), (block, name, address)
        with pytest.raises(BlockedDestinationError):
            await vet(_url(address), MappingResolver({}), allow_private=False)
        resolver = MappingResolver({"hooks.merchant.example": [ip("93.184.216.34"), ip(address)]})
        with pytest.raises(BlockedDestinationError, match="resolves to"):
            await vet("https://hooks.merchant.example/cb", resolver, allow_private=False)
        with pytest.raises(InputError) as caught:
            validate_callback_url(_url(address), allow_private=False)
        assert caught.value.field == "callback_url"


def test_the_code_table_names_every_registry_block() -> None:
    table = {str(net): name for net, name in SPECIAL_PURPOSE}
    for block, _name in IPV4_BLOCKS + IPV6_BLOCKS:
        assert str(ipaddress.ip_network(block)) in table, block


# The IPv4 targets an attacker wants, wrapped in every IPv6 form that embeds an IPv4 address.
TARGETS = ["127.0.0.1", "10.1.2.3", "169.254.169.254", "192.0.0.192", "192.168.1.1", "100.100.100.200"]


def _embeddings(v4: str) -> dict[str, str]:
    n = int(ipaddress.IPv4Address(v4))
    server = int(ipaddress.IPv4Address("192.0.2.45"))
    teredo = ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | (~n & 0xFFFFFFFF))
    return {
        "mapped": f"::ffff:{v4}",
        "compatible": str(ipaddress.IPv6Address(n)),
        "nat64": f"64:ff9b::{v4}",
        "nat64-local": str(ipaddress.IPv6Address((0x0064FF9B0001 << 80) | n)),
        "6to4": str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | 1)),
        "teredo": str(teredo),
    }


EMBEDDED = [
    pytest.param(form, address, id=f"{form} {v4}")
    for v4 in TARGETS
    for form, address in _embeddings(v4).items()
]


@pytest.mark.parametrize(("form", "address"), EMBEDDED)
async def test_ipv6_forms_embedding_a_private_ipv4_are_refused(form: str, address: str) -> None:
    assert not is_public(ip(address)), (form, address)
    with pytest.raises(BlockedDestinationError):
        await vet(_url(address), MappingResolver({}), allow_private=False)
    resolver = MappingResolver({"hooks.merchant.example": [ip(address)]})
    with pytest.raises(BlockedDestinationError, match="resolves to"):
        await vet("https://hooks.merchant.example/cb", resolver, allow_private=False)


def _spellings(v4: str) -> dict[str, str]:
    n = int(ipaddress.IPv4Address(v4))
    octets = struct.unpack("4B", socket.inet_aton(v4))
    return {
        "decimal": str(n),
        "hex": hex(n),
        "octal-dotted": ".".join(f"0{o:o}" for o in octets),
        "hex-dotted": ".".join(hex(o) for o in octets),
        "two-part": f"{octets[0]}.{n & 0xFFFFFF}",
        "three-part": f"{octets[0]}.{octets[1]}.{n & 0xFFFF}",
        "mapped-literal": f"[::ffff:{v4}]",
        "nat64-literal": f"[64:ff9b::{v4}]",
    }


ENCODED = [
    pytest.param(f"http://{host}/hook", id=f"{form} {v4}")
    for v4 in ("127.0.0.1", "169.254.169.254", "192.0.0.192", "10.0.0.1")
    for form, host in _spellings(v4).items()
]


@pytest.mark.parametrize("url", ENCODED)
async def test_decimal_octal_hex_and_bracketed_spellings_are_refused(url: str) -> None:
    with pytest.raises(BlockedDestinationError):
        await vet(url, MappingResolver({}), allow_private=False)
    with pytest.raises(InputError):
        validate_callback_url(url, allow_private=False)


PORT_PROBES = [22, 25, 6379, 5432, 8080, 2375, 11211, 65535]


@pytest.mark.parametrize("port", PORT_PROBES)
async def test_callbacks_to_public_hosts_are_limited_to_ports_80_and_443(port: int) -> None:
    url = f"https://hooks.merchant.example:{port}/cb"
    resolver = MappingResolver({"hooks.merchant.example": [ip("93.184.216.34")]})
    with pytest.raises(BlockedDestinationError, match="port"):
        await vet(url, resolver, allow_private=False)
    assert resolver.asked == []  # refused before any lookup
    with pytest.raises(InputError, match="port"):
        validate_callback_url(url, allow_private=False)
