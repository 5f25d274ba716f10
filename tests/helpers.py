"""Test helpers: a real WebSocket client, an HTTP client, and seeded accounts."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
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

    async def read(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame from the socket, ignoring the buffer."""
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
        # The reply cannot be buffered yet (its id is new): read the socket, buffer the rest.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.0, deadline - loop.time()))
            f: dict[str, Any] = json.loads(raw)
            if f.get("id") == fid and f["type"] in ("ack", "error"):
                return f
            self.buffer.append(f)

    async def close(self) -> None:
        await self.ws.close()


def body_text(frame: dict[str, Any]) -> str:
    """Decode the opaque body of a ``message.created`` frame (core tests use plain bytes)."""
    return base64.b64decode(frame["message"]["body"]).decode()


# ---------------------------------------------------------------- added for the core suite


async def open_session(svc: Services, user: User, device_id: str | None = None) -> Account:
    """A session for ``user`` written through the account store (no password round trip).

    The HTTP login itself is tested in ``test_accounts.py``; everywhere else this keeps
    tests fast (argon2id costs ~50 ms per hash by design).
    """
    from chat_server.crypto.tokens import new_id, new_token, token_hash
    from chat_server.rooms.models import Session

    token = new_token()
    device = device_id or new_id()
    now = time.time()
    session = Session(token_hash(token), user.id, device, now, now + 3600)
    await svc.accounts_store.add_session(session)
    return Account(user, token, device)


async def fast_world(svc: Services) -> World:
    """The accounts of ``World``, created through ``AccountService`` without passwords."""
    acc = svc.accounts
    st = await acc.create_structure("Mission Locale Test", "mission_locale", ("CEJ",))
    other = await acc.create_structure("Agence Autre", "france_travail", ("AIJ",))
    c1 = await acc.create_user(Role.COUNSELLOR, "c1", "Claire Un", st.id)
    c2 = await acc.create_user(Role.COUNSELLOR, "c2", "Cédric Deux", st.id)
    sup = await acc.create_user(Role.SUPERVISOR, "sup", "Sophie Sup", st.id)
    osup = await acc.create_user(Role.SUPERVISOR, "osup", "Omar Sup", other.id)
    conv: dict[str, str] = {}
    bens: dict[str, User] = {}
    for name, counsellor in (("b1", c1), ("b2", c1), ("b3", c2)):
        nb = await acc.create_beneficiary(counsellor, name, name.upper(), "CEJ")
        conv[name] = nb.conversation.id
        bens[name] = nb.user
    return World(
        st.id,
        other.id,
        await open_session(svc, c1),
        await open_session(svc, c2),
        await open_session(svc, sup),
        await open_session(svc, osup),
        await open_session(svc, bens["b1"]),
        await open_session(svc, bens["b2"]),
        await open_session(svc, bens["b3"]),
        conv,
    )


def b64(text: str | bytes) -> str:
    """Standard base64 of a text or bytes, as frames carry ``body``/``nonce``/``sig``."""
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def send_frame(conv: str, text: str, client_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ``message.send`` frame for a ``text`` message (its ``id`` is random)."""
    frame: dict[str, Any] = {
        "type": "message.send",
        "id": secrets.token_hex(4),
        "conversation": conv,
        "client_id": client_id or secrets.token_hex(8),
        "msg_type": "text",
        "body": b64(text),
    }
    frame.update(extra)
    return frame


async def raw_ws(
    server: ServerInfo, origin: str | None = None, path: str = "", **kwargs: Any
) -> websockets.ClientConnection:
    """A bare WebSocket connection to the server (nothing sent yet)."""
    headers = {"Origin": origin} if origin else None
    return await websockets.connect(
        server.ws + path, additional_headers=headers, max_size=2**24, **kwargs
    )


async def close_code(ws: websockets.ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the server closes the connection; return the close code it sent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError("the server did not close the connection")
        try:
            await asyncio.wait_for(ws.recv(), left)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it holds, or fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def api(
    server: ServerInfo,
    method: str,
    path: str,
    token: str | None = None,
    json_body: Any = None,
    content: bytes | None = None,
) -> httpx.Response:
    """One HTTP request to the server's API."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=server.http) as http:
        return await http.request(method, path, headers=headers, json=json_body, content=content)


async def dump_database(url: str, db_name: str) -> str:
    """Every document of every collection of ``db_name``, as one repr string (for searches)."""
    from chat_server.storage.mongo import MongoDatabase

    db = MongoDatabase(url, db_name)
    try:
        parts: list[str] = []
        for name in await db.db.list_collection_names():
            async for doc in db.collection(name).find():
                parts.append(repr(doc))
        return "\n".join(parts)
    finally:
        await db.close()


CONFIG_VARS = (
    "HOST",
    "PORT",
    "STORE",
    "MONGODB_URL",
    "MONGODB_DB",
    "DATA_DIR",
    "REDIS_URL",
    "ALLOWED_ORIGINS",
    "MAX_FRAME_BYTES",
    "MAX_BODY_BYTES",
    "RATE_PER_SECOND",
    "RATE_BURST",
    "SEND_QUEUE_SIZE",
    "HEARTBEAT_SECONDS",
    "AUTH_TIMEOUT_SECONDS",
    "SESSION_TTL_DAYS",
    "ACTIVATION_TTL_HOURS",
    "LOGIN_MAX_FAILURES",
    "LOGIN_WINDOW_SECONDS",
    "RESUME_MAX_MESSAGES",
    "REQUIRE_E2EE",
    "LOG_LEVEL",
    "STORE_TIMEOUT_SECONDS",
    "TRUSTED_PROXIES",
    "ADDRESS_MAX_FAILURES",
    "PASSWORD_HASH_CONCURRENCY",
    "PASSWORD_HASH_QUEUE",
    "MAX_CONNECTIONS_PER_USER",
    "HANDSHAKE_TIMEOUT_SECONDS",
    "SESSION_RECHECK_SECONDS",
)


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any server configuration, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    env.update(overrides)
    return env


REPO_ROOT = str(Path(__file__).resolve().parent.parent)


class ServerProcess:
    """``python -m <module>`` in a child process; its stderr goes to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, module: str = "chat_server") -> None:
        self.env = env
        self.log_path = log_path
        self.module = module
        self.proc: asyncio.subprocess.Process | None = None
        self.port = int(env["PORT"])
        self.http = f"http://127.0.0.1:{self.port}"
        self.info = ServerInfo(self.http, f"ws://127.0.0.1:{self.port}/ws", Settings())

    async def start(self, timeout: float = 30.0) -> None:
        """Spawn and wait until ``/readyz`` answers 200 (poll with a deadline)."""
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                env=self.env,
                stdout=log,
                stderr=log,
                cwd=REPO_ROOT,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(base_url=self.http, timeout=2.0) as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
                try:
                    r = await http.get("/readyz")
                    if r.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if loop.time() > deadline:
                    raise RuntimeError(f"server not ready in {timeout}s: {self.log()}")
                await asyncio.sleep(0.05)

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit status."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
        return proc.returncode if proc.returncode is not None else 0

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()


async def barrier(client: WsClient, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Ping and wait for the pong; return (and clear) every frame buffered before it.

    A connection's frames leave in order, so whatever the server had queued for this
    connection before the ping is in the returned list.
    """
    fid = "b" + secrets.token_hex(4)
    await client.send({"type": "ping", "id": fid})
    await client.expect("pong", timeout=timeout, id=fid)
    frames, client.buffer = client.buffer, []
    return frames


def of_type(frames: list[dict[str, Any]], ftype: str) -> list[dict[str, Any]]:
    """The frames of one type."""
    return [f for f in frames if f.get("type") == ftype]


@contextlib.asynccontextmanager
async def seeded_services(mongo_url: str, db_name: str) -> AsyncIterator[Services]:
    """Services on the same store as child-process servers, to seed accounts directly."""
    from chat_server.services import build_services

    svc = await build_services(
        Settings(mongodb_url=mongo_url, mongodb_db=db_name, require_e2ee=False)
    )
    try:
        yield svc
    finally:
        await svc.close()
