"""``chat-push-worker`` (the Procfile's ``worker``): the push worker as its own process.

Reads the same settings as ``chat-server``. It needs ``MONGODB_URL`` (the embedded
engine serves one process: there, ``chat-server`` runs the worker itself, as
``PUSH_WORKER=in-process`` says). Run the web processes with ``PUSH_WORKER=off``
and one or more of these; they share the outbox through leases. SIGTERM or
SIGINT stops it after the round in progress. Every ``PUSH_STATS_SECONDS`` it
reports its figures (``PushWorker.report``: the ``push stats`` log line, its
record for ``chat-admin push-stats``); with ``METRICS_PORT`` set it serves
them to Prometheus (``notifications/stats.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from chat_server import logs
from chat_server.metrics import serve_metrics
from chat_server.services import open_database
from chat_server.settings import Settings, SettingsError, load_settings
from notifications.setup import build_worker, vapid_keys

log = logging.getLogger("notifications")


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    """Run one worker until ``stopping`` is set."""
    closers: list[object] = []
    if settings.metrics_port is not None:
        closers.append(serve_metrics(settings.metrics_host, settings.metrics_port))
    db = await open_database(settings, closers)
    try:
        store = db.push()
        vapid = await vapid_keys(settings, store)
        worker = build_worker(settings, store, db.messages(), db.accounts(), vapid)
        try:
            await worker.run(stopping)
        finally:
            await worker.close()
    finally:
        for c in reversed(closers):
            close = getattr(c, "close", None) or getattr(c, "stop", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``chat-push-worker``."""
    ap = argparse.ArgumentParser(prog="chat-push-worker", description="run the push worker")
    ap.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"chat-push-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.mongodb_url or settings.store != "mongo":
        print(
            "chat-push-worker: MONGODB_URL is required (on the embedded engine, chat-server "
            "runs the worker in-process)",
            file=sys.stderr,
        )
        return 2
    logs.configure(settings.log_level)

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await serve(settings, stopping)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
