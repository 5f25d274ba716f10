"""Abuse: throttling that locks nobody out, nesting, expiry, connection and handshake caps,
accounts outside any structure. Each test is named after the failure it prevents."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from dataclasses import replace

import httpx
import pytest

from chat_server.crypto.tokens import new_token, token_hash
from chat_server.rooms.errors import InvalidInput
from chat_server.rooms.models import Conversation, Device, Role, Session, User
from chat_server.settings import Settings
from tests.conftest import serve
from tests.helpers import (
    PASSWORD,
    ServerInfo,
    WsClient,
    api,
    barrier,
    close_code,
    dump_database,
    fast_world,
    open_session,
    raw_ws,
)

NESTED = "[" * 4000 + "]" * 4000


async def _login(
    server: ServerInfo,
    name: str,
    password: str,
    device: str | None = None,
    forwarded: str | None = None,
) -> httpx.Response:
    body: dict[str, str] = {"login": name, "password": password}
    if device is not None:
        body["device_id"] = device
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    async with httpx.AsyncClient(base_url=server.http) as http:
        return await http.post("/api/login", json=body, headers=headers)


async def _owner(server: ServerInfo, login: str) -> User:
    acc = server.services.accounts
    st = await acc.create_structure("ML " + login, "mission_locale", ("CEJ",))
    return await acc.create_user(Role.COUNSELLOR, login, "Owner", st.id, PASSWORD)


async def _register_device(server: ServerInfo, user: User, device_id: str) -> None:
    device = Device(device_id, user.id, b"\x01" * 32, b"\x02" * 32, b"\x03" * 64, time.time())
    await server.services.key_store.add_device(device)


async def test_deeply_nested_json_is_refused_without_a_traceback(
    server: ServerInfo, caplog: pytest.LogCaptureFixture
) -> None:
    w = await fast_world(server.services)
    anonymous = await raw_ws(server)
    await anonymous.send(NESTED)
    err = json.loads(await asyncio.wait_for(anonymous.recv(), 5))
    assert (err["type"], err["code"]) == ("error", "malformed_json")
    assert await close_code(anonymous) == 4001
    c = await WsClient.connect(server, w.c1.token)
    await c.ws.send(NESTED)
    err = await c.read()
    assert (err["type"], err["code"]) == ("error", "malformed_json")
    await barrier(c)  # still open and serving
    await c.close()
    path = f"/api/conversations/{w.conv['b1']}/read"
    r = await api(server, "POST", path, w.c1.token, content=NESTED.encode())
    assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_json")
    assert not [rec for rec in caplog.records if rec.exc_info]


async def test_spraying_a_login_never_locks_its_owner_out_of_a_known_device(
    settings: Settings,
) -> None:
    async with serve(replace(settings, login_max_failures=3, address_max_failures=1000)) as srv:
        owner = await _owner(srv, "claire")
        await _register_device(srv, owner, "phone-1")
        statuses = [(await _login(srv, "claire", "not the one")).status_code for _ in range(6)]
        assert statuses == [401, 401, 401, 429, 429, 429]
        # A new device is refused for the window; the owner's own device is not.
        assert (await _login(srv, "claire", PASSWORD)).status_code == 429
        r = await _login(srv, "claire", PASSWORD, device="phone-1")
        assert r.status_code == 200, r.text
        # The known device's own failures only slow it down (a growing wait, then 200).
        for _ in range(3):
            assert (await _login(srv, "claire", "wrong!", device="phone-1")).status_code == 401
        r = await _login(srv, "claire", PASSWORD, device="phone-1")
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) <= 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while r.status_code == 429:  # bounded: the backoff is 1 s here
            assert loop.time() < deadline
            await asyncio.sleep(0.25)
            r = await _login(srv, "claire", PASSWORD, device="phone-1")
        assert r.status_code == 200


async def test_password_spraying_across_logins_is_stopped_per_address(
    settings: Settings,
) -> None:
    async with serve(replace(settings, address_max_failures=4)) as srv:
        await _owner(srv, "victim")
        for i in range(4):
            assert (await _login(srv, f"user{i}", "Password123!")).status_code == 401
        r = await _login(srv, "victim", "Password123!")
        assert r.status_code == 429
        assert "retry-after" in r.headers
        # Without TRUSTED_PROXIES a client-chosen X-Forwarded-For changes nothing.
        assert (await _login(srv, "user9", "x" * 12, forwarded="203.0.113.7")).status_code == 429
    trusted = replace(settings, address_max_failures=4, trusted_proxies=("127.0.0.1",))
    async with serve(trusted) as srv:
        for i in range(4):
            r = await _login(srv, f"user{i}", "Password123!", forwarded="203.0.113.7")
            assert r.status_code == 401
        assert (await _login(srv, "u", "x" * 12, forwarded="203.0.113.7")).status_code == 429
        # Behind a trusted proxy each client has its own counter.
        assert (await _login(srv, "u", "x" * 12, forwarded="198.51.100.2")).status_code == 401


async def test_parallel_wrong_activation_codes_never_exceed_the_limit(
    settings: Settings,
) -> None:
    async with serve(replace(settings, address_max_failures=5)) as srv:
        async with httpx.AsyncClient(base_url=srv.http) as http:
            body = {"code": "AAAA-BBBB-CCCC", "password": "Un mot de passe solide"}
            replies = await asyncio.gather(
                *(http.post("/api/activate", json=body) for _ in range(30))
            )
        statuses = sorted(r.status_code for r in replies)
        assert statuses.count(401) == 5, statuses
        assert statuses.count(429) == 25, statuses


async def test_throttling_keeps_no_typed_login_or_address(server: ServerInfo) -> None:
    typed = "MonMotDePasse-" + secrets.token_hex(4)
    assert (await _login(server, typed, "whatever pw")).status_code == 401
    dump = await dump_database(server.settings.mongodb_url or "", server.settings.mongodb_db)
    assert "login_failures" in dump or "address:" in dump
    assert typed not in dump
    assert typed.lower() not in dump
    assert "127.0.0.1" not in dump
    store = server.services.accounts_store
    window = server.settings.login_window_seconds
    assert await store.purge_login_failures(time.time() + window + 1, window) >= 2
    dump = await dump_database(server.settings.mongodb_url or "", server.settings.mongodb_db)
    assert "address:" not in dump


async def test_login_flood_is_refused_fast_instead_of_starving_the_server(
    settings: Settings,
) -> None:
    tuned = replace(
        settings, password_hash_concurrency=1, password_hash_queue=2, address_max_failures=1000
    )
    async with serve(tuned) as srv, httpx.AsyncClient(base_url=srv.http, timeout=60) as http:
        body = {"login": "ghost", "password": "x" * 12}
        flood = [asyncio.create_task(http.post("/api/login", json=body)) for _ in range(30)]
        health = await http.get("/healthz")
        replies = await asyncio.gather(*flood)
    assert health.status_code == 200
    codes = [r.json()["error"]["code"] for r in replies]
    assert "busy" in codes
    busy = next(r for r in replies if r.json()["error"]["code"] == "busy")
    assert busy.status_code == 503
    assert "retry-after" in busy.headers


async def test_idle_socket_is_closed_when_its_session_expires(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    token = new_token()
    now = time.time()
    session = Session(token_hash(token), w.b1.user.id, "phone", now, now + 1.0)
    await server.services.accounts_store.add_session(session)
    c = await WsClient.connect(server, token)
    try:
        await asyncio.wait_for(c.ws.wait_closed(), 10)
    finally:
        await c.close()
    assert c.ws.close_code == 4001
    assert c.ws.close_reason == "session_expired"


async def test_idle_socket_is_closed_when_its_session_is_deleted_without_the_broker(
    settings: Settings,
) -> None:
    async with serve(replace(settings, session_recheck_seconds=1.0)) as srv:
        w = await fast_world(srv.services)
        c = await WsClient.connect(srv, w.b1.token)
        # Deleted in the store only: no revocation travels through the broker.
        await srv.services.accounts_store.delete_session(token_hash(w.b1.token))
        await asyncio.wait_for(c.ws.wait_closed(), 10)
        assert (c.ws.close_code, c.ws.close_reason) == (4001, "session_revoked")


async def test_one_account_cannot_hold_unbounded_connections(settings: Settings) -> None:
    async with serve(replace(settings, max_connections_per_user=2)) as srv:
        w = await fast_world(srv.services)
        first = await WsClient.connect(srv, w.b1.token)
        second = await WsClient.connect(srv, w.b1.token)
        third = await raw_ws(srv)
        await third.send(json.dumps({"type": "auth", "token": w.b1.token}))
        err = json.loads(await asyncio.wait_for(third.recv(), 5))
        assert (err["type"], err["code"]) == ("error", "too_many_connections")
        assert await close_code(third) == 1008
        # Another account is not affected; a closed connection frees its place.
        other = await WsClient.connect(srv, w.c1.token)
        await first.close()
        again: WsClient | None = None
        for _ in range(50):  # bounded: the server notices the close within a moment
            try:
                again = await WsClient.connect(srv, w.b1.token)
                break
            except TimeoutError:
                await asyncio.sleep(0.1)
        assert again is not None
        for c in (second, other, again):
            await c.close()


def _half_open(port: int, partial: bytes) -> bytes:
    """Send ``partial`` and read until the server ends the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(partial)
        try:
            return sock.recv(1024)
        except ConnectionResetError:
            return b""


async def test_half_open_requests_are_dropped_after_the_handshake_timeout(
    settings: Settings,
) -> None:
    async with serve(replace(settings, handshake_timeout_seconds=1.0)) as srv:
        port = srv.settings.port
        for partial in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"GET /ws HTTP/1.1\r\n"):
            # recv() returns (b"" or a reset) only once the server drops the connection;
            # its own 10 s timeout would raise instead.
            assert await asyncio.to_thread(_half_open, port, partial) == b""
        async with httpx.AsyncClient(base_url=srv.http) as http:
            assert (await http.get("/healthz")).status_code == 200


async def test_supervisor_without_a_structure_cannot_transfer_or_be_created(
    server: ServerInfo,
) -> None:
    svc = server.services
    with pytest.raises(InvalidInput):
        await svc.accounts.create_user(Role.SUPERVISOR, "nosup", "Sans Structure", None)
    with pytest.raises(InvalidInput):
        await svc.accounts.create_user(Role.COUNSELLOR, "nocoun", "Sans Structure", None)
    # Accounts written before this rule: a supervisor and a conversation without one.
    now = time.time()
    sup = User(secrets.token_hex(8), Role.SUPERVISOR, "oldsup", "Old", None, None, None, now)
    coun = User(secrets.token_hex(8), Role.COUNSELLOR, "oldcoun", "Old", None, None, None, now)
    ben = User(secrets.token_hex(8), Role.BENEFICIARY, "oldben", "Old", None, None, None, now)
    for u in (sup, coun, ben):
        await svc.accounts_store.add_user(u)
    conv = Conversation(secrets.token_hex(8), ben.id, coun.id, None, created_at=now, last_at=now)
    await svc.messages.add_conversation(conv)
    s = await open_session(svc, sup)
    r = await api(
        server, "POST", f"/api/conversations/{conv.id}/transfer", s.token, {"mode": "take_back"}
    )
    assert r.status_code in (403, 404), r.text
    stored = await svc.messages.get_conversation(conv.id)
    assert stored is not None
    assert stored.counsellor_id == coun.id
