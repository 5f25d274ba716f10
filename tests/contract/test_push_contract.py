"""The ``PushStore`` contract (``notifications/store.py``), against every adapter.

Same adapters as ``test_store_contract.py`` (the embedded engine, a real MongoDB when
``CHAT_TEST_MONGODB_URL`` is set, memory), through its ``_open``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from notifications.models import JobKind, PushJob, Subscription, Target
from notifications.store import PushStore
from tests.contract.test_store_contract import ADAPTERS, _open


@pytest.fixture(params=ADAPTERS)
async def store(
    request: pytest.FixtureRequest, embedded_mongo_url: str
) -> AsyncIterator[PushStore]:
    s = await _open(request.param, embedded_mongo_url)
    try:
        yield cast(Any, s.db).push()
    finally:
        await s.db.close()


def _sub(sid: str, user: str, device: str, at: float = 1.0) -> Subscription:
    return Subscription(sid, user, device, f"https://push.example/{sid}", "p" * 87, "a" * 22, at)


def _job(jid: str, due: float, recipients: tuple[str, ...] = ("u1",), conv: str = "c1") -> PushJob:
    return PushJob(
        jid, JobKind.MESSAGE, recipients, created_at=due, due_at=due, conversation_id=conv, seq=1
    )


async def test_subscriptions(store: PushStore) -> None:
    await store.put_subscription(_sub("s2", "u1", "d2", 2.0))
    await store.put_subscription(_sub("s1", "u1", "d1", 1.0))
    await store.put_subscription(_sub("s3", "u2", "d3"))
    assert [s.id for s in await store.subscriptions_of(["u1"])] == ["s1", "s2"]
    assert await store.subscriptions_of([]) == []
    # Replacing keeps one record (the same endpoint registered for another device).
    moved = _sub("s1", "u2", "d3", 5.0)
    await store.put_subscription(moved)
    assert await store.get_subscription("s1") == moved
    assert [s.id for s in await store.subscriptions_of(["u2"])] == ["s3", "s1"]
    assert await store.delete_device_subscriptions("u2", "d3") == 2
    assert await store.delete_subscription("s2") is True
    assert await store.delete_subscription("s2") is False
    await store.put_subscription(_sub("s4", "u1", "d4"))
    await store.put_subscription(_sub("s5", "u1", "d5"))
    assert await store.delete_user_subscriptions("u1") == 2
    assert await store.subscriptions_of(["u1", "u2"]) == []


async def test_jobs_are_idempotent_and_claimed_once(store: PushStore) -> None:
    assert await store.add_job(_job("m:c1:1", 10.0)) is True
    assert await store.add_job(_job("m:c1:1", 99.0)) is False
    assert await store.add_job(_job("m:c1:2", 20.0)) is True
    assert await store.add_job(_job("m:c1:3", 30.0)) is True
    assert await store.claim_jobs(5.0, 60, 10) == []
    first = await store.claim_jobs(25.0, 60, 10)
    assert [j.id for j in first] == ["m:c1:1", "m:c1:2"]
    assert first[0].due_at == 10.0
    # Leased: nobody else gets them until the lease ends.
    assert [j.id for j in await store.claim_jobs(30.0, 60, 10)] == ["m:c1:3"]
    assert await store.claim_jobs(40.0, 60, 10) == []
    again = await store.claim_jobs(86.0, 60, 1)
    assert [j.id for j in again] == ["m:c1:1"]
    count, oldest = await store.queue_stats(100.0)
    assert (count, oldest) == (3, 10.0)


async def test_update_release_and_delete(store: PushStore) -> None:
    await store.add_job(_job("m:c1:1", 10.0))
    [job] = await store.claim_jobs(10.0, 60, 5)
    assert job.targets is None
    targets = {"s1": Target(1, 50.0), "s2": Target(0, 0.0)}
    await store.update_job(job.id, targets, 50.0)
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.targets == targets
    assert stored.lease_until == 0.0
    assert await store.claim_jobs(49.0, 60, 5) == []
    [back] = await store.claim_jobs(50.0, 60, 5)
    assert back.targets == targets
    assert await store.delete_job(job.id) is True
    assert await store.delete_job(job.id) is False
    assert await store.get_job(job.id) is None
    assert await store.queue_stats(60.0) == (0, None)


async def test_deletions_by_prefix_and_by_user(store: PushStore) -> None:
    await store.add_job(_job("r:c1:item1:day", 1.0))
    await store.add_job(_job("r:c1:item1:hour", 1.0))
    await store.add_job(_job("r:c1:item10:day", 1.0))
    await store.add_job(_job("m:c2:1", 1.0, ("u9",), "c2"))
    await store.add_job(_job("m:c3:1", 1.0, ("u8",), "c3"))
    assert await store.delete_jobs_with_prefix("r:c1:item1:") == 2
    assert await store.get_job("r:c1:item10:day") is not None
    assert await store.delete_user_jobs("u9", ["c1"]) == 2
    assert [j.id for j in await store.claim_jobs(5.0, 60, 10)] == ["m:c3:1"]


async def test_vapid_key_first_stored_wins(store: PushStore) -> None:
    assert await store.vapid_key("first") == "first"
    assert await store.vapid_key("second") == "first"


async def test_worker_stats_kept_per_worker_and_forgotten_when_old(store: PushStore) -> None:
    figures = {"sent": 3, "failed": {"500": 1}, "queued": 2, "oldest_job_age": 4.5}
    await store.put_worker_stats("w-b", figures, 100.0)
    await store.put_worker_stats("w-a", {**figures, "sent": 1}, 50.0)
    await store.put_worker_stats("w-a", {**figures, "sent": 2}, 110.0)  # replaces
    assert await store.worker_stats(0.0) == [
        {"worker": "w-a", "at": 110.0, "stats": {**figures, "sent": 2}},
        {"worker": "w-b", "at": 100.0, "stats": figures},
    ]
    # A worker silent since before ``since`` is gone, for good.
    assert [w["worker"] for w in await store.worker_stats(105.0)] == ["w-a"]
    assert [w["worker"] for w in await store.worker_stats(0.0)] == ["w-a"]


async def test_queue_stats_say_how_late_the_outbox_is(store: PushStore) -> None:
    await store.add_job(_job("m:c1:1", 50.0))
    await store.add_job(_job("r:c1:rdv-0001:day", 500.0))  # a reminder, for later
    assert await store.queue_stats(40.0) == (2, None)  # nothing due: not late
    assert await store.queue_stats(100.0) == (2, 50.0)  # the reminder is not late
    [job] = await store.claim_jobs(100.0, 60, 10)
    await store.update_job(job.id, {"s1": Target(1, 300.0)}, 300.0)  # a retry, later
    assert await store.queue_stats(200.0) == (2, None)
