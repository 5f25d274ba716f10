"""Durability: what was acknowledged survives a SIGKILL; the embedded default starts and stops.

These tests run the real ``python -m chat_server`` in child processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
from pathlib import Path

import httpx
import pytest

from chat_server.storage.embedded import free_port
from tests.helpers import (
    ServerProcess,
    WsClient,
    clean_env,
    close_code,
    fast_world,
    raw_ws,
    seeded_services,
    send_frame,
)

pytestmark = pytest.mark.slow


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().split()[2] != "Z"
    return True


async def test_acknowledged_messages_survive_sigkill(
    mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    env = clean_env(
        MONGODB_URL=mongo_url,
        MONGODB_DB=db_name,
        REQUIRE_E2EE="false",
        DATA_DIR=str(tmp_path),
        RATE_BURST="1000",
        LOG_LEVEL="DEBUG",
    )
    log = tmp_path / "server.log"
    first = ServerProcess({**env, "PORT": str(free_port())}, log)
    second = ServerProcess({**env, "PORT": str(free_port())}, log)
    bodies = [f"secret body {i} {secrets.token_hex(8)}" for i in range(100)]
    async with seeded_services(mongo_url, db_name) as svc:
        w = await fast_world(svc)
        conv = w.conv["b1"]
        try:
            await first.start()
            # A token in the URL is not accepted, and must not reach the logs either.
            bad = await raw_ws(first.info, path=f"?token={w.c1.token}")
            await bad.send(json.dumps({"type": "ping"}))
            assert await close_code(bad) == 4001
            client = await WsClient.connect(first.info, w.b1.token)
            frames = [send_frame(conv, body) for body in bodies]
            # Pipelined: every frame is on the wire before the first ack is read.
            await asyncio.gather(*(client.send(f) for f in frames))
            acks: dict[str, dict[str, object]] = {}
            while len(acks) < len(frames):
                f = await client.recv(timeout=20)
                if f["type"] == "ack":
                    acks[f["client_id"]] = f
                assert f["type"] != "error", f
            # Right after the last ack: no shutdown code runs.
            await first.kill()
            with contextlib.suppress(Exception):
                await client.close()
            assert sorted(a["seq"] for a in acks.values()) == list(range(1, 101))  # type: ignore[type-var]

            await second.start()
            async with httpx.AsyncClient(base_url=second.http) as http:
                r = await http.get(
                    f"/api/conversations/{conv}/messages",
                    params={"after": 0, "limit": 200},
                    headers={"Authorization": f"Bearer {w.c1.token}"},
                )
            assert r.status_code == 200, r.text
            stored = r.json()["messages"]
            assert [m["seq"] for m in stored] == list(range(1, 101))
            by_client = {m["client_id"]: m for m in stored}
            for f in frames:
                ack = acks[f["client_id"]]
                assert by_client[f["client_id"]]["seq"] == ack["seq"]
                assert by_client[f["client_id"]]["body"] == f["body"]
        finally:
            await first.kill()
            await second.terminate()

    # The logs are JSON lines and hold neither a message body nor a token.
    text = log.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(record)
    for body in bodies:
        assert body not in text
    for frame in frames:
        assert frame["body"] not in text
    for token in (w.b1.token, w.c1.token):
        assert token not in text


async def test_embedded_default_starts_and_stops_cleanly(tmp_path: Path) -> None:
    env = clean_env(PORT=str(free_port()), DATA_DIR=str(tmp_path), REQUIRE_E2EE="false")
    server = ServerProcess(env, tmp_path / "server.log")
    pid_file = tmp_path / "mongo" / "engine.pid"
    try:
        await server.start()
        assert pid_file.exists()
        engine_pid = int(pid_file.read_text().strip())
        assert _pid_alive(engine_pid)
        async with httpx.AsyncClient(base_url=server.http) as http:
            r = await http.get("/readyz")
            assert r.json() == {"ready": True, "checks": {"store": True, "broker": True}}
            assert (await http.get("/healthz")).json() == {"status": "ok"}
    finally:
        status = await server.terminate()
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete.
    assert status in (0, -signal.SIGTERM), server.log()
    assert "Application shutdown complete" in server.log()
    assert not pid_file.exists()
    assert not _pid_alive(engine_pid)


async def test_embedded_default_restarts_after_sigkill(tmp_path: Path) -> None:
    """A crash must not leave the engine behind holding the data folder."""
    env = clean_env(DATA_DIR=str(tmp_path), REQUIRE_E2EE="false")
    log = tmp_path / "server.log"
    crashed = ServerProcess({**env, "PORT": str(free_port())}, log)
    again = ServerProcess({**env, "PORT": str(free_port())}, log)
    pid_file = tmp_path / "mongo" / "engine.pid"
    engine_pids: list[int] = []
    try:
        await crashed.start()
        engine_pids.append(int(pid_file.read_text().strip()))
        await crashed.kill()
        await again.start()
        engine_pids.append(int(pid_file.read_text().strip()))
    finally:
        await crashed.kill()
        status = await again.terminate()
    assert status in (0, -signal.SIGTERM), again.log()
    for pid in engine_pids:
        assert not _pid_alive(pid), f"engine {pid} survived its server"
