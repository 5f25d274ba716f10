"""1,000 concurrent logins against one server process: does ``/healthz`` keep answering?

    python -m bench.login_flood [--logins 1000]

Starts ``chat-server`` on the embedded defaults in a temporary folder (with
``ADDRESS_MAX_FAILURES`` raised so that every login reaches the password
check, the costly part), sends the logins at once with unknown names, and
polls ``/healthz`` every 50 ms meanwhile. Prints the answers' statuses and
the ``/healthz`` latencies. Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from chat_server.storage.embedded import free_port


async def _health(http: httpx.AsyncClient, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        try:
            r = await http.get("/healthz", timeout=30)
            if r.status_code == 200:
                out.append(time.perf_counter() - t)
        except httpx.TransportError:
            out.append(float("inf"))
        await asyncio.sleep(0.05)


async def main(logins: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-login-"))
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DATA_DIR": str(folder)}
    env.update(ADDRESS_MAX_FAILURES="1000000", LOG_LEVEL="WARNING")
    log = (folder / "server.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chat_server", env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_connections=logins + 10, max_keepalive_connections=logins + 10)
    try:
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as http:
            for _ in range(600):  # bounded wait for readiness (60 s)
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            quiet: list[float] = []
            stop = asyncio.Event()
            probe = asyncio.create_task(_health(http, stop, quiet))
            await asyncio.sleep(1.0)
            stop.set()
            await probe
            during: list[float] = []
            stop = asyncio.Event()
            # Its own client: the flood's connection pool must not delay the probe.
            prober = httpx.AsyncClient(base_url=base, timeout=120)
            probe = asyncio.create_task(_health(prober, stop, during))
            t0 = time.perf_counter()
            body = {"password": "not the password"}
            replies = await asyncio.gather(
                *(
                    http.post("/api/login", json={**body, "login": f"ghost{i}"})
                    for i in range(logins)
                ),
                return_exceptions=True,
            )
            elapsed = time.perf_counter() - t0
            stop.set()
            await probe
            await prober.aclose()
    finally:
        proc.terminate()
        await proc.wait()
        log.close()
    statuses = Counter(
        r.status_code if isinstance(r, httpx.Response) else type(r).__name__ for r in replies
    )

    def ms(values: list[float]) -> str:
        v = sorted(values)
        p99 = v[min(len(v) - 1, int(len(v) * 0.99))]
        return (
            f"n={len(v)} median={statistics.median(v) * 1000:.1f} ms "
            f"p99={p99 * 1000:.1f} ms max={v[-1] * 1000:.1f} ms"
        )

    print(f"{logins} concurrent logins answered in {elapsed:.1f} s: {dict(statuses)}")
    print(f"/healthz idle:        {ms(quiet)}")
    print(f"/healthz under flood: {ms(during)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--logins", type=int, default=1000)
    asyncio.run(main(ap.parse_args().logins))
