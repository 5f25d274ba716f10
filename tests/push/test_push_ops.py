"""What an operator sees of the push worker, and the ack's bound when the store freezes.

- ``chat-push-worker`` as a real process: its figures in ``chat-admin push-stats``
  (another real process) and on its Prometheus port;
- a store (the embedded engine, stopped with SIGSTOP) that freezes right after a
  message's durable append: the sender still gets its ack within
  ``STORE_TIMEOUT_SECONDS`` more, and the server says in one line what it did not record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chat_server import protocol as p
from chat_server.rooms.models import Role
from chat_server.services import build_services
from chat_server.settings import Settings
from chat_server.storage.embedded import free_port
from notifications.outbox import message_job_id
from notifications.service import Preferences
from tests.conftest import run_server
from tests.helpers import PASSWORD, REPO_ROOT, WsClient, clean_env, seed_world
from tests.push.pushservice import TestPushService
from tests.push.test_delivery import subscribe

pytestmark = pytest.mark.slow


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


async def _admin(env: dict[str, str], *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chat_server.admin",
        *args,
        env=env,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_worker_process_figures_in_push_stats_and_prometheus(
    push_settings: Settings, push_service: TestPushService, tmp_path: Path
) -> None:
    settings = replace(push_settings, push_worker="off")
    async for srv in run_server(settings):
        push_service.expected_vapid_key = srv.services.push.vapid.public_key
        w = await seed_world(srv)
        await subscribe(srv, w.b1, push_service)
        gone = await subscribe(srv, w.b2, push_service)
        push_service.answer(gone, 410)
        c1 = await WsClient.connect(srv, w.c1.token)
        for i in range(3):
            await c1.send_text(w.conv["b1"], f"b1 {i}")
        await c1.send_text(w.conv["b2"], "b2")
        await c1.ws.close()
        metrics_port = free_port()
        env = clean_env(
            MONGODB_URL=settings.mongodb_url or "",
            MONGODB_DB=settings.mongodb_db,
            PUSH_ALLOW_LOOPBACK="true",
            PUSH_STATS_SECONDS="0.3",
            METRICS_PORT=str(metrics_port),
            RETENTION_JOB="off",
        )
        log_path = tmp_path / "worker.log"
        with log_path.open("ab") as log:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "notifications", env=env, cwd=REPO_ROOT, stderr=log
            )
        try:
            await push_service.wait_for(3, timeout=30)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            async with httpx.AsyncClient(timeout=2.0) as http:
                while True:
                    assert worker.returncode is None, log_path.read_text()
                    admin_env = {k: v for k, v in env.items() if k != "METRICS_PORT"}
                    shown: dict[str, Any] = json.loads(await _admin(admin_env, "push-stats"))
                    text = ""
                    with contextlib.suppress(httpx.TransportError):
                        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                    if shown["workers"] and shown["total"]["pruned"] == 1 and text:
                        break
                    assert loop.time() < deadline, (shown, log_path.read_text())
                    await asyncio.sleep(0.3)
            assert shown["queued"] == 0
            assert shown["oldest_job_age"] == 0.0
            [one] = shown["workers"]
            assert one["stats"]["sent"] == 3
            assert one["stats"]["pruned"] == 1
            assert shown["total"] == {
                "sent": 3,
                "pruned": 1,
                "retried": 0,
                "short_payloads": 0,
                "skipped": 0,
                "failed": {},
            }
            outcomes = _samples(text, "chat_push_outcomes_total")
            assert outcomes[(("cause", ""), ("outcome", "sent"))] == 3
            assert outcomes[(("cause", "410"), ("outcome", "pruned"))] == 1
            assert _samples(text, "chat_push_queue_depth") == {(): 0.0}
            assert _samples(text, "chat_push_oldest_job_seconds") == {(): 0.0}
        finally:
            worker.send_signal(signal.SIGTERM)
            await asyncio.wait_for(worker.wait(), 20)
        assert worker.returncode == 0
        logged = log_path.read_text()
        assert "push stats" in logged
        assert "Traceback" not in logged


async def test_a_store_frozen_after_the_append_delays_the_ack_by_the_timeout_at_most(
    settings: Settings,
    push_service: TestPushService,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    timeout = 1.0
    s = replace(
        settings,
        mongodb_url=None,  # an embedded engine of this test's own: it gets SIGSTOP
        data_dir=tmp_path,
        store_timeout_seconds=timeout,
        push_worker="off",
        retention_job="off",
        push_allow_loopback=True,
    )
    svc = await build_services(s)
    engine_pid = int((tmp_path / "mongo" / "engine.pid").read_text().strip())
    frozen = False
    try:
        acc = svc.accounts
        st = await acc.create_structure("ML", "mission_locale", ("CEJ",))
        c1 = await acc.create_user(Role.COUNSELLOR, "c1", "Claire Un", st.id, PASSWORD)
        nb = await acc.create_beneficiary(c1, "b1", "Inès Moreau", "CEJ")
        _dev, info = push_service.subscribe()
        keys = info["keys"]
        await svc.push.subscribe(
            nb.user.id, "phone", info["endpoint"], keys["p256dh"], keys["auth"], Preferences()
        )
        conv = nb.conversation.id
        real_append = svc.messages.append

        async def append_then_freeze(*args: Any, **kwargs: Any) -> Any:
            nonlocal frozen
            out = await real_append(*args, **kwargs)
            os.kill(engine_pid, signal.SIGSTOP)
            frozen = True
            return out

        def frame(msg_type: str, meta: dict[str, Any]) -> p.MessageSend:
            return p.MessageSend(
                id="f",
                conversation=conv,
                client_id=secrets.token_hex(8),
                msg_type=msg_type,
                body=b"opaque",
                nonce=secrets.token_bytes(12),
                meta=meta,
            )

        starts = time.time() + 3 * 86400
        item = {"item": "rdv-" + secrets.token_hex(6), "event": "created", "starts_at": starts}
        sent = []
        for msg_type, meta in (("text", {}), ("appointment", item)):
            svc.messages.append = append_then_freeze  # type: ignore[method-assign]
            caplog.clear()
            started = time.monotonic()
            with caplog.at_level(logging.WARNING):
                stored, created = await svc.conversations.send(
                    c1, "desk", frame(msg_type, meta), ""
                )
            took = time.monotonic() - started
            os.kill(engine_pid, signal.SIGCONT)
            frozen = False
            svc.messages.append = real_append  # type: ignore[method-assign]
            # The sender's ack: the message is stored; the push job and the read marker
            # waited one STORE_TIMEOUT_SECONDS, not the driver's socket timeout (10 s).
            assert created, msg_type
            assert took < timeout + 1.5, (msg_type, took)
            notes = [r.getMessage() for r in caplog.records]
            assert "push job or read marker not recorded" in notes, notes
            assert not any(r.exc_info for r in caplog.records)
            sent.append(stored.seq)
        # The store is back: both messages are there, and the next send gets its push job.
        page = await svc.messages.messages_after(conv, 0, 10)
        assert [m.seq for m in page] == sent
        stored, _ = await svc.conversations.send(c1, "desk", frame("text", {}), "")
        assert await svc.push.store.get_job(message_job_id(conv, stored.seq)) is not None
    finally:
        if frozen:
            os.kill(engine_pid, signal.SIGCONT)
        await svc.close()
