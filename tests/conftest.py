"""Shared fixtures: a real embedded engine, a real redis-server, real uvicorn servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import uvicorn

from chat_server.__main__ import _uvicorn_config
from chat_server.app import create_app
from chat_server.settings import Settings
from chat_server.storage.embedded import EmbeddedMongo, free_port
from tests.helpers import ServerInfo


@pytest.fixture(scope="session")
def embedded_mongo_url() -> Iterator[str]:
    """One embedded ``nx-27017`` engine per session, whatever ``CHAT_TEST_MONGODB_URL`` says."""
    folder = Path(tempfile.mkdtemp(prefix="chat-test-mongo-"))
    engine = EmbeddedMongo(folder)
    asyncio.run(engine.start())
    try:
        yield engine.url + "?directConnection=true"
    finally:
        asyncio.run(engine.stop())
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def mongo_url(request: pytest.FixtureRequest) -> str:
    """A MongoDB URL: ``CHAT_TEST_MONGODB_URL`` if set, else the session's embedded engine."""
    url = os.environ.get("CHAT_TEST_MONGODB_URL")
    if url:
        return url
    embedded: str = request.getfixturevalue("embedded_mongo_url")
    return embedded


class RedisServer:
    """A redis-server of our own on a free loopback port (never the machine's 6379).

    ``stop`` and ``start`` again keep the port, so clients' URL stays valid (a restart).
    """

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; the README's test command installs it")
        self.binary = binary
        self.port = free_port()
        self.folder = tempfile.mkdtemp(prefix="chat-test-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", self.folder]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The session's redis-server (see ``RedisServer``)."""
    server = RedisServer()
    try:
        server.start()
        yield server.url
    finally:
        server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for one test, which it may stop and start again."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


@pytest.fixture
def db_name() -> str:
    """A fresh database name per test, so tests never see each other's data."""
    return "t_" + secrets.token_hex(6)


@pytest.fixture
def settings(mongo_url: str, db_name: str, tmp_path: Path) -> Settings:
    """Settings for an in-test server: fast, small limits, E2EE checks off (core tests)."""
    return Settings(
        host="127.0.0.1",
        port=0,
        mongodb_url=mongo_url,
        mongodb_db=db_name,
        data_dir=tmp_path,
        require_e2ee=False,
        auth_timeout_seconds=2.0,
        heartbeat_seconds=20.0,
    )


async def run_server(settings: Settings) -> AsyncIterator[ServerInfo]:
    """Serve ``create_app(settings)`` with a real uvicorn in this event loop."""
    port = free_port()
    settings = replace(settings, port=port)
    app = create_app(settings)
    server = uvicorn.Server(_uvicorn_config(settings, app))
    task = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped before it started")
        if loop.time() > deadline:
            raise RuntimeError("server did not start")
        await asyncio.sleep(0.02)
    try:
        yield ServerInfo(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", settings, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[ServerInfo]:
    """A real uvicorn server on a free loopback port, on the embedded engine."""
    async for info in run_server(settings):
        yield info


# ``async with serve(replace(settings, ...)) as srv:`` for tests that need other settings.
serve = contextlib.asynccontextmanager(run_server)
