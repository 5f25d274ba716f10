"""The push storage port (``PushStore``) and its in-memory adapter.

Each method's docstring is its contract; every adapter (this one, and
``chat_server/storage/mongo_push.py``) passes ``tests/contract/test_push_contract.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from notifications.models import PushJob, Subscription, Target


class PushStore(Protocol):
    """Web Push subscriptions and the durable outbox of push jobs."""

    async def put_subscription(self, sub: Subscription) -> None:
        """Insert or replace the subscription with ``sub.id`` (owner and keys included)."""

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        """The subscription or None."""

    async def subscriptions_of(self, user_ids: Sequence[str]) -> list[Subscription]:
        """Every subscription of these users, oldest first."""

    async def delete_subscription(self, sub_id: str) -> bool:
        """Remove one subscription; False if it did not exist."""

    async def delete_device_subscriptions(self, user_id: str, device_id: str) -> int:
        """Remove the subscriptions of one device of a user; return how many."""

    async def delete_user_subscriptions(self, user_id: str) -> int:
        """Remove every subscription of a user; return how many."""

    async def add_job(self, job: PushJob) -> bool:
        """Insert durably; False (and nothing changed) if a job with ``job.id`` exists."""

    async def claim_jobs(self, now: float, lease: float, limit: int) -> list[PushJob]:
        """Up to ``limit`` jobs due at ``now`` (``due_at <= now``) and not leased, oldest due
        first, each leased until ``now + lease`` atomically: two workers never claim the
        same job while its lease runs. A worker that dies leaves its jobs to be claimed
        again when the lease ends (so a job is handled at least once)."""

    async def update_job(self, job_id: str, targets: dict[str, Target], due_at: float) -> None:
        """Save a job's remaining targets and next due time, and release its lease."""

    async def delete_job(self, job_id: str) -> bool:
        """Remove a finished (or cancelled) job; False if it did not exist."""

    async def get_job(self, job_id: str) -> PushJob | None:
        """The job or None."""

    async def delete_jobs_with_prefix(self, prefix: str) -> int:
        """Remove every job whose id starts with ``prefix`` (cancelled reminders)."""

    async def delete_user_jobs(self, user_id: str, conversation_ids: Sequence[str]) -> int:
        """Remove the jobs addressed to ``user_id`` or about ``conversation_ids``."""

    async def queue_stats(self, now: float) -> tuple[int, float | None]:
        """(jobs in the outbox, the earliest ``due_at`` of the jobs due at ``now`` or None).

        Jobs not due yet (a reminder's moment, quiet hours, a retry's backoff) count in
        the first figure only: the second says how late the outbox is."""

    async def put_worker_stats(self, worker_id: str, stats: dict[str, Any], at: float) -> None:
        """Record (replace) one worker's latest figures, written at ``at``."""

    async def worker_stats(self, since: float) -> list[dict[str, Any]]:
        """Each worker's latest record written at ``since`` or later, by worker id:
        ``{"worker", "at", "stats"}``. Older records are deleted (workers gone)."""

    async def vapid_key(self, candidate: str) -> str:
        """The stored VAPID private key; stores ``candidate`` first if there is none.

        Atomic: processes starting together all get the one key that was stored first."""


class MemoryPushStore:
    """``PushStore`` in this process's memory (the ``STORE=memory`` benchmarks, unit tests)."""

    def __init__(self) -> None:
        self._subs: dict[str, Subscription] = {}
        self._jobs: dict[str, PushJob] = {}
        self._vapid: str | None = None
        self._workers: dict[str, dict[str, Any]] = {}

    async def put_subscription(self, sub: Subscription) -> None:
        self._subs[sub.id] = sub

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        return self._subs.get(sub_id)

    async def subscriptions_of(self, user_ids: Sequence[str]) -> list[Subscription]:
        wanted = set(user_ids)
        subs = [s for s in self._subs.values() if s.user_id in wanted]
        return sorted(subs, key=lambda s: (s.created_at, s.id))

    async def delete_subscription(self, sub_id: str) -> bool:
        return self._subs.pop(sub_id, None) is not None

    async def delete_device_subscriptions(self, user_id: str, device_id: str) -> int:
        gone = [
            k for k, s in self._subs.items() if s.user_id == user_id and s.device_id == device_id
        ]
        for k in gone:
            del self._subs[k]
        return len(gone)

    async def delete_user_subscriptions(self, user_id: str) -> int:
        gone = [k for k, s in self._subs.items() if s.user_id == user_id]
        for k in gone:
            del self._subs[k]
        return len(gone)

    async def add_job(self, job: PushJob) -> bool:
        if job.id in self._jobs:
            return False
        self._jobs[job.id] = copy.deepcopy(job)
        return True

    async def claim_jobs(self, now: float, lease: float, limit: int) -> list[PushJob]:
        due = [j for j in self._jobs.values() if j.due_at <= now and j.lease_until <= now]
        due.sort(key=lambda j: (j.due_at, j.id))
        out = []
        for j in due[:limit]:
            leased = replace(j, lease_until=now + lease)
            self._jobs[j.id] = leased
            out.append(copy.deepcopy(leased))
        return out

    async def update_job(self, job_id: str, targets: dict[str, Target], due_at: float) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            self._jobs[job_id] = replace(job, targets=dict(targets), due_at=due_at, lease_until=0)

    async def delete_job(self, job_id: str) -> bool:
        return self._jobs.pop(job_id, None) is not None

    async def get_job(self, job_id: str) -> PushJob | None:
        job = self._jobs.get(job_id)
        return copy.deepcopy(job) if job is not None else None

    async def delete_jobs_with_prefix(self, prefix: str) -> int:
        gone = [k for k in self._jobs if k.startswith(prefix)]
        for k in gone:
            del self._jobs[k]
        return len(gone)

    async def delete_user_jobs(self, user_id: str, conversation_ids: Sequence[str]) -> int:
        convs = set(conversation_ids)
        gone = [
            k
            for k, j in self._jobs.items()
            if user_id in j.recipients
            or (j.conversation_id is not None and j.conversation_id in convs)
        ]
        for k in gone:
            del self._jobs[k]
        return len(gone)

    async def queue_stats(self, now: float) -> tuple[int, float | None]:
        due = [j.due_at for j in self._jobs.values() if j.due_at <= now]
        return len(self._jobs), (min(due) if due else None)

    async def vapid_key(self, candidate: str) -> str:
        if self._vapid is None:
            self._vapid = candidate
        return self._vapid

    async def put_worker_stats(self, worker_id: str, stats: dict[str, Any], at: float) -> None:
        self._workers[worker_id] = {"worker": worker_id, "at": at, "stats": copy.deepcopy(stats)}

    async def worker_stats(self, since: float) -> list[dict[str, Any]]:
        for k in [k for k, v in self._workers.items() if v["at"] < since]:
            del self._workers[k]
        return [copy.deepcopy(self._workers[k]) for k in sorted(self._workers)]
