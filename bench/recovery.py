"""How long the server takes to notice and recover from faults (issue #13).

    python -m bench.recovery

Three measurements, each on real processes in a temporary folder:

- engine killed: SIGKILL of the embedded engine of a ``chat-server`` on the
  embedded defaults, until ``/readyz`` answers 200 again;
- store stopped: a server on ``MONGODB_URL`` (an engine of our own), the engine
  killed, how long a ``message.send`` waits for ``store_unavailable``; the engine
  started again, until a send is acknowledged;
- Redis restarted: two servers on one Redis, messages acknowledged while Redis
  is down, until the receiver on the other process has them all.

Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from pathlib import Path

import httpx

from chat_server.storage.embedded import EmbeddedMongo, free_port
from tests.conftest import RedisServer
from tests.helpers import (
    ServerProcess,
    WsClient,
    clean_env,
    fast_world,
    seeded_services,
    send_frame,
)


async def _until_ready(http: str, timeout: float = 60) -> float:
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=http, timeout=2) as client:
        while time.perf_counter() - t0 < timeout:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.02)
    raise RuntimeError("not ready")


async def engine_killed(folder: Path) -> float:
    env = clean_env(DATA_DIR=str(folder), REQUIRE_E2EE="false", PORT=str(free_port()))
    server = ServerProcess(env, folder / "server.log")
    await server.start()
    try:
        pid = int((folder / "mongo" / "engine.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        return await _until_ready(server.http)
    finally:
        await server.terminate()


async def store_stopped(folder: Path) -> tuple[float, float]:
    engine = EmbeddedMongo(folder / "store")
    await engine.start()
    url = engine.url + "?directConnection=true"
    env = clean_env(
        MONGODB_URL=url,
        MONGODB_DB="b",
        REQUIRE_E2EE="false",
        DATA_DIR=str(folder),
        PORT=str(free_port()),
    )
    server = ServerProcess(env, folder / "store.log")
    async with seeded_services(url, "b") as svc:
        w = await fast_world(svc)
    await server.start()
    try:
        ben = await WsClient.connect(server.info, w.b1.token)
        await ben.send_text(w.conv["b1"], "avant")
        assert engine.pid is not None
        os.kill(engine.pid, signal.SIGKILL)
        frame = send_frame(w.conv["b1"], "pendant")
        t0 = time.perf_counter()
        await ben.send(frame)
        await ben.expect("error", timeout=30, id=frame["id"])
        refused = time.perf_counter() - t0
        engine = EmbeddedMongo(folder / "store")
        await engine.start()
        t0 = time.perf_counter()
        while True:
            reply = await ben.send_text(w.conv["b1"], "après")
            if reply["type"] == "ack":
                break
            await asyncio.sleep(0.05)
        back = time.perf_counter() - t0
        await ben.close()
        return refused, back
    finally:
        await server.terminate()
        await engine.stop()


async def redis_restarted(folder: Path) -> float:
    engine = EmbeddedMongo(folder / "rstore")
    await engine.start()
    url = engine.url + "?directConnection=true"
    redis = RedisServer()
    redis.start()
    env = clean_env(
        MONGODB_URL=url,
        MONGODB_DB="r",
        REDIS_URL=redis.url,
        REQUIRE_E2EE="false",
        DATA_DIR=str(folder),
    )
    a = ServerProcess({**env, "PORT": str(free_port())}, folder / "a.log")
    b = ServerProcess({**env, "PORT": str(free_port())}, folder / "b.log")
    async with seeded_services(url, "r") as svc:
        w = await fast_world(svc)
    try:
        await a.start()
        await b.start()
        counsellor = await WsClient.connect(a.info, w.c1.token)
        ben = await WsClient.connect(b.info, w.b1.token)
        redis.stop()
        for i in range(5):
            await ben.send_text(w.conv["b1"], f"pendant {i}")
        redis.start()
        t0 = time.perf_counter()
        for _ in range(5):
            await counsellor.expect("message.created", timeout=60)
        took = time.perf_counter() - t0
        await counsellor.close()
        await ben.close()
        return took
    finally:
        await a.terminate()
        await b.terminate()
        redis.close()
        await engine.stop()


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        root = Path(tmp)
        for name in ("e", "s", "r"):
            (root / name).mkdir()
        print(f"engine killed -> /readyz 200 again: {await engine_killed(root / 'e'):.2f} s")
        refused, back = await store_stopped(root / "s")
        print(f"store stopped -> send refused (store_unavailable): {refused:.2f} s")
        print(f"store started again -> first send acknowledged: {back:.2f} s")
        print(f"Redis restarted -> 5 messages delivered: {await redis_restarted(root / 'r'):.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
