"""``PushWorker``: reads the durable outbox and hands pushes to the push services.

Each round claims due jobs (leased, so several workers share the outbox and a
dead worker's jobs come back when the lease ends), works out the devices to
reach the first time (``targets``: the recipients' subscriptions minus those
whose preferences or mutes say no, and minus people who have already read the
message), and sends to each device whose quiet hours are over:

- 2xx: delivered; 404 and 410: the subscription is deleted (pruned);
- 413: sent again at once in the short form (no ciphertext: a generic text);
- 429, 5xx and no answer: tried again later, after ``backoff * 2**(attempts-1)``
  seconds or the ``Retry-After`` the service gave if longer, at most
  ``max_attempts`` times in all; other answers: failed.

Every outcome is counted (``counters``, and ``notifications.stats`` for
Prometheus); ``stats()`` adds the queue's size and the age of its oldest job.
Every ``stats_interval`` seconds ``run`` makes a ``report``: this worker's
figures written to the store (``push_workers``, read by ``chat-admin
push-stats``), logged (``push stats``) and set on the gauges. A job is deleted
when no target is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chat_server.rooms.service import message_json
from chat_server.storage.base import AccountStore, MessageStore, StoreError
from notifications import payload, rules, stats
from notifications.models import JobKind, PushJob, Subscription, Target
from notifications.sender import MAX_PAYLOAD, PushRequest, PushResult, PushSender
from notifications.store import PushStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """The worker's knobs (``PUSH_*`` settings)."""

    batch: int = 100
    lease: float = 60.0
    max_attempts: int = 5
    backoff: float = 2.0
    max_backoff: float = 3600.0
    message_ttl: int = 7 * 86400
    concurrency: int = 32
    poll: float = 1.0
    #: Seconds between two reports (store record, ``push stats`` log line, gauges).
    stats_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class Content:
    """What a job sends: the full and short payloads and the push service's headers."""

    full: bytes
    short: bytes
    urgency: str
    ttl: int
    topic: str | None


@dataclass
class Counters:
    """Outcomes since the worker started."""

    sent: int = 0
    pruned: int = 0
    retried: int = 0
    short: int = 0
    skipped: int = 0
    failed: Counter[str] = field(default_factory=Counter)

    def note(self, outcome: str, cause: str = "") -> None:
        """Count one outcome here and for Prometheus (``notifications.stats``)."""
        if outcome == "failed":
            self.failed[cause] += 1
        else:
            name = "short" if outcome == "short_payload" else outcome
            setattr(self, name, getattr(self, name) + 1)
        stats.outcome(outcome, cause)

    def as_dict(self) -> dict[str, Any]:
        """The counters as JSON builtins."""
        return {
            "sent": self.sent,
            "pruned": self.pruned,
            "retried": self.retried,
            "short_payloads": self.short,
            "skipped": self.skipped,
            "failed": dict(self.failed),
        }


class PushWorker:
    """The outbox's consumer (see the module docstring)."""

    def __init__(
        self,
        store: PushStore,
        messages: MessageStore,
        accounts: AccountStore,
        sender: PushSender,
        clock: Clock = time.time,
        config: WorkerConfig | None = None,
    ) -> None:
        self._store = store
        self._messages = messages
        self._accounts = accounts
        self._sender = sender
        self._clock = clock
        self.config = config or WorkerConfig()
        self.counters = Counters()
        self._wakeup = asyncio.Event()
        self._limit = asyncio.Semaphore(self.config.concurrency)
        self._down = False
        #: This worker's name in the ``push_workers`` records (random per start).
        self.worker_id = secrets.token_hex(6)

    def wake(self) -> None:
        """Look at the outbox now (a job was just written in this process)."""
        self._wakeup.set()

    async def stats(self) -> dict[str, Any]:
        """Counters, jobs queued and ``oldest_job_age``: how long the earliest due job
        has been due, in seconds (0 when none is due)."""
        now = self._clock()
        queued, oldest = await self._store.queue_stats(now)
        return {
            **self.counters.as_dict(),
            "queued": queued,
            "oldest_job_age": 0.0 if oldest is None else max(0.0, now - oldest),
        }

    async def report(self) -> dict[str, Any]:
        """This worker's figures (``stats()`` and ``worker``): written to the store, logged
        (``push stats``) and set on the gauges; returned."""
        figures = await self.stats()
        stats.queue(figures["queued"], figures["oldest_job_age"])
        await self._store.put_worker_stats(self.worker_id, figures, self._clock())
        figures["worker"] = self.worker_id
        log.info("push stats", extra={"worker": self.worker_id, "figures": figures})
        return figures

    async def run(self, stopping: asyncio.Event) -> None:
        """Rounds until ``stopping`` is set; a store outage is logged once, then waited out.
        A ``report`` at the start, then every ``stats_interval`` seconds."""
        log.info("push worker started", extra={"worker": self.worker_id})
        loop = asyncio.get_running_loop()
        next_report = loop.time()
        while not stopping.is_set():
            if loop.time() >= next_report:
                next_report = loop.time() + self.config.stats_interval
                with contextlib.suppress(StoreError):  # the round below says it once
                    await self.report()
            handled = 0
            try:
                handled = await self.run_once()
                if self._down:
                    self._down = False
                    log.warning("push worker: store is back")
            except StoreError as exc:
                if not self._down:
                    self._down = True
                    log.warning("push worker: store unavailable", extra={"error": str(exc)})
            except Exception:
                log.exception("push worker round failed")
            if handled == 0:
                self._wakeup.clear()
                waits = [asyncio.ensure_future(self._wakeup.wait())]
                waits.append(asyncio.ensure_future(stopping.wait()))
                try:
                    await asyncio.wait(
                        waits, timeout=self.config.poll, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for w in waits:
                        w.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await w
        log.info(
            "push worker stopped",
            extra={"worker": self.worker_id, "figures": self.counters.as_dict()},
        )

    async def run_once(self) -> int:
        """Claim and handle one batch of due jobs; return how many."""
        now = self._clock()
        jobs = await self._store.claim_jobs(now, self.config.lease, self.config.batch)
        if jobs:
            await asyncio.gather(*(self._handle(job) for job in jobs))
        return len(jobs)

    async def _handle(self, job: PushJob) -> None:
        now = self._clock()
        targets = job.targets
        # The subscriptions read for this job in this round (a first attempt reads them
        # all at once); a retry reads each again, as it may be gone meanwhile.
        known: dict[str, Subscription] = {}
        if targets is None:
            targets = await self._expand(job, now, known)
        if job.kind is JobKind.MESSAGE and targets:
            targets = await self._unread_only(job, targets, known)
        if not targets:
            # Nobody to reach (no subscription, preferences, read already): the message
            # itself is never read.
            await self._store.delete_job(job.id)
            return
        content = await self._content(job)
        if content is None:
            await self._store.delete_job(job.id)
            return
        ready = {k: t for k, t in targets.items() if t.not_before <= now}
        later = {k: t for k, t in targets.items() if t.not_before > now}
        results = await asyncio.gather(
            *(
                self._deliver(sub_id, target, content, known.get(sub_id))
                for sub_id, target in ready.items()
            )
        )
        remaining = dict(later)
        for sub_id, left in zip(ready, results, strict=True):
            if left is not None:
                remaining[sub_id] = left
        if remaining:
            due = min(t.not_before for t in remaining.values())
            await self._store.update_job(job.id, remaining, due)
        else:
            await self._store.delete_job(job.id)

    async def _expand(
        self, job: PushJob, now: float, known: dict[str, Subscription]
    ) -> dict[str, Target]:
        subs = await self._store.subscriptions_of(job.recipients)
        preference = str(job.data.get("preference", "messages"))
        targets: dict[str, Target] = {}
        for sub in subs:
            known[sub.id] = sub
            if not rules.wanted(sub, preference, job.conversation_id):
                self.counters.note("skipped")
                continue
            targets[sub.id] = Target(0, self._not_before(sub, job, now))
        return targets

    def _not_before(self, sub: Subscription, job: PushJob, now: float) -> float:
        return rules.not_before(sub, now)

    async def _unread_only(
        self, job: PushJob, targets: dict[str, Target], known: dict[str, Subscription]
    ) -> dict[str, Target]:
        """Drop the devices of people who have read the message meanwhile (it was on screen)."""
        if job.conversation_id is None or job.seq is None:
            return targets
        markers = (await self._messages.read_markers([job.conversation_id])).get(
            job.conversation_id, {}
        )
        readers = {u for u, seq in markers.items() if seq >= job.seq}
        if not readers:
            return targets
        kept: dict[str, Target] = {}
        for sub_id, t in targets.items():
            sub = known.get(sub_id)
            if sub is None:
                sub = await self._store.get_subscription(sub_id)
                if sub is not None:
                    known[sub_id] = sub
            if sub is not None and sub.user_id in readers:
                self.counters.note("skipped")
                continue
            kept[sub_id] = t
        return kept

    async def _content(self, job: PushJob) -> Content | None:
        if job.kind is JobKind.MESSAGE:
            return await self._message_content(job)
        conv = job.conversation_id
        fields = {k: v for k, v in job.data.items() if k not in ("preference", "ttl")}
        body = payload.simple_payload(job.kind.value, conv, **fields)
        ttl = int(str(job.data.get("ttl", self.config.message_ttl)))
        topic = payload.topic(conv + ":" + job.kind.value) if conv else None
        return Content(body, body, "normal", ttl, topic)

    async def _message_content(self, job: PushJob) -> Content | None:
        if job.conversation_id is None or job.seq is None:
            return None
        found = await self._messages.messages_after(job.conversation_id, job.seq - 1, 1)
        if not found or found[0].seq != job.seq:
            return None  # erased meanwhile: nothing to announce
        m = found[0]
        sender = await self._accounts.get_user(m.sender_id)
        name = sender.display_name if sender is not None else ""
        role = sender.role.value if sender is not None else ""
        full, short = payload.message_payloads(
            job.conversation_id, job.seq, name, role, message_json(m)
        )
        if len(full) > MAX_PAYLOAD:
            full = short
        return Content(
            full,
            short,
            "high",
            self.config.message_ttl,
            payload.topic(job.conversation_id),
        )

    async def _deliver(
        self, sub_id: str, target: Target, content: Content, sub: Subscription | None
    ) -> Target | None:
        """Send to one device (``sub``, or read now); the target left to try again later,
        or None (done)."""
        if sub is None:
            sub = await self._store.get_subscription(sub_id)
        if sub is None:
            return None
        async with self._limit:
            result = await self._send(sub, content.full, content)
            if result.status == 413 and content.full != content.short:
                self.counters.note("short_payload")
                result = await self._send(sub, content.short, content)
        return await self._outcome(sub, target, result)

    async def _send(self, sub: Subscription, body: bytes, content: Content) -> PushResult:
        request = PushRequest(
            sub.endpoint, sub.p256dh, sub.auth, body, content.ttl, content.urgency, content.topic
        )
        return await self._sender.send(request)

    async def _outcome(
        self, sub: Subscription, target: Target, result: PushResult
    ) -> Target | None:
        status = result.status
        if 200 <= status < 300:
            self.counters.note("sent")
            return None
        if status in (404, 410):
            await self._store.delete_subscription(sub.id)
            self.counters.note("pruned", str(status))
            log.info("push subscription pruned", extra={"status": status})
            return None
        if status == 429 or status >= 500 or status == 0:
            attempts = target.attempts + 1
            cause = "network" if status == 0 else str(status)
            if attempts >= self.config.max_attempts:
                self.counters.note("failed", cause)
                log.warning("push given up", extra={"status": status, "attempts": attempts})
                return None
            delay = min(self.config.max_backoff, self.config.backoff * 2 ** (attempts - 1))
            if result.retry_after is not None:
                delay = max(delay, min(result.retry_after, self.config.max_backoff))
            self.counters.note("retried", cause)
            return Target(attempts, self._clock() + delay)
        self.counters.note("failed", str(status))
        log.warning("push refused", extra={"status": status, "reason": result.error})
        return None

    async def close(self) -> None:
        """Release the sender's connections (after ``run`` has ended)."""
        await self._sender.close()
