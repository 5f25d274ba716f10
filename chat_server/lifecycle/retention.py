"""The retention policy and the job that applies it.

``RetentionJob.run_once()`` is a plain coroutine. The scheduled runs
(``run_periodically``) go where the deployment has a worker
(``RETENTION_JOB``, see ``runs_in``): ``chat-push-worker`` when there is one,
``chat-server`` on the embedded defaults (where it runs the push worker
in-process); ``chat-admin retention`` runs it once. Whoever runs it holds the
store's ``retention`` lease (``run_exclusive``), so one run at a time across
every process. Every step works in batches of at most
``RETENTION_BATCH_SIZE`` records, is idempotent (a second run right after
removes nothing more), and the run returns a ``RetentionReport`` of what it
removed, logged in one line.

The policy (periods in the README's configuration table, every collection in
``docs/privacy.md``):

- an account without a login for ``INACTIVE_ACCOUNT_DAYS`` is erased with
  everything that belongs to it, once it was warned at least
  ``INACTIVITY_NOTICE_DAYS`` before (a ``system.inactivity_notice`` event in a
  beneficiary's conversation, seen by them and their counsellor, and every
  ``WarningHook``, such as push); a login in between cancels it. Staff who
  still follow a conversation are kept (``kept_staff``): a supervisor must
  reassign it first;
- a conversation archived ``ARCHIVE_RETENTION_DAYS`` ago: its beneficiary is erased;
- expired sessions, expired activation codes, login-throttling windows that
  have passed: deleted;
- audit records older than ``AUDIT_RETENTION_DAYS``: deleted;
- tombstones of deleted conversations ("compte supprimé") after ``TOMBSTONE_DAYS``;
- server processes gone for a day (``DEAD_PROCESS_AFTER``), with their
  per-user connection counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chat_server.lifecycle.eraser import AccountEraser, is_staff
from chat_server.lifecycle.hooks import WarningHook
from chat_server.rooms.models import User
from chat_server.rooms.service import ConversationService
from chat_server.settings import Settings
from chat_server.storage.base import AccountStore, LifecycleStore, MessageStore, StoreError

log = logging.getLogger(__name__)

DAY = 86400.0
#: How long a deleted beneficiary's conversation stays in the counsellor's list.
TOMBSTONE_DAYS = 30
#: A server process that has not renewed its liveness for this long is gone for good.
DEAD_PROCESS_AFTER = DAY
#: The store lease a run holds (``run_exclusive``), and for how long before a renewal.
LEASE = "retention"
LEASE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """The periods, in seconds."""

    inactive_after: float
    notice_before: float
    archive_kept: float
    audit_kept: float
    login_window: float
    batch: int
    tombstone_kept: float = TOMBSTONE_DAYS * DAY

    @classmethod
    def from_settings(cls, s: Settings) -> RetentionPolicy:
        """The policy the settings describe."""
        return cls(
            inactive_after=s.inactive_account_days * DAY,
            notice_before=s.inactivity_notice_days * DAY,
            archive_kept=s.archive_retention_days * DAY,
            audit_kept=s.audit_retention_days * DAY,
            login_window=float(s.login_window_seconds),
            batch=s.retention_batch_size,
        )


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one run did: counts per kind of record."""

    warned: int = 0
    inactive_erased: int = 0
    archives_erased: int = 0
    erasures_resumed: int = 0
    kept_staff: int = 0
    sessions: int = 0
    activations: int = 0
    login_failures: int = 0
    audit: int = 0
    tombstones: int = 0
    processes: int = 0

    def removed(self) -> int:
        """Records and accounts removed (warnings and kept staff are not removals)."""
        skip = {"warned", "kept_staff"}
        return sum(v for k, v in dataclasses.asdict(self).items() if k not in skip)

    def as_dict(self) -> dict[str, int]:
        """The counts, by name."""
        return dataclasses.asdict(self)


class RetentionJob:
    """Applies a ``RetentionPolicy`` (see the module docstring)."""

    def __init__(
        self,
        policy: RetentionPolicy,
        lifecycle: LifecycleStore,
        accounts: AccountStore,
        messages: MessageStore,
        conversations: ConversationService,
        eraser: AccountEraser,
        clock: Callable[[], float],
        warning_hooks: Sequence[WarningHook] = (),
    ) -> None:
        self.policy = policy
        self._lifecycle = lifecycle
        self._accounts = accounts
        self._messages = messages
        self._conversations = conversations
        self._eraser = eraser
        self._clock = clock
        self.warning_hooks: list[WarningHook] = list(warning_hooks)

    async def run_once(self) -> RetentionReport:
        """One pass of every step, each bounded by the batch size."""
        p, lc, now = self.policy, self._lifecycle, self._clock()
        resumed = 0
        for user in await lc.pending_erasures(p.batch):
            if await self._eraser.resume(user) is not None:
                resumed += 1
        warned = await self._warn(now)
        erased, kept = await self._erase_inactive(now)
        archives = 0
        for conv in await lc.archived_before(now - p.archive_kept, p.batch):
            beneficiary = await self._accounts.get_user(conv.beneficiary_id)
            if beneficiary is not None and await self._eraser.erase(
                beneficiary, "retention", "archive_expired"
            ):
                archives += 1
        report = RetentionReport(
            warned=warned,
            inactive_erased=erased,
            archives_erased=archives,
            erasures_resumed=resumed,
            kept_staff=kept,
            sessions=await lc.purge_sessions(now, p.batch),
            activations=await lc.purge_activations(now, p.batch),
            login_failures=await self._accounts.purge_login_failures(now, p.login_window),
            audit=await lc.purge_audit(now - p.audit_kept, p.batch),
            tombstones=await lc.purge_tombstones(now - p.tombstone_kept, p.batch),
            processes=await lc.purge_dead_processes(now - DEAD_PROCESS_AFTER, p.batch),
        )
        return report

    async def run_exclusive(
        self, holder: str, lease: float = LEASE_SECONDS
    ) -> RetentionReport | None:
        """``run_once`` while holding the store's ``retention`` lease as ``holder``; None,
        with nothing done, if another holder has it (one log line).

        The lease lasts ``lease`` seconds and is renewed every third of that while the
        run lasts, so a process that dies mid-run blocks the others for ``lease`` at most.
        A renewal that finds the lease taken (this process was frozen longer than
        ``lease``) stops the run at once. The lease is released at the end. The run's
        log line gives its wall-clock ``started`` (lease taken) and ``finished`` (run
        done, lease not yet released) times.
        """
        lc = self._lifecycle
        if not await lc.take_lease(LEASE, holder, time.time(), lease):
            log.info("retention run skipped: another process holds the lease")
            return None
        started = time.time()  # held from here (the store may have answered late)
        run = asyncio.create_task(self.run_once())
        try:
            while True:
                done, _ = await asyncio.wait({run}, timeout=lease / 3)
                if done:
                    report = run.result()
                    log.info(
                        "retention run",
                        extra={
                            "report": report.as_dict(),
                            "worker": holder,
                            "started": started,
                            "finished": time.time(),
                        },
                    )
                    return report
                if not await lc.take_lease(LEASE, holder, time.time(), lease):
                    log.warning("retention run stopped: its lease was taken over")
                    return None
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, StoreError):
                    await run
            with contextlib.suppress(StoreError):
                await lc.release_lease(LEASE, holder)

    async def _warn(self, now: float) -> int:
        p = self.policy
        warned = 0
        candidates = await self._lifecycle.inactive_users(
            now - (p.inactive_after - p.notice_before), p.batch, unwarned_only=True
        )
        for user in candidates:
            if not await self._lifecycle.mark_warned(user.id, now):
                continue
            warned += 1
            deletion_at = max(user.active_at + p.inactive_after, now + p.notice_before)
            await self._notice_in_app(user, deletion_at)
            for hook in self.warning_hooks:
                try:
                    await hook.warn_inactive(user, deletion_at)
                except Exception as exc:
                    log.warning("inactivity warning hook failed", extra={"error": repr(exc)})
        return warned

    async def _notice_in_app(self, user: User, deletion_at: float) -> None:
        for conv in await self._messages.conversations_for(user.id):
            if conv.beneficiary_id != user.id or conv.deleted_at is not None:
                continue
            await self._conversations.post_system(
                conv,
                "system.inactivity_notice",
                {"deletion_at": deletion_at, "days": round(self.policy.notice_before / DAY)},
                client_id=f"inactivity-{secrets.token_hex(8)}",
            )

    async def _erase_inactive(self, now: float) -> tuple[int, int]:
        p = self.policy
        erased = kept = 0
        for user in await self._lifecycle.inactive_users(
            now - p.inactive_after, p.batch, unwarned_only=False
        ):
            if user.notice_at is None or user.notice_at > now - p.notice_before:
                continue  # not warned long enough ago: its turn comes later
            if await self.follows_anyone(user):
                kept += 1
                continue
            if await self._eraser.erase(user, "retention", "inactivity") is not None:
                erased += 1
        return erased, kept

    async def follows_anyone(self, user: User) -> bool:
        """Whether ``user`` is staff and the current or previous counsellor of a live
        conversation (erasing them would orphan a beneficiary)."""
        if not is_staff(user):
            return False
        current = await self._messages.conversations_for(user.id)
        if any(c.deleted_at is None for c in current):
            return True
        return bool(await self._messages.conversations_previously_with(user.id))


def runs_in(settings: Settings, process: str) -> bool:
    """Whether ``process`` (``chat-server`` or ``chat-push-worker``) runs the scheduled job.

    ``RETENTION_JOB``: ``auto`` (the default) puts it in ``chat-push-worker``, and in
    ``chat-server`` only when that runs the push worker itself (``PUSH_WORKER=in-process``,
    the embedded defaults); ``in-process``: in ``chat-server`` only; ``worker``: in
    ``chat-push-worker`` only; ``off``: nowhere (``chat-admin retention`` from cron).
    """
    mode = settings.retention_job
    if process == "chat-push-worker":
        return mode in ("auto", "worker")
    return mode == "in-process" or (mode == "auto" and settings.push_worker == "in-process")


async def run_periodically(
    job: RetentionJob,
    interval: float,
    stopping: asyncio.Event,
    first_delay: float = 5.0,
    holder: str | None = None,
) -> None:
    """Run ``job`` every ``interval`` seconds until ``stopping`` is set, each run under
    the lease (``run_exclusive`` as ``holder``, random by default): a run another process
    holds the lease for is skipped.

    A store outage skips a run with one warning line (no traceback); the next
    run catches up, since every step is idempotent.
    """
    holder = holder or secrets.token_hex(8)
    delay = first_delay
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
        if stopping.is_set():
            return
        delay = interval
        try:
            await job.run_exclusive(holder)
        except StoreError as exc:
            log.warning("retention run skipped: store unavailable", extra={"error": str(exc)})
        except Exception:
            log.exception("retention run failed")
