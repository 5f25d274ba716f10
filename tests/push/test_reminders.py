"""Reminders from items' server-visible meta, with a controllable clock: scheduled when an
item is created, sent once when due, moved when it changes, gone when it is done or
cancelled. Also the inactivity warning pushed to a staff member."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chat_server import protocol as p
from chat_server.rooms.models import Role, User
from chat_server.services import Services, build_services
from chat_server.settings import Settings
from notifications.reminders import reminder_prefix
from notifications.service import Preferences
from notifications.setup import build_worker
from notifications.worker import PushWorker
from tests.helpers import PASSWORD
from tests.push.pushservice import FakeDevice, TestPushService

PARIS = ZoneInfo("Europe/Paris")
# A Tuesday, 10:00 in Paris: outside the default quiet hours.
T0 = dt.datetime(2027, 3, 9, 10, 0, tzinfo=PARIS).timestamp()
DAY, HOUR = 86400.0, 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    svc: Services
    clock: Clock
    worker: PushWorker
    counsellor: User
    beneficiary: User
    conv: str
    device: FakeDevice


@pytest.fixture
async def setup(settings: Settings, push_service: TestPushService) -> AsyncIterator[Setup]:
    clock = Clock(T0)
    s = replace(settings, push_worker="off", push_allow_loopback=True, retention_job="off")
    svc = await build_services(s, clock=clock)
    worker = build_worker(
        s, svc.push.store, svc.messages, svc.accounts_store, svc.push.vapid, clock
    )
    try:
        acc = svc.accounts
        st = await acc.create_structure("ML", "mission_locale", ("CEJ",))
        c1 = await acc.create_user(Role.COUNSELLOR, "c1", "Claire Un", st.id, PASSWORD)
        nb = await acc.create_beneficiary(c1, "b1", "Inès Moreau", "CEJ")
        dev, info = push_service.subscribe()
        # The default quiet hours (20:00-08:00, Paris) apply.
        await svc.push.subscribe(
            nb.user.id,
            "phone-1",
            info["endpoint"],
            info["keys"]["p256dh"],
            info["keys"]["auth"],
            Preferences(),
        )
        yield Setup(svc, clock, worker, c1, nb.user, nb.conversation.id, dev)
    finally:
        await worker.close()
        await svc.close()


async def _send(su: Setup, msg_type: str, meta: dict[str, Any]) -> None:
    frame = p.MessageSend(
        id="f",
        conversation=su.conv,
        client_id=secrets.token_hex(8),
        msg_type=msg_type,
        body=b"opaque",
        nonce=secrets.token_bytes(12),
        meta=meta,
    )
    await su.svc.conversations.send(su.counsellor, "desk-1", frame, "")


async def _reminders(su: Setup, push: TestPushService) -> list[dict[str, Any]]:
    """Advance nothing; run the worker until idle; the reminders delivered so far."""
    while await su.worker.run_once():
        pass
    return [d.json() for d in push.for_device(su.device) if d.json()["kind"] == "reminder"]


async def _due(su: Setup, item: str) -> dict[str, float]:
    out = {}
    for when in ("day", "hour"):
        job = await su.svc.push.store.get_job(reminder_prefix(su.conv, item) + when)
        if job is not None:
            out[when] = job.due_at
    return out


async def test_appointment_reminders_scheduled_sent_once_moved_and_cancelled(
    setup: Setup, push_service: TestPushService
) -> None:
    su = setup
    item = "rdv-" + secrets.token_hex(6)
    starts = T0 + 3 * DAY + 4 * HOUR  # Friday 14:00
    await _send(su, "appointment", {"item": item, "event": "created", "starts_at": starts})
    assert await _due(su, item) == {"day": starts - DAY, "hour": starts - HOUR}
    # The creation itself was pushed as a message; no reminder yet.
    assert await _reminders(su, push_service) == []
    su.clock.now = starts - DAY - 1
    assert await _reminders(su, push_service) == []
    su.clock.now = starts - DAY
    [day] = await _reminders(su, push_service)
    assert day == {
        "v": 1,
        "kind": "reminder",
        "conversation": su.conv,
        "item": item,
        "item_type": "appointment",
        "at": starts,
        "when": "day",
    }
    assert [d.headers["urgency"] for d in push_service.for_device(su.device)][-1] == "normal"
    # Sent once.
    su.clock.now = starts - DAY + 600
    assert len(await _reminders(su, push_service)) == 1
    # Moved to Monday 9:00: the hour-before reminder moves with it.
    moved = starts + 3 * DAY - 5 * HOUR
    await _send(su, "appointment", {"item": item, "event": "changed", "starts_at": moved})
    assert await _due(su, item) == {"day": moved - DAY, "hour": moved - HOUR}
    su.clock.now = starts - HOUR
    assert len(await _reminders(su, push_service)) == 1
    su.clock.now = moved - DAY
    assert [r["when"] for r in await _reminders(su, push_service)] == ["day", "day"]
    # Cancelled: nothing more.
    await _send(su, "appointment", {"item": item, "event": "cancelled"})
    assert await _due(su, item) == {}
    su.clock.now = moved
    assert len(await _reminders(su, push_service)) == 2
    assert push_service.problems == []


async def test_hour_before_waits_for_quiet_hours_to_end(
    setup: Setup, push_service: TestPushService
) -> None:
    su = setup
    item = "rdv-" + secrets.token_hex(6)
    starts = dt.datetime(2027, 3, 11, 8, 30, tzinfo=PARIS).timestamp()  # Thursday 8:30
    await _send(su, "appointment", {"item": item, "event": "created", "starts_at": starts})
    su.clock.now = starts - DAY  # Wednesday 8:30
    assert [r["when"] for r in await _reminders(su, push_service)] == ["day"]
    su.clock.now = starts - HOUR  # Thursday 7:30: quiet hours until 8:00
    assert [r["when"] for r in await _reminders(su, push_service)] == ["day"]
    job = await su.svc.push.store.get_job(reminder_prefix(su.conv, item) + "hour")
    assert job is not None
    assert job.due_at == dt.datetime(2027, 3, 11, 8, 0, tzinfo=PARIS).timestamp()
    su.clock.now = job.due_at
    assert [r["when"] for r in await _reminders(su, push_service)] == ["day", "hour"]


async def test_action_reminder_the_day_before_due_and_gone_when_done(
    setup: Setup, push_service: TestPushService
) -> None:
    su = setup
    item = "act-" + secrets.token_hex(6)
    due = T0 + 5 * DAY
    await _send(su, "action", {"item": item, "event": "created", "status": "todo", "due": due})
    assert await _due(su, item) == {"day": due - DAY}
    await _send(su, "action", {"item": item, "event": "status_changed", "status": "done"})
    assert await _due(su, item) == {}
    su.clock.now = due
    assert await _reminders(su, push_service) == []
    # Reopened: scheduled again.
    await _send(su, "action", {"item": item, "event": "status_changed", "status": "in_progress"})
    assert await _due(su, item) == {}  # the day before has passed now
    other = "act-" + secrets.token_hex(6)
    await _send(
        su, "action", {"item": other, "event": "created", "status": "todo", "due": due + 2 * DAY}
    )
    su.clock.now = due + DAY
    [r] = await _reminders(su, push_service)
    assert (r["item"], r["item_type"], r["when"]) == (other, "action", "day")


async def test_inactivity_warning_is_pushed_to_staff(
    setup: Setup, push_service: TestPushService
) -> None:
    su = setup
    assert su.svc.push in su.svc.retention.warning_hooks
    dev, info = push_service.subscribe()
    await su.svc.push.subscribe(
        su.counsellor.id,
        "desk-1",
        info["endpoint"],
        info["keys"]["p256dh"],
        info["keys"]["auth"],
        Preferences(),
    )
    await su.svc.push.warn_inactive(su.counsellor, T0 + 30 * DAY)
    # A beneficiary's warning is the message in their thread (pushed as a message).
    await su.svc.push.warn_inactive(su.beneficiary, T0 + 30 * DAY)
    while await su.worker.run_once():
        pass
    [d] = push_service.for_device(dev)
    assert d.json() == {
        "v": 1,
        "kind": "notice",
        "notice": "inactivity",
        "deletion_at": T0 + 30 * DAY,
    }
    assert [x.json()["kind"] for x in push_service.for_device(su.device)] == []


async def test_erasure_deletes_subscriptions_and_jobs(setup: Setup) -> None:
    su = setup
    item = "rdv-" + secrets.token_hex(6)
    await _send(su, "appointment", {"item": item, "event": "created", "starts_at": T0 + 3 * DAY})
    store = su.svc.push.store
    assert len(await _due(su, item)) == 2
    assert await store.subscriptions_of([su.beneficiary.id]) != []
    await su.svc.lifecycle.eraser.erase(su.beneficiary, "retention", "inactivity")
    assert await store.subscriptions_of([su.beneficiary.id]) == []
    assert await _due(su, item) == {}
    assert await store.queue_stats(su.clock.now) == (0, None)
