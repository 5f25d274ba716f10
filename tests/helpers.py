"""Test helpers: a real WebSocket client, an HTTP client, and seeded accounts."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from starlette.applications import Starlette

from chat_server.rooms.models import Role, User
from chat_server.services import Services
from chat_server.settings import Settings

PASSWORD = "correct horse battery"


@dataclass
class ServerInfo:
    """Where a test server listens, and its app (for direct access to its services)."""

    http: str
    ws: str
    settings: Settings
    app: Starlette | None = None

    @property
    def services(self) -> Services:
        assert self.app is not None
        svc: Services = self.app.state.services
        return svc


@dataclass
class Account:
    """A seeded user with a session token."""

    user: User
    token: str
    device_id: str


@dataclass
class World:
    """A structure with two counsellors, a supervisor, an admin and three beneficiaries."""

    structure_id: str
    other_structure_id: str
    c1: Account
    c2: Account
    sup: Account
    other_sup: Account
    b1: Account
    b2: Account
    b3: Account
    conv: dict[str, str] = field(default_factory=dict)


async def login(server: ServerInfo, login_name: str, password: str = PASSWORD) -> Account:
    """Log in over HTTP."""
    async with httpx.AsyncClient(base_url=server.http) as http:
        r = await http.post("/api/login", json={"login": login_name, "password": password})
        r.raise_for_status()
        data = r.json()
    svc = server.services
    user = await svc.accounts_store.get_user(data["user"]["id"])
    assert user is not None
    return Account(user, data["token"], data["device_id"])


async def seed_world(server: ServerInfo) -> World:
    """Create the accounts of ``World`` through the services, log each in over HTTP."""
    acc = server.services.accounts
    st = await acc.create_structure("Mission Locale Test", "mission_locale", ("CEJ",))
    other = await acc.create_structure("Agence Autre", "france_travail", ("AIJ",))
    c1 = await acc.create_user(Role.COUNSELLOR, "c1", "Claire Un", st.id, PASSWORD)
    c2 = await acc.create_user(Role.COUNSELLOR, "c2", "Cédric Deux", st.id, PASSWORD)
    await acc.create_user(Role.SUPERVISOR, "sup", "Sophie Sup", st.id, PASSWORD)
    await acc.create_user(Role.SUPERVISOR, "osup", "Omar Sup", other.id, PASSWORD)
    conv: dict[str, str] = {}
    for name, counsellor in (("b1", c1), ("b2", c1), ("b3", c2)):
        nb = await acc.create_beneficiary(counsellor, name, name.upper(), "CEJ")
        await acc.set_password(nb.user.id, PASSWORD)
        conv[name] = nb.conversation.id
    w = World(
        st.id,
        other.id,
        await login(server, "c1"),
        await login(server, "c2"),
        await login(server, "sup"),
        await login(server, "osup"),
        await login(server, "b1"),
        await login(server, "b2"),
        await login(server, "b3"),
        conv,
    )
    return w


class WsClient:
    """A real WebSocket client speaking the protocol, with a frame buffer."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.buffer: list[dict[str, Any]] = []
        self.auth: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls,
        server: ServerInfo,
        token: str,
        resume: dict[str, int] | None = None,
        origin: str | None = None,
    ) -> WsClient:
        """Open, authenticate, and wait for ``auth.ok``."""
        headers = {"Origin": origin} if origin else None
        ws = await websockets.connect(server.ws, additional_headers=headers, max_size=2**22)
        c = cls(ws)
        await c.send({"type": "auth", "token": token, "resume": resume or {}})
        c.auth = await c.expect("auth.ok")
        return c

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.buffer:
            return self.buffer.pop(0)
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame: dict[str, Any] = json.loads(raw)
        return frame

    async def expect(self, ftype: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """Return the first frame of ``ftype`` (matching ``match``); keep the others buffered."""
        for i, f in enumerate(self.buffer):
            if f.get("type") == ftype and all(f.get(k) == v for k, v in match.items()):
                return self.buffer.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {ftype} frame within {timeout}s; buffered: {self.buffer}")
            raw = await asyncio.wait_for(self.ws.recv(), left)
            f = json.loads(raw)
            if f.get("type") == ftype and all(f.get(k) == v for k, v in match.items()):
                return dict(f)
            self.buffer.append(f)

    async def nothing(self, ftype: str, wait: float = 0.3) -> None:
        """Assert that no frame of ``ftype`` arrives within ``wait`` seconds."""
        try:
            f = await self.expect(ftype, timeout=wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {ftype}: {f}")

    async def send_text(
        self, conv: str, text: str, client_id: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Send a ``text`` message with an opaque body and wait for its ack or error."""
        fid = secrets.token_hex(4)
        frame: dict[str, Any] = {
            "type": "message.send",
            "id": fid,
            "conversation": conv,
            "client_id": client_id or secrets.token_hex(8),
            "msg_type": "text",
            "body": base64.b64encode(text.encode()).decode(),
        }
        frame.update(extra)
        await self.send(frame)
        while True:
            f = await self.recv()
            if f.get("id") == fid and f["type"] in ("ack", "error"):
                return f
            self.buffer.append(f)

    async def close(self) -> None:
        await self.ws.close()


def body_text(frame: dict[str, Any]) -> str:
    """Decode the opaque body of a ``message.created`` frame (core tests use plain bytes)."""
    return base64.b64decode(frame["message"]["body"]).decode()
