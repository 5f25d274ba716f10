"""Which push endpoints the server agrees to call (no server-side request forgery).

A subscription's endpoint is a URL a client gives and the server later calls.
By default only ``https`` URLs whose host resolves to public addresses are
accepted: loopback, private, link-local, unique-local, multicast and reserved
ranges are refused after resolution (at registration, and again by the
sender's resolver at each connection, so a name that later resolves to an
internal address is refused too). ``PUSH_ALLOWED_HOSTS`` restricts endpoints
further to known push services. ``PUSH_ALLOW_LOOPBACK`` (tests only) allows
``http`` on loopback addresses, where the tests' push service listens.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_ENDPOINT_LENGTH = 2048

Resolve = Callable[[str, int], Awaitable[Sequence[str]]]


class EndpointRefused(ValueError):
    """An endpoint the policy refuses; ``code`` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    """The rules of ``check_endpoint``."""

    #: Allowed hosts (exact, or a parent domain: ``push.example`` allows ``a.push.example``);
    #: empty: any public host.
    allowed_hosts: tuple[str, ...] = ()
    #: Tests only: ``http`` and loopback addresses are accepted.
    allow_loopback: bool = False


def address_allowed(address: str, policy: EndpointPolicy) -> bool:
    """True if the server may connect to ``address`` (an IP literal) under ``policy``."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return policy.allow_loopback
    return bool(ip.is_global) and not ip.is_multicast


def parse_endpoint(url: str, policy: EndpointPolicy) -> tuple[str, int]:
    """Check the URL's form and host name; return ``(host, port)`` or raise ``EndpointRefused``."""
    if len(url) > MAX_ENDPOINT_LENGTH:
        raise EndpointRefused(
            "endpoint_invalid", f"the endpoint is longer than {MAX_ENDPOINT_LENGTH} characters"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EndpointRefused("endpoint_invalid", "the endpoint is not a valid URL") from None
    host = (parts.hostname or "").rstrip(".").lower()
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        raise EndpointRefused(
            "endpoint_invalid", "the endpoint must be an absolute URL without credentials"
        )
    if parts.scheme == "https":
        default = 443
    elif parts.scheme == "http" and policy.allow_loopback:
        default = 80
    else:
        raise EndpointRefused("endpoint_refused", "the endpoint must be an https URL")
    if policy.allowed_hosts and not any(
        host == h or host.endswith("." + h) for h in policy.allowed_hosts
    ):
        raise EndpointRefused(
            "endpoint_refused", "the endpoint's host is not an allowed push service"
        )
    return host, port or default


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the system resolver, off the event loop)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_endpoint(
    url: str, policy: EndpointPolicy, resolve: Resolve = system_resolve, timeout: float = 5.0
) -> None:
    """Raise ``EndpointRefused`` unless every address ``url``'s host resolves to is allowed."""
    host, port = parse_endpoint(url, policy)
    try:
        async with asyncio.timeout(timeout):
            addresses = await resolve(host, port)
    except (OSError, TimeoutError):
        raise EndpointRefused(
            "endpoint_unresolvable", "the endpoint's host name does not resolve"
        ) from None
    if not addresses or not all(address_allowed(a, policy) for a in addresses):
        raise EndpointRefused(
            "endpoint_refused", "the endpoint's host resolves to a non-public address"
        )
