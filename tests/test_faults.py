"""Fault injection: the server recovers by itself from a killed engine, a stopped store,
a Redis restart and a client that never reads, and says what happened in one log line.

Real processes throughout: ``python -m chat_server`` children, the embedded engine,
redis-server started by the fixture, and raw sockets for the misbehaving client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from chat_server.settings import Settings
from chat_server.storage.embedded import EmbeddedMongo, free_port
from tests.conftest import RedisServer, serve
from tests.helpers import (
    ServerInfo,
    ServerProcess,
    WsClient,
    api,
    barrier,
    clean_env,
    close_code,
    fast_world,
    of_type,
    raw_ws,
    seeded_services,
    send_frame,
)

pytestmark = pytest.mark.slow


async def _ready(http: str, timeout: float) -> None:
    """Poll ``/readyz`` until 200, or fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(base_url=http, timeout=2.0) as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            assert loop.time() < deadline, f"{http} not ready within {timeout}s"
            await asyncio.sleep(0.1)


def _engine_pid(data_dir: Path) -> int:
    return int((data_dir / "mongo" / "engine.pid").read_text().strip())


def _tracebacks(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "Traceback" in ln]


async def test_killed_engine_is_restarted_and_its_store_stays_private(tmp_path: Path) -> None:
    """Point 1 and 6: SIGKILL of the engine, then of the engine and the server together."""
    env = clean_env(DATA_DIR=str(tmp_path), REQUIRE_E2EE="false")
    log = tmp_path / "server.log"
    # A stale pid file naming a live, unrelated process must not block the start.
    (tmp_path / "mongo").mkdir()
    (tmp_path / "mongo" / "engine.pid").write_text(str(os.getpid()))
    first = ServerProcess({**env, "PORT": str(free_port())}, log)
    again = ServerProcess({**env, "PORT": str(free_port())}, log)
    try:
        await first.start()
        # The store is private: no TCP port, a 0700 folder, 0600 files and socket.
        folder = tmp_path / "mongo"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for path in folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert (folder / "engine.sock").is_socket()
        engine = _engine_pid(tmp_path)
        tcp = await asyncio.to_thread(Path(f"/proc/{engine}/net/tcp").read_text)
        listening = [ln for ln in tcp.splitlines()[1:] if ln.split()[3] == "0A"]
        inodes = {os.readlink(f"/proc/{engine}/fd/{fd}") for fd in os.listdir(f"/proc/{engine}/fd")}
        assert not any(f"socket:[{ln.split()[9]}]" in inodes for ln in listening)

        # A second server on the same folder is refused, and the first keeps its engine.
        rival = ServerProcess({**env, "PORT": str(free_port())}, tmp_path / "rival.log")
        with pytest.raises(RuntimeError, match="server exited"):
            await rival.start()
        assert "in use by another server process" in rival.log()
        assert _engine_pid(tmp_path) == engine

        os.kill(engine, signal.SIGKILL)
        await _ready(first.http, 15)
        assert _engine_pid(tmp_path) != engine
        # The store answers again: a wrong password is a 401, not a 503.
        r = await api(first.info, "POST", "/api/login", json_body={"login": "x", "password": "y"})
        assert r.status_code == 401, r.text
        text = first.log()
        assert "embedded MongoDB engine exited" in text
        assert "embedded MongoDB engine restarted" in text

        # The engine and the server die together; the next start must not be refused.
        second_engine = _engine_pid(tmp_path)
        os.kill(second_engine, signal.SIGKILL)
        await first.kill()
        await again.start()
        await _ready(again.http, 5)
    finally:
        await first.kill()
        status = await again.terminate(timeout=15)
    assert status in (0, -signal.SIGTERM), again.log()
    assert _tracebacks(log.read_text()) == []


async def test_store_outage_refuses_sends_fast_and_service_comes_back(
    tmp_path: Path, db_name: str
) -> None:
    """Point 2: a stopped store gets store_unavailable (never an ack, never stored)."""
    store_dir = tmp_path / "store"
    engine = EmbeddedMongo(store_dir)
    await engine.start()
    url = engine.url + "?directConnection=true"
    env = clean_env(
        MONGODB_URL=url,
        MONGODB_DB=db_name,
        REQUIRE_E2EE="false",
        DATA_DIR=str(tmp_path),
        PORT=str(free_port()),
    )
    server = ServerProcess(env, tmp_path / "server.log")
    refused: list[dict[str, Any]] = []
    try:
        async with seeded_services(url, db_name) as svc:
            w = await fast_world(svc)
        conv = w.conv["b1"]
        await server.start()
        ben = await WsClient.connect(server.info, w.b1.token)
        assert (await ben.send_text(conv, "avant"))["seq"] == 1

        pid = engine.pid
        assert pid is not None
        # A frozen store (it accepts, never answers): the sender hears it, nothing is stored.
        os.kill(pid, signal.SIGSTOP)
        try:
            frame = send_frame(conv, "figé")
            await ben.send(frame)
            reply = await ben.expect("error", timeout=10, id=frame["id"])
            assert reply["code"] == "store_unavailable", reply
            refused.append(frame)
        finally:
            os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)
        for i in range(3):
            frame = send_frame(conv, f"pendant {i}")
            await ben.send(frame)
            reply = await ben.expect("error", timeout=10, id=frame["id"])
            assert reply["code"] == "store_unavailable", reply
            refused.append(frame)
        # A client connecting now hears why, with a close code, instead of a dropped socket.
        late = await raw_ws(server.info)
        await late.send(json.dumps({"type": "auth", "token": w.c1.token}))
        first = json.loads(await asyncio.wait_for(late.recv(), 10))
        assert (first["type"], first["code"]) == ("error", "store_unavailable")
        assert await close_code(late) == 1013
        # Liveness stays 200 and says degraded; readiness is 503.
        async with httpx.AsyncClient(base_url=server.http, timeout=5) as http:
            for _ in range(100):  # bounded: the heartbeat notices within a few seconds
                health = (await http.get("/healthz")).json()
                if health["status"] == "degraded":
                    break
                await asyncio.sleep(0.1)
            assert health == {"status": "degraded", "checks": {"store": False, "broker": True}}
            assert (await http.get("/readyz")).status_code == 503

        engine = EmbeddedMongo(store_dir)
        await engine.start()
        await _ready(server.http, 10)
        # Nothing refused was stored: the same client ids are new to the store.
        for frame in refused:
            ack = await ben.send_text(conv, "", client_id=frame["client_id"], body=frame["body"])
            assert ack["type"] == "ack", ack
            assert ack["duplicate"] is False
        assert of_type(await barrier(ben), "error") == []
        await ben.close()
    finally:
        await server.terminate()
        await engine.stop()
    assert _tracebacks(server.log()) == []


async def test_unconfirmed_append_is_stored_once_when_resent(tmp_path: Path) -> None:
    """Point 2: a write sent to a store that froze has an unknown outcome; resending the
    same message stores it once, whatever happened to the first attempt."""
    from chat_server.rooms.models import Conversation, NewMessage
    from chat_server.storage.mongo import MongoDatabase

    engine = EmbeddedMongo(tmp_path)
    await engine.start()
    db = MongoDatabase(engine.url, "t", direct=True, timeout=1.0)
    try:
        await db.create_indexes()
        store = db.messages()
        await store.add_conversation(Conversation("conv", "ben", "coun", None))
        first = NewMessage("conv", "m1", "ben", "d", "text", b"1", {})
        await store.append(first, 1.0)  # the next seq is now known without a read
        pid = engine.pid
        assert pid is not None
        second = NewMessage("conv", "m2", "ben", "d", "text", b"2", {})
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.append(second, 2.0), 1.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        stored, _ = await store.append(second, 3.0)
        again, created = await store.append(second, 4.0)
        assert (again.seq, created) == (stored.seq, False)
        page = await store.messages_after("conv", 0, 10)
        assert [(m.seq, m.client_id) for m in page] == [(1, "m1"), (2, "m2")]
    finally:
        await db.close()
        await engine.stop()


@pytest.mark.redis
async def test_redis_restart_delivers_what_was_acknowledged_meanwhile(
    mongo_url: str, db_name: str, tmp_path: Path, own_redis: RedisServer
) -> None:
    """Point 3: messages acked during the outage arrive without any later message;
    a disconnect during the outage leaves presence right; connecting gets a close code."""
    env = clean_env(
        MONGODB_URL=mongo_url,
        MONGODB_DB=db_name,
        REDIS_URL=own_redis.url,
        REQUIRE_E2EE="false",
        DATA_DIR=str(tmp_path),
    )
    a = ServerProcess({**env, "PORT": str(free_port())}, tmp_path / "a.log")
    b = ServerProcess({**env, "PORT": str(free_port())}, tmp_path / "b.log")
    async with seeded_services(mongo_url, db_name) as svc:
        w = await fast_world(svc)
    conv = w.conv["b1"]
    try:
        await a.start()
        await b.start()
        counsellor = await WsClient.connect(a.info, w.c1.token)
        ben = await WsClient.connect(b.info, w.b1.token)
        await counsellor.expect("presence", timeout=10, user=w.b1.user.id, online=True)

        own_redis.stop()
        acks = [await ben.send_text(conv, f"pendant la coupure {i}") for i in range(5)]
        assert [x["seq"] for x in acks] == [1, 2, 3, 4, 5]
        await ben.close()  # the beneficiary leaves during the outage
        late = await raw_ws(a.info)
        await late.send(json.dumps({"type": "auth", "token": w.c2.token}))
        assert await close_code(late, timeout=15) == 1013

        own_redis.start()
        got = [await counsellor.expect("message.created", timeout=15) for _ in range(5)]
        assert [g["message"]["seq"] for g in got] == [1, 2, 3, 4, 5]
        # The presence change published during the outage was lost: the catch-up says it.
        offline = await counsellor.expect("presence", timeout=15, user=w.b1.user.id)
        assert offline["online"] is False
        # Presence is the store's: the beneficiary is offline.
        r = await api(a.info, "GET", "/api/conversations", w.c1.token)
        summary = next(s for s in r.json()["conversations"] if s["id"] == conv)
        assert summary["peer_online"] is False
        await counsellor.close()
    finally:
        await a.terminate()
        await b.terminate()
    for proc in (a, b):
        assert _tracebacks(proc.log()) == [], proc.log()


def _ws_handshake(port: int) -> socket.socket:
    """A raw WebSocket connection with a tiny receive buffer (blocking, then never read)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _send_text(sock: socket.socket, text: str) -> None:
    data = text.encode()
    mask = secrets.token_bytes(4)
    header = bytes([0x81])
    n = len(data)
    header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def _server_side_open(server_port: int, client_port: int) -> bool:
    """Whether the server's end of the connection is still open (Linux ``/proc/net/tcp``)."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[1] == local and parts[2] == remote:
            return parts[3] not in ("06", "07")  # TIME_WAIT, CLOSE
    return False


async def test_never_reading_client_is_cut_off_within_the_heartbeat(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Point 4: the TCP connection ends, and no ERROR is logged for an expected close."""
    tuned = replace(
        settings,
        heartbeat_seconds=2.0,
        send_queue_size=8,
        max_frame_bytes=1 << 20,
        max_body_bytes=96 * 1024,
        rate_burst=100_000,
        rate_per_second=100_000,
    )
    async with serve(tuned) as server:
        w = await fast_world(server.services)
        port = server.settings.port
        sock = await asyncio.to_thread(_ws_handshake, port)
        client_port = sock.getsockname()[1]
        _send_text(sock, json.dumps({"type": "auth", "token": w.c1.token}))
        sender = await WsClient.connect(server, w.b1.token)
        body = "z" * (90 * 1024)
        loop = asyncio.get_running_loop()
        for i in range(120):  # bounded: far more than the queue and both buffers hold
            ack = await sender.send_text(w.conv["b1"], f"{i:04d}{body}")
            assert ack["type"] == "ack", ack
            if not _server_side_open(port, client_port):
                break
        deadline = loop.time() + tuned.heartbeat_seconds + 5
        while _server_side_open(port, client_port):
            assert loop.time() < deadline, "the server kept the connection open"
            await asyncio.sleep(0.1)
        await barrier(sender)  # the sender is unaffected
        await sender.close()
        sock.close()
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert errors == [], [r.getMessage() for r in errors]
    assert any("slow consumer" in r.getMessage() for r in caplog.records)


async def test_resume_sends_one_sync_per_conversation_while_messages_arrive(
    settings: Settings,
) -> None:
    """Point 5: a live message racing a resume far behind must not cause a second sync."""
    async with serve(replace(settings, resume_max_messages=3, rate_burst=10_000)) as server:
        w = await fast_world(server.services)
        conv = w.conv["b1"]
        writer = await WsClient.connect(server, w.c1.token)
        for i in range(10):
            await writer.send_text(conv, f"historique {i}")
        for attempt in range(8):  # bounded: each round races a send against a resume
            sending = asyncio.create_task(writer.send_text(conv, f"course {attempt}"))
            reader = await WsClient.connect(server, w.b1.token, resume={conv: 0})
            await sending
            frames = await barrier(reader)
            syncs = [f for f in of_type(frames, "sync") if f["conversation"] == conv]
            assert len(syncs) == 1, syncs
            await reader.close()
        await writer.close()


async def test_meta_out_of_range_never_fails_another_users_write(server: ServerInfo) -> None:
    """Point 11: a number BSON cannot hold is refused, and never fails a batch."""
    w = await fast_world(server.services)
    b = await WsClient.connect(server, w.b1.token)
    err = await b.send_text(w.conv["b1"], "", msg_type="attachment", meta={"size": 2**64})
    assert (err["type"], err["code"]) == ("error", "invalid_input"), err
    await b.close()
    # Below the validation (defence in depth): one unencodable document in a batch.
    from chat_server.rooms.models import NewMessage
    from chat_server.storage.base import StoreError

    store = server.services.messages

    def message(conv: str, meta: dict[str, Any]) -> NewMessage:
        return NewMessage(conv, secrets.token_hex(6), "x", "d", "attachment", b"b", meta)

    results = await asyncio.gather(
        store.append(message(w.conv["b1"], {"size": 2**64}), 1.0),
        *(store.append(message(w.conv[c], {"size": 1}), 1.0) for c in ("b2", "b3")),
        return_exceptions=True,
    )
    assert isinstance(results[0], StoreError)
    assert all(isinstance(r, tuple) and r[1] is True for r in results[1:]), results
    assert await store.last_seq(w.conv["b2"]) == 1


async def test_keepalive_and_close_never_log_an_asgi_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A revoked session's connection closes with 4001, whatever its writer was doing."""
    async with serve(settings) as server:
        w = await fast_world(server.services)
        c = await WsClient.connect(server, w.c1.token)
        await server.services.hub.revoke(w.c1.user.id, "*")
        assert await close_code(c.ws) == 4001
        with pytest.raises(websockets.ConnectionClosed):
            await c.send_text(w.conv["b1"], "trop tard")
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert errors == []
