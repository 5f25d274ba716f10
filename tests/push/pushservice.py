"""A push service written for the tests: RFC 8030 on loopback, with the checks a real one makes.

``TestPushService`` serves ``POST /push/<id>`` on a free loopback port. For
each request it checks the VAPID ``Authorization`` (RFC 8292: an ES256 JWT
whose signature verifies with the key ``k``, ``aud`` equal to this service's
origin, ``exp`` in the future and at most 24 h ahead, a ``sub``), the
``TTL``, ``Urgency`` and ``Topic`` headers and ``Content-Encoding:
aes128gcm``, then decrypts the body (RFC 8291) with the subscription's
private key and auth secret, in exactly one record. It answers with the next
status a test queued for that subscription (default 201), with
``Retry-After`` when asked. Every request is recorded (``deliveries``); a
request that fails a check is answered 400 and recorded in ``problems``.

``python -m tests.push.pushservice --port N`` serves it alone, in a process of
its own (``bench/push.py``), with two more routes to drive it from outside:
``POST /subscribe`` (a new device: the JSON a browser would register) and
``GET /deliveries`` (the accepted pushes: ``conversation``, ``seq``, ``at``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import http_ece
import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chat_server.storage.embedded import free_port


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Delivery:
    """One request the service received and accepted the checks of."""

    sub_id: str
    status: int
    headers: dict[str, str]
    payload: bytes
    claims: dict[str, Any]
    vapid_key: str
    at: float

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.payload)
        return data


@dataclass
class FakeDevice:
    """The browser side of a subscription: its keys, and the answers queued for it."""

    sub_id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    answers: deque[tuple[int, str | None]] = field(default_factory=deque)

    @property
    def p256dh(self) -> str:
        return b64u(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )


class TestPushService:
    """See the module docstring."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.port = free_port()
        self.devices: dict[str, FakeDevice] = {}
        self.deliveries: list[Delivery] = []
        self.problems: list[str] = []
        self.expected_vapid_key: str | None = None
        self.arrived = asyncio.Event()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def subscribe(self) -> tuple[FakeDevice, dict[str, Any]]:
        """A new subscription: the device, and the JSON a browser would register."""
        dev = FakeDevice(
            secrets.token_hex(8), ec.generate_private_key(ec.SECP256R1()), os.urandom(16)
        )
        self.devices[dev.sub_id] = dev
        info = {
            "endpoint": f"{self.origin}/push/{dev.sub_id}",
            "keys": {"p256dh": dev.p256dh, "auth": b64u(dev.auth)},
        }
        return dev, info

    def answer(self, dev: FakeDevice, status: int, retry_after: str | None = None) -> None:
        """Queue the status of the next request for ``dev``."""
        dev.answers.append((status, retry_after))

    def for_device(self, dev: FakeDevice, accepted_only: bool = True) -> list[Delivery]:
        return [
            d
            for d in self.deliveries
            if d.sub_id == dev.sub_id and (not accepted_only or 200 <= d.status < 300)
        ]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        """Wait until ``count`` requests were answered 2xx (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ok = [d for d in self.deliveries if 200 <= d.status < 300]
            if len(ok) >= count:
                return ok
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"{len(ok)} pushes of {count}; problems: {self.problems}")
            self.arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), min(left, 0.2))

    def _check_vapid(self, header: str) -> tuple[dict[str, Any], str]:
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError("Authorization is not 'vapid t=..., k=...'")
        parts = dict(p.strip().split("=", 1) for p in rest.split(","))
        token, key = parts["t"], parts["k"]
        head_b64, claims_b64, sig_b64 = token.split(".")
        head = json.loads(unb64u(head_b64))
        if head.get("alg") != "ES256":
            raise ValueError(f"JWT alg is {head.get('alg')}, not ES256")
        pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64u(key))
        sig = unb64u(sig_b64)
        if len(sig) != 64:
            raise ValueError("ES256 signature is not 64 bytes")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            pub.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise ValueError("VAPID signature does not verify") from None
        claims: dict[str, Any] = json.loads(unb64u(claims_b64))
        if claims.get("aud") != self.origin:
            raise ValueError(f"aud {claims.get('aud')!r} is not {self.origin!r}")
        now = time.time()
        if not now < claims.get("exp", 0) <= now + 86400:
            raise ValueError("exp is not within the next 24 hours")
        if not claims.get("sub"):
            raise ValueError("no sub claim")
        if self.expected_vapid_key is not None and key != self.expected_vapid_key:
            raise ValueError("signed with another VAPID key than the server's")
        return claims, key

    async def _push(self, request: Request) -> Response:
        sub_id = request.path_params["sub_id"]
        dev = self.devices.get(sub_id)
        body = await request.body()
        if dev is None:
            return Response(status_code=404)
        try:
            claims, key = self._check_vapid(request.headers.get("authorization", ""))
            if request.headers.get("content-encoding") != "aes128gcm":
                raise ValueError("Content-Encoding is not aes128gcm")
            ttl = request.headers.get("ttl", "")
            if not ttl.isdigit() or int(ttl) < 1:
                raise ValueError(f"TTL {ttl!r} is not a positive number")
            if request.headers.get("urgency") not in ("very-low", "low", "normal", "high"):
                raise ValueError("no valid Urgency")
            topic = request.headers.get("topic")
            if topic is not None and (
                len(topic) > 32 or not all(c.isalnum() or c in "-_" for c in topic)
            ):
                raise ValueError("Topic is not at most 32 base64url characters")
            rs = int.from_bytes(body[16:20], "big")
            idlen = body[20]
            if len(body) - 21 - idlen > rs:
                raise ValueError("the payload has more than one record (RFC 8291 forbids it)")
            if len(body) > 4096:
                raise ValueError("the body is larger than 4096 bytes")
            plain = http_ece.decrypt(
                body, private_key=dev.private_key, auth_secret=dev.auth, version="aes128gcm"
            )
        except Exception as exc:
            self.problems.append(f"{sub_id}: {exc}")
            return Response(str(exc), status_code=400)
        status, retry_after = dev.answers.popleft() if dev.answers else (201, None)
        self.deliveries.append(
            Delivery(sub_id, status, dict(request.headers), plain, claims, key, time.time())
        )
        self.arrived.set()
        headers = {"retry-after": retry_after} if retry_after else {}
        if status == 201:
            headers["location"] = f"{self.origin}/message/{secrets.token_hex(6)}"
        return Response(status_code=status, headers=headers)

    async def _subscribe_remote(self, request: Request) -> Response:
        _dev, info = self.subscribe()
        return JSONResponse(info)

    async def _deliveries(self, request: Request) -> Response:
        out = []
        for d in self.deliveries:
            if 200 <= d.status < 300:
                data = d.json()
                out.append(
                    {"conversation": data.get("conversation"), "seq": data.get("seq"), "at": d.at}
                )
        return JSONResponse({"accepted": out, "problems": self.problems})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/push/{sub_id}", self._push, methods=["POST"]),
                Route("/subscribe", self._subscribe_remote, methods=["POST"]),
                Route("/deliveries", self._deliveries, methods=["GET"]),
            ]
        )


@asynccontextmanager
async def running_push_service() -> AsyncIterator[TestPushService]:
    """A ``TestPushService`` served by uvicorn in this event loop."""
    svc = TestPushService()
    config = uvicorn.Config(
        svc.app(), host="127.0.0.1", port=svc.port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not server.started:
        if task.done():
            task.result()
        if loop.time() > deadline:
            raise RuntimeError("push service did not start")
        await asyncio.sleep(0.02)
    try:
        yield svc
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def main() -> None:
    """Serve a ``TestPushService`` alone on ``127.0.0.1:--port`` until SIGTERM."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.push.pushservice")
    ap.add_argument("--port", type=int, required=True)
    port = ap.parse_args().port
    svc = TestPushService()
    svc.port = port
    uvicorn.run(svc.app(), host="127.0.0.1", port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
