"""``chat-push-worker`` (the Procfile's ``worker``): the push worker as its own process,
and the scheduled retention job (``RETENTION_JOB``: ``auto`` or ``worker``).

Reads the same settings as ``chat-server``. It needs ``MONGODB_URL`` (the embedded
engine serves one process: there, ``chat-server`` runs the worker itself, as
``PUSH_WORKER=in-process`` says). Run the web processes with ``PUSH_WORKER=off``
and one or more of these; they share the outbox through leases. SIGTERM or
SIGINT stops it after the round in progress. Every ``PUSH_STATS_SECONDS`` it
reports its figures (``PushWorker.report``: the ``push stats`` log line, its
record for ``chat-admin push-stats``); with ``METRICS_PORT`` set it serves
them to Prometheus (``notifications/stats.py``).

The parts are built by ``build_services`` as in ``chat-server``, without a web
process's background tasks: the retention job gets the same eraser (its push
and attachment hooks) and the same hub. The hub's revocations and the notices
it posts go through the broker: with ``REDIS_URL`` (any deployment with several
processes) they reach the web processes at once; without it, a web process
still closes an erased account's connections at its next session check
(``SESSION_RECHECK_SECONDS``) and its clients see the notice when they sync.
Several workers may run it: one at a time holds the store's lease.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

from chat_server import logs
from chat_server.lifecycle.retention import run_periodically, runs_in
from chat_server.rooms.service import NoVerification
from chat_server.services import build_services
from chat_server.settings import Settings, SettingsError, load_settings
from notifications.setup import build_worker

log = logging.getLogger("notifications")


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    """Run one push worker, and the retention job if ``runs_in`` says so, until
    ``stopping`` is set."""
    # The worker never checks a client's signature: no verifier threads.
    svc = await build_services(
        replace(settings, push_worker="off"), NoVerification(), background=False
    )
    try:
        worker = build_worker(
            settings, svc.push.store, svc.messages, svc.accounts_store, svc.push.vapid
        )
        retention = None
        if runs_in(settings, "chat-push-worker"):
            interval = settings.retention_interval_seconds
            retention = asyncio.create_task(
                run_periodically(svc.retention, interval, stopping, holder=worker.worker_id),
                name="retention",
            )
        try:
            await worker.run(stopping)
        finally:
            stopping.set()
            if retention is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(retention, 30)
            await worker.close()
    finally:
        await svc.close()


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
