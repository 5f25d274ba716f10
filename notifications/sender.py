"""``PushSender``: hands one encrypted payload to a push service. The only module that imports
``pywebpush`` (and ``aiohttp`` for its session).

``WebPushSender`` uses pywebpush's asynchronous API (``WebPusher.send_async``)
with the project's own choices where pywebpush 2.5's defaults differ:

- ``aes128gcm`` (RFC 8291) in one record: callers never pass more than
  ``MAX_PAYLOAD`` bytes (``send`` refuses), because pywebpush would split a
  larger payload into several records, which RFC 8291 forbids;
- ``TTL``, ``Urgency`` and ``Topic`` are always set (pywebpush sends ``TTL: 0``
  and neither of the others);
- a fresh claims dict per push (``aud`` is the endpoint's origin, ``exp`` 12 h
  ahead), signed here: pywebpush's ``webpush()`` writes into the dict it is given;
- a request timeout, no redirects followed, the answer's body read up to
  ``MAX_ANSWER_BYTES``, and a resolver that refuses non-public addresses at
  connection time (``notifications.endpoint``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from py_vapid import Vapid02
from pywebpush import WebPusher

from notifications.endpoint import EndpointPolicy, address_allowed

#: Largest plaintext that fits one aes128gcm record in a 4096-byte push message
#: (4096 - 86 bytes of header - 16 of tag - 1 delimiter).
MAX_PAYLOAD = 3993
MAX_ANSWER_BYTES = 4096
VAPID_LIFETIME = 12 * 3600


@dataclass(frozen=True, slots=True)
class PushRequest:
    """One push: where, to which keys, what, and how the push service should treat it."""

    endpoint: str
    p256dh: str
    auth: str
    payload: bytes
    ttl: int
    urgency: str  # very-low, low, normal, high
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class PushResult:
    """The push service's answer. ``status`` 0: no answer (network error, timeout, refused
    address); ``retry_after`` in seconds when the service gave one."""

    status: int
    retry_after: float | None = None
    error: str | None = None


class PushSender(Protocol):
    """Hands encrypted payloads to push services."""

    async def send(self, request: PushRequest) -> PushResult:
        """Encrypt ``request.payload`` for the subscription and POST it once; never raises for
        a refusal or a network failure (they come back as a ``PushResult``)."""

    async def close(self) -> None:
        """Release connections."""


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - now)


class PolicyResolver(AbstractResolver):
    """Resolves like the system, then refuses addresses the endpoint policy forbids."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self._policy = policy
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if address_allowed(r["host"], self._policy)]
        if not allowed:
            raise OSError(f"{host} resolves to no public address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass(slots=True)
class _Answer:
    """What pywebpush reads of a response (``status``, ``reason``, ``text()``), bounded."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    async def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _BoundedSession:
    """The ``aiohttp_session`` handed to pywebpush: no redirects, a bounded answer."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def post(self, url: str, **kwargs: Any) -> _Answer:
        async with self._session.post(url, allow_redirects=False, **kwargs) as resp:
            body = await resp.content.read(MAX_ANSWER_BYTES)
            return _Answer(resp.status, resp.reason or "", dict(resp.headers), body)


class WebPushSender:
    """``PushSender`` over the network with pywebpush (see the module docstring)."""

    def __init__(
        self,
        vapid_private: Any,
        subject: str,
        policy: EndpointPolicy,
        timeout: float = 10.0,
        connections: int = 64,
    ) -> None:
        self._vapid = Vapid02(private_key=vapid_private)
        self._subject = subject
        self._policy = policy
        self._timeout = timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=PolicyResolver(self._policy), limit=self._connections
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def vapid_headers(self, endpoint: str, now: float) -> dict[str, str]:
        """A new ``Authorization: vapid t=..., k=...`` for this endpoint's push service."""
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(now) + VAPID_LIFETIME,
            "sub": self._subject,
        }
        headers: dict[str, str] = self._vapid.sign(claims)
        return headers

    async def send(self, request: PushRequest) -> PushResult:
        if len(request.payload) > MAX_PAYLOAD:
            raise ValueError(f"a push payload is at most {MAX_PAYLOAD} bytes (one record)")
        now = time.time()
        headers: dict[str, str] = {
            **self.vapid_headers(request.endpoint, now),
            "Urgency": request.urgency,
        }
        if request.topic:
            headers["Topic"] = request.topic
        pusher = WebPusher(
            {
                "endpoint": request.endpoint,
                "keys": {"p256dh": request.p256dh, "auth": request.auth},
            },
            aiohttp_session=_BoundedSession(self._http()),
        )
        try:
            answer = await pusher.send_async(
                request.payload,
                headers,
                ttl=max(1, request.ttl),
                content_encoding="aes128gcm",
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return PushResult(0, None, type(exc).__name__)
        if not isinstance(answer, _Answer):  # pywebpush returns what our session gave it
            return PushResult(0, None, "unexpected answer")
        retry = parse_retry_after(answer.headers.get("Retry-After"), time.time())
        return PushResult(answer.status, retry, None if answer.status < 300 else answer.reason)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
