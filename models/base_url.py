"""Checks on a base URL a user supplies, before a worker is ever pointed at it.

A tenant's base URL makes our workers send requests -- with the tenant's key -- wherever it
says. Only http and https are allowed, and not cloud metadata services or link-local
addresses (169.254.0.0/16, fe80::/10), where a request could read the worker's cloud
credentials, unless ``MODELYARD_ALLOW_LINK_LOCAL_BASE_URLS`` is set. Loopback and private
networks stay allowed: local model servers (Ollama, vLLM) live there.

The host is checked as written and, if it is a name, as it resolves now. A name that
resolves elsewhere later (DNS rebinding) is not caught here.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from conf.errors import InvalidRequest
from conf.settings import get_settings

# Metadata services that are not link-local: Alibaba Cloud's, and AWS's IPv6 one.
_METADATA_ADDRESSES = frozenset({ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")})
_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
    }
)
_ALLOW = "MODELYARD_ALLOW_LINK_LOCAL_BASE_URLS=1 allows it"


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_link_local or address in _METADATA_ADDRESSES


def _resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []  # unresolvable here: the key check will report the connection error
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_base_url(url: str) -> str:
    """The URL without a trailing slash, or InvalidRequest saying what is wrong with it."""
    url = url.strip()
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        if parts.port == 0:  # reading the port raises ValueError if it is not a number or out of range
            raise ValueError("port 0")
    except ValueError as exc:  # "http://[::1/v1", "http://host:99999"
        raise InvalidRequest(f"base URL is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest(f"base URL must start with http:// or https://; got {parts.scheme or 'no'} scheme")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise InvalidRequest("base URL has no host")
    if parts.username or parts.password:
        raise InvalidRequest("base URL must not carry a user name or password; give the key with --api-key")
    if get_settings().allow_private_base_urls:
        return url.rstrip("/")
    if host in _METADATA_NAMES:
        raise InvalidRequest(f"base URL points at a cloud metadata service ({host}); {_ALLOW}")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = _resolve(host)
    for address in addresses:
        if _forbidden(address):
            raise InvalidRequest(
                f"base URL host {host} is a link-local or cloud metadata address ({address}); {_ALLOW}"
            )
    return url.rstrip("/")
