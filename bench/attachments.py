"""Attachment uploads and downloads: throughput and the server's memory (issue #14).

    python -m bench.attachments [--parallel 10] [--rounds 3]

Starts ``python -m chat_server --demo`` (embedded engine, GridFS) in a temporary
folder, logs in two demo accounts, then per round:

- ``--parallel`` uploads of a 5 MiB file's blob at once (the largest accepted,
  5,244,168 bytes), streamed by the client in 64 KiB pieces, one per account
  alternately; then the same blobs downloaded at once;
- the server process's RSS (``/proc/<pid>/status`` VmRSS) sampled every 50 ms
  during each phase: the peak over the baseline (before the first upload) says
  whether the server holds whole files (ten 5 MiB files would be 50 MiB) or
  streams them (a few GridFS chunks of 256 KiB per upload).

Not a test: the figures depend on the machine (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.procs import free_port, rss_kib
from chat_server.crypto.attachment import ciphertext_size

DEMO_PASSWORD = "demo-password-2026"
BLOB = ciphertext_size(5 * 1024 * 1024)
PIECE = 65536
T = TypeVar("T")


async def _sampler(pid: int, stop: asyncio.Event, peaks: list[int]) -> None:
    while not stop.is_set():
        peaks.append(rss_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def _login(http: httpx.AsyncClient, login: str) -> tuple[str, str]:
    r = await http.post("/api/login", json={"login": login, "password": DEMO_PASSWORD})
    r.raise_for_status()
    token = r.json()["token"]
    convs = await http.get("/api/conversations", headers={"authorization": f"Bearer {token}"})
    return token, convs.json()["conversations"][0]["id"]


async def _upload(http: httpx.AsyncClient, token: str, conv: str, data: bytes) -> str:
    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), PIECE):
            yield data[start : start + PIECE]

    r = await http.post(
        f"/api/conversations/{conv}/attachments",
        content=pieces(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/octet-stream"},
    )
    if r.status_code != 201:
        raise RuntimeError(f"upload refused: {r.status_code} {r.text}")
    blob: str = r.json()["blob"]
    return blob


async def _download(http: httpx.AsyncClient, token: str, blob: str) -> int:
    n = 0
    async with http.stream(
        "GET", f"/api/attachments/{blob}", headers={"authorization": f"Bearer {token}"}
    ) as r:
        r.raise_for_status()
        async for piece in r.aiter_bytes():
            n += len(piece)
    return n


async def _phase(pid: int, jobs: list[Coroutine[Any, Any, T]]) -> tuple[float, int, list[T]]:
    """Run ``jobs`` at once; the time, the peak RSS (KiB) meanwhile, the results."""
    stop = asyncio.Event()
    peaks: list[int] = []
    sampler = asyncio.create_task(_sampler(pid, stop, peaks))
    t0 = time.perf_counter()
    results = await asyncio.gather(*jobs)
    elapsed = time.perf_counter() - t0
    stop.set()
    await sampler
    return elapsed, max(peaks), list(results)


async def main(parallel: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-attachments-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"MONGODB_URL", "REDIS_URL", "STORE"}}
    env.update(
        PORT=str(port),
        DATA_DIR=str(folder),
        LOG_LEVEL="WARNING",
        ATTACHMENT_UPLOADS_PER_HOUR="100000",
        ATTACHMENT_QUOTA_BYTES=str(2**40),
    )
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the event loop works
        [sys.executable, "-m", "chat_server", "--demo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "server.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            for _ in range(600):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            accounts = [await _login(http, "jeune1.demo"), await _login(http, "jeune2.demo")]
            data = secrets.token_bytes(BLOB)
            baseline = rss_kib(proc.pid)
            print(f"server RSS before any upload: {baseline / 1024:.1f} MiB")
            for r in range(1, rounds + 1):
                owners = [accounts[i % 2] for i in range(parallel)]
                up_jobs = [_upload(http, tok, conv, data) for tok, conv in owners]
                t_up, peak_up, blobs = await _phase(proc.pid, up_jobs)
                down_jobs = [
                    _download(http, tok, blob) for (tok, _), blob in zip(owners, blobs, strict=True)
                ]
                t_down, peak_down, sizes = await _phase(proc.pid, down_jobs)
                assert sizes == [BLOB] * parallel
                mib = parallel * BLOB / 2**20
                print(
                    f"round {r}: {parallel} uploads of {BLOB} bytes at once: {t_up:.2f} s "
                    f"({mib / t_up:.1f} MiB/s), server RSS peak +{(peak_up - baseline) / 1024:.1f}"
                    f" MiB; {parallel} downloads at once: {t_down:.2f} s "
                    f"({mib / t_down:.1f} MiB/s), RSS peak +{(peak_down - baseline) / 1024:.1f} MiB"
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log = (folder / "server.log").read_text(errors="replace")
        if log.strip():
            print("server log (last lines):\n" + "\n".join(log.splitlines()[-15:]))
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.parallel, args.rounds))
