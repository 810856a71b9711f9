"""Which addresses a callback may reach: public unicast only (the SSRF guard's core).

Used at invoice creation (literal IPs in the URL) and at send time (every resolved address).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from paywatch.errors import InputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


def is_public(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses (IPv4-mapped IPv6 judged as IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        if ip.sixtofour is not None or ip.teredo is not None:
            return False
    if ip in _METADATA:
        return False
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


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


def validate_callback_url(url: str, *, allow_private: bool, field: str = "callback_url") -> str:
    """Check a merchant URL's form; refuse non-http(s) and literal non-public IPs."""
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
    ip = literal_ip(parts.hostname)
    if ip is not None and not allow_private and not is_public(ip):
        raise InputError("callback URL points to a private, loopback or reserved address", field=field)
    return url
