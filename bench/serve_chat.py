"""Run the chat server for a benchmark, seeding its own store before it serves.

python -m bench.serve_chat --pairs 5000     # settings from the environment, as chat-server

The app is ``chat_server.app.create_app`` with the uvicorn configuration of
``chat-server``; a thin ASGI wrapper seeds the pairs through
``app.state.services`` when the lifespan has started (needed for
``STORE=memory``, where no other process can reach the store).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from typing import Any

import uvicorn
import uvloop
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.peers.common import pin_from_env, raise_nofile
from bench.seed import seed
from bench.signed import seed_keys
from chat_server import logs
from chat_server.__main__ import _uvicorn_config
from chat_server.app import create_app
from chat_server.services import Services
from chat_server.settings import load_settings


class SeedOnStartup:
    """Seeds the services' stores between lifespan startup and serving."""

    def __init__(self, app: Any, pairs: int, signed: bool) -> None:
        self.app = app
        self.pairs = pairs
        self.signed = signed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" or self.pairs <= 0:
            await self.app(scope, receive, send)
            return

        async def send_after_seeding(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                svc: Services = self.app.state.services
                await seed(svc.accounts_store, svc.messages, 0, self.pairs)
                if self.signed:
                    await seed_keys(svc.key_store, 0, self.pairs)
            await send(message)

        await self.app(scope, receive, send_after_seeding)


class GcLog:
    """``BENCH_GC_LOG=1``: log every collection slower than 20 ms (uvicorn exits by re-raising
    SIGTERM, so nothing is printed at exit)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.pauses: list[tuple[float, int]] = []

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.start = time.perf_counter()
        else:
            pause = time.perf_counter() - self.start
            self.pauses.append((pause, info["generation"]))
            if pause > 0.02:
                print(
                    f"{time.time():.3f} gc gen{info['generation']} pause {pause * 1000:.0f} ms, "
                    f"collected {info['collected']}, tracked {len(gc.get_objects())}",
                    file=sys.stderr,
                    flush=True,
                )

    def report(self) -> None:
        by_gen = {g: [p for p, gg in self.pauses if gg == g] for g in (0, 1, 2)}
        for g, ps in by_gen.items():
            if ps:
                print(
                    f"gc gen{g}: {len(ps)} collections, total {sum(ps) * 1000:.0f} ms, "
                    f"max {max(ps) * 1000:.1f} ms",
                    file=sys.stderr,
                    flush=True,
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=0, help="pairs to seed at startup")
    ap.add_argument("--signed", action="store_true", help="also seed devices and epoch 1")
    args = ap.parse_args()
    pin_from_env()
    raise_nofile()
    settings = load_settings()
    logs.configure(settings.log_level)
    app: ASGIApp = SeedOnStartup(create_app(settings), args.pairs, args.signed)
    server = uvicorn.Server(_uvicorn_config(settings, app))
    gc_log = GcLog() if os.environ.get("BENCH_GC_LOG") else None
    thresholds = os.environ.get("BENCH_GC_THRESHOLD")  # an experiment, e.g. "50000,20,100"
    if thresholds:
        a, b, c = (int(x) for x in thresholds.split(","))
        gc.set_threshold(a, b, c)
    if gc_log is not None:
        gc.callbacks.append(gc_log)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve())
    if gc_log is not None:
        gc_log.report()


if __name__ == "__main__":
    main()
