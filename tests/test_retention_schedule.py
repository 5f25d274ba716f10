"""Where the scheduled retention job runs, and that it runs once at a time (issue #17).

- ``runs_in``: ``chat-server`` runs it on the embedded defaults (``PUSH_WORKER``
  in-process), ``chat-push-worker`` when the deployment has one;
- two services on one store (two clients, as two processes) run it through the
  store's lease: never both at once, a dead holder's lease runs out, a run whose
  lease was taken over stops;
- real processes: ``chat-push-worker`` runs the policy (an inactive, warned account
  erased with its push subscription through the same eraser hooks, an expired
  session purged); two of them never overlap (their logged runs' times).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chat_server.crypto.tokens import new_token, token_hash
from chat_server.lifecycle.retention import DAY, LEASE, RetentionReport, runs_in
from chat_server.rooms.models import Role, Session
from chat_server.services import Services, build_services
from chat_server.settings import Settings
from notifications.service import Preferences
from tests.helpers import PASSWORD, REPO_ROOT, clean_env
from tests.push.pushservice import TestPushService

YEAR = 365 * DAY


@pytest.mark.parametrize(
    ("retention_job", "push_worker", "server", "worker"),
    [
        ("auto", "in-process", True, True),  # the embedded defaults: chat-server runs it
        ("auto", "off", False, True),  # the Procfile deployment: chat-push-worker does
        ("in-process", "off", True, False),
        ("worker", "in-process", False, True),
        ("off", "in-process", False, False),
    ],
)
def test_where_the_job_runs(
    retention_job: str, push_worker: str, server: bool, worker: bool
) -> None:
    s = Settings(retention_job=retention_job, push_worker=push_worker)
    assert runs_in(s, "chat-server") is server
    assert runs_in(s, "chat-push-worker") is worker
    assert Settings().retention_job == "auto"


@pytest.fixture
async def two(settings: Settings) -> AsyncIterator[tuple[Services, Services]]:
    """Two services (two store clients) on one database, as two processes would be."""
    s = replace(settings, retention_job="off", push_worker="off")
    a = await build_services(s, background=False)
    try:
        b = await build_services(s, background=False)
        try:
            yield a, b
        finally:
            await b.close()
    finally:
        await a.close()


def _slowed(svc: Services, seconds: float, log: list[tuple[str, float, float]], name: str) -> None:
    """Make each run of ``svc``'s job last ``seconds`` more, and record when it ran."""
    real = svc.retention.run_once

    async def run_once() -> RetentionReport:
        started = time.monotonic()
        await asyncio.sleep(seconds)
        report = await real()
        log.append((name, started, time.monotonic()))
        return report

    svc.retention.run_once = run_once  # type: ignore[method-assign]


def _overlaps(runs: list[tuple[str, float, float]]) -> list[Any]:
    runs = sorted(runs, key=lambda r: r[1])
    return [(x, y) for x, y in itertools.pairwise(runs) if y[1] < x[2]]


async def test_two_runners_never_run_it_at_once(two: tuple[Services, Services]) -> None:
    a, b = two
    runs: list[tuple[str, float, float]] = []
    _slowed(a, 0.3, runs, "a")
    _slowed(b, 0.3, runs, "b")
    for offset in (0.0, 0.05, 0.15, 0.25):

        async def later(svc: Services, holder: str, delay: float) -> RetentionReport | None:
            await asyncio.sleep(delay)
            return await svc.retention.run_exclusive(holder)

        got = await asyncio.gather(a.retention.run_exclusive("a"), later(b, "b", offset))
        assert sum(r is not None for r in got) == 1, (offset, got)
    assert len(runs) == 4
    assert _overlaps(runs) == []
    # Released at the end: the next one runs.
    assert await b.retention.run_exclusive("b") is not None


async def test_a_dead_holder_blocks_for_its_lease_only(
    two: tuple[Services, Services], caplog: pytest.LogCaptureFixture
) -> None:
    a, _b = two
    # A process took the lease and died (never released it).
    assert await a.lifecycle_store.take_lease(LEASE, "dead", time.time(), 1.0)
    with caplog.at_level(logging.INFO):
        assert await a.retention.run_exclusive("a") is None
    assert "another process holds the lease" in caplog.text
    await asyncio.sleep(1.1)
    assert await a.retention.run_exclusive("a") is not None


async def test_a_run_whose_lease_was_taken_over_stops(
    two: tuple[Services, Services], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = two
    runs: list[tuple[str, float, float]] = []
    _slowed(a, 2.0, runs, "a")
    task = asyncio.create_task(a.retention.run_exclusive("a", lease=0.6))
    await asyncio.sleep(0.1)
    # As if ``a`` had been frozen past its lease: another holder has it now.
    await b.lifecycle_store.release_lease(LEASE, "a")
    assert await b.lifecycle_store.take_lease(LEASE, "b", time.time(), 60.0)
    with caplog.at_level(logging.WARNING):
        assert await asyncio.wait_for(task, 5) is None
    assert runs == []  # stopped before it finished
    assert "its lease was taken over" in caplog.text
    await b.lifecycle_store.release_lease(LEASE, "b")


# ------------------------------------------------------------------ real processes


async def _seed(settings: Settings) -> dict[str, str]:
    """An account inactive for three years and warned 40 days ago, with a push
    subscription; an expired session of another account."""
    now = time.time()
    svc = await build_services(
        replace(settings, retention_job="off", push_worker="off", push_allow_loopback=True),
        clock=lambda: now - 3 * YEAR,
        background=False,
    )
    try:
        acc = svc.accounts
        st = await acc.create_structure("ML", "mission_locale", ("CEJ",))
        c1 = await acc.create_user(Role.COUNSELLOR, "c1", "Claire Un", st.id, PASSWORD)
        nb = await acc.create_beneficiary(c1, "b1", "Inès Moreau", "CEJ")
        assert await svc.lifecycle_store.mark_warned(nb.user.id, now - 40 * DAY)
        _dev, info = TestPushService().subscribe()  # a subscription; never called here
        keys = info["keys"]
        await svc.push.subscribe(
            nb.user.id, "phone", info["endpoint"], keys["p256dh"], keys["auth"], Preferences()
        )
        session = token_hash(new_token())
        await svc.accounts_store.add_session(Session(session, c1.id, "d", now - 60, now - 10))
        return {"user": nb.user.id, "session": session}
    finally:
        await svc.close()


def _runs(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with_json = line[line.find("{") :] if "{" in line else ""
        try:
            rec = json.loads(with_json)
        except ValueError:
            continue
        if rec.get("msg") == "retention run":
            out.append(rec)
    return out


@pytest.mark.slow
async def test_the_worker_process_runs_the_policy_and_two_never_overlap(
    settings: Settings, tmp_path: Path
) -> None:
    seeded = await _seed(settings)
    env = clean_env(
        MONGODB_URL=settings.mongodb_url or "",
        MONGODB_DB=settings.mongodb_db,
        PUSH_ALLOW_LOOPBACK="true",
        RETENTION_INTERVAL_SECONDS="10",
        LOG_LEVEL="INFO",
    )
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = []
    for log_path in logs:
        with log_path.open("ab") as out:
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "notifications",
                    env=env,
                    cwd=REPO_ROOT,
                    stdout=out,
                    stderr=out,
                )
            )
    svc = await build_services(replace(settings, retention_job="off"), background=False)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        # Each worker's first run comes 5 s after it starts, the next ones every 10 s.
        while len([r for p in logs for r in _runs(p)]) < 3:
            assert all(p.returncode is None for p in procs), [p.read_text() for p in logs]
            assert loop.time() < deadline, [p.read_text() for p in logs]
            await asyncio.sleep(0.2)
        assert await svc.accounts_store.get_user(seeded["user"]) is None
        assert await svc.push.store.subscriptions_of([seeded["user"]]) == []
        assert await svc.accounts_store.get_session(seeded["session"], 0.0) is None
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
        for p in procs:
            await asyncio.wait_for(p.wait(), 30)
        await svc.close()
    assert [p.returncode for p in procs] == [0, 0]
    runs = [(r["worker"], r["started"], r["finished"], r["report"]) for p in logs for r in _runs(p)]
    assert sum(r[3]["inactive_erased"] for r in runs) == 1  # erased once, by one of them
    assert sum(r[3]["sessions"] for r in runs) == 1
    assert _overlaps([(w, s, f) for w, s, f, _ in runs]) == []
    text = "".join(p.read_text() for p in logs)
    assert "Traceback" not in text


def test_chat_admin_retention_waits_its_turn(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``chat-admin retention`` while a worker holds the lease: refused, nothing run."""
    from chat_server import admin

    async def hold() -> None:
        svc = await build_services(settings, background=False)
        try:
            assert await svc.lifecycle_store.take_lease(LEASE, "a-worker", time.time(), 60.0)
        finally:
            await svc.close()

    asyncio.run(hold())
    monkeypatch.setenv("MONGODB_URL", settings.mongodb_url or "")
    monkeypatch.setenv("MONGODB_DB", settings.mongodb_db)
    assert admin.main(["retention"]) == 2
    assert "another process is running the retention job now" in capsys.readouterr().err


@pytest.mark.parametrize(("push_worker", "scheduled"), [("in-process", True), ("off", False)])
async def test_chat_server_schedules_it_only_without_a_worker_process(
    settings: Settings, push_worker: str, scheduled: bool
) -> None:
    """``RETENTION_JOB=auto``: ``chat-server`` runs it on the embedded defaults (the push
    worker in-process), not when ``chat-push-worker`` processes do the background work."""
    s = replace(settings, store="memory", push_worker=push_worker)
    assert s.retention_job == "auto"
    svc = await build_services(s)
    try:
        assert ("retention" in {t.get_name() for t in svc._tasks}) is scheduled
    finally:
        await svc.close()
