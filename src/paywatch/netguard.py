"""Which addresses a callback may reach: public unicast only (the SSRF guard's core).

Used at invoice creation (literal IPs in the URL) and at send time (every resolved address).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from urllib.parse import urlsplit

from paywatch.errors import InputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORTS = frozenset({80, 443})


def _table(rows: list[tuple[str, str]]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(block), name) for block, name in rows)


#: Every block of the IANA IPv4 and IPv6 Special-Purpose Address Registries, by its registry name,
#: plus multicast, the deprecated site-local and IPv4-compatible IPv6 blocks. A callback may reach
#: none of them, whatever the registry says of global reachability (anycast infrastructure, such as
#: AS112 or PCP, is never a merchant's endpoint). Written out, so the answer is the same on every
#: Python version (``ipaddress.is_global`` changes between patch releases).
SPECIAL_PURPOSE: tuple[tuple[IPNetwork, str], ...] = _table(
    [
        # IANA IPv4 Special-Purpose Address Registry
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
        # IANA IPv4 Multicast Address Space Registry
        ("224.0.0.0/4", "Multicast"),
        # IANA IPv6 Special-Purpose Address Registry
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
        # beyond the registry: deprecated or non-unicast IPv6 space
        ("fec0::/10", "Deprecated site-local (RFC 3879)"),
        ("ff00::/8", "Multicast"),
        ("::/96", "Deprecated IPv4-compatible (RFC 4291)"),
    ]
)
#: NAT64's well-known prefix is globally reachable by the registry: judged by the IPv4 it embeds.
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition form carries: mapped, compatible, NAT64, 6to4, Teredo."""
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64_WELL_KNOWN or ip in _NAT64_LOCAL or (int(ip) >> 32 == 0 and int(ip) > 1):
        return low  # NAT64 (RFC 6052, the /96 form) and the deprecated IPv4-compatible ::a.b.c.d
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address (the server's is checked as a 6to4/Teredo block anyway)
    return None


def special_purpose_block(ip: IPAddress) -> str | None:
    """The registry name of the special-purpose block ``ip`` falls in (or whose IPv4 it embeds)."""
    for network, name in SPECIAL_PURPOSE:
        if ip.version == network.version and ip in network:
            return f"{network} {name}"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            found = special_purpose_block(inner)
            return f"{found}, embedded in {ip}" if found else None
        if ip not in _GLOBAL_UNICAST_V6:
            return "outside 2000::/3, the IPv6 global unicast space"
    return None


def is_public(ip: IPAddress) -> bool:
    """True unless ``ip`` is in a special-purpose block, directly or through an embedded IPv4."""
    return special_purpose_block(ip) is None


def literal_ip(host: str) -> IPAddress | None:
    """The IP a host string denotes by itself, including decimal (2130706433) and octal (0177.0.0.1)."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # inet_aton accepts the legacy forms browsers and libc still resolve: 2130706433, 0x7f.1, 0177.0.0.1
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def validate_callback_url(
    url: str, *, allow_private: bool, field: str = "callback_url", ports: Collection[int] = DEFAULT_PORTS
) -> str:
    """Check a merchant URL's form; refuse non-http(s), literal non-public IPs and other ports.

    ``allow_private`` lifts the address and the port rules (local development and tests).
    """
    if len(url) > 2048:
        raise InputError("callback URL is longer than 2048 characters", field=field)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"callback URL is malformed: {exc}", field=field) from None
    if parts.scheme not in ("http", "https"):
        raise InputError("callback URL must use http or https", field=field)
    if not parts.hostname:
        raise InputError("callback URL has no host", field=field)
    if parts.username or parts.password:
        raise InputError("callback URL must not carry credentials", field=field)
    if port == 0:
        raise InputError("callback URL has an invalid port", field=field)
    effective = port if port is not None else (443 if parts.scheme == "https" else 80)
    if not allow_private and effective not in ports:
        allowed = ", ".join(str(p) for p in sorted(ports))
        raise InputError(f"callback URL port {effective} is not allowed (allowed: {allowed})", field=field)
    ip = literal_ip(parts.hostname)
    if ip is not None and not allow_private and not is_public(ip):
        raise InputError("callback URL points to a private, loopback or reserved address", field=field)
    return url
