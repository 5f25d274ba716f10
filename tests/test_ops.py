"""Operations: liveness, readiness of the store and the broker, security headers, JSON logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from chat_server import logs
from chat_server.settings import Settings
from chat_server.storage.embedded import EmbeddedMongo
from tests.conftest import serve
from tests.helpers import ServerInfo, api, wait_for


async def test_healthz_and_readyz(server: ServerInfo) -> None:
    r = await api(server, "GET", "/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    r = await api(server, "GET", "/readyz")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "checks": {"store": True, "broker": True}}
    for header in ("content-security-policy", "x-frame-options", "referrer-policy"):
        assert header in r.headers


async def test_readyz_is_503_when_the_broker_is_down(server: ServerInfo) -> None:
    await server.services.broker.close()
    r = await api(server, "GET", "/readyz")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "checks": {"store": True, "broker": False}}
    # Liveness is not readiness: the process still answers.
    assert (await api(server, "GET", "/healthz")).status_code == 200


async def test_readyz_is_503_promptly_while_the_store_hangs(
    settings: Settings, tmp_path: Path
) -> None:
    engine = EmbeddedMongo(tmp_path / "own-engine")
    await engine.start()
    engine_pid = int((tmp_path / "own-engine" / "mongo" / "engine.pid").read_text())
    try:
        own = replace(settings, mongodb_url=engine.url + "?directConnection=true")
        async with serve(own) as server:
            assert (await api(server, "GET", "/readyz")).status_code == 200
            os.kill(engine_pid, signal.SIGSTOP)  # the database stops answering
            try:
                loop = asyncio.get_running_loop()
                start = loop.time()
                r = await api(server, "GET", "/readyz")
                elapsed = loop.time() - start
                assert r.status_code == 503
                assert r.json()["checks"] == {"store": False, "broker": True}
                # A probe must not wait out the driver's timeouts (10 s and more).
                assert elapsed < 4, f"/readyz took {elapsed:.1f}s"
            finally:
                os.kill(engine_pid, signal.SIGCONT)

            async def ready_again() -> bool:
                return (await api(server, "GET", "/readyz")).status_code == 200

            await wait_for(ready_again, timeout=10, what="readiness to come back")
    finally:
        await engine.stop()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """``logs.configure`` writing to a buffer; the logging setup is restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    names = ["uvicorn", "uvicorn.error", "uvicorn.access", "pymongo", "websockets"]
    saved = {n: logging.getLogger(n).level for n in names}
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stderr", stream)
        logs.configure("DEBUG")
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def test_logs_are_json_lines_with_whitelisted_fields(log_stream: io.StringIO) -> None:
    log = logging.getLogger("chat_server.test")
    log.info(
        "message stored",
        extra={"conversation_id": "c1", "seq": 7, "body": "plaintext!", "token": "t0k3n"},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"user_id": "u1"})
    # Payload-carrying third-party debug output is kept out even at DEBUG.
    logging.getLogger("pymongo.command").debug('{"insert": "messages", "body": "plaintext!"}')
    logging.getLogger("uvicorn.error").debug('< TEXT \'{"type":"auth","token":"t0k3n"}\'')
    logging.getLogger("uvicorn.error").info(
        '%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/ws?token=t0k3n"
    )
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert len(lines) == 3
    first, second, third = lines
    assert first["msg"] == "message stored"
    assert first["level"] == "INFO"
    assert first["conversation_id"] == "c1"
    assert first["seq"] == 7
    assert "body" not in first
    assert "token" not in first
    assert second["user_id"] == "u1"
    assert "ValueError: boom" in second["exc"]
    assert third["msg"].startswith("127.0.0.1:5 - ")
    text = log_stream.getvalue()
    assert "plaintext!" not in text
    assert "t0k3n" not in text
