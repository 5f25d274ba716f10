"""Services: the one place the parts are built and wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from chat_server.accounts import AccountService
from chat_server.attachments import AttachmentService, sweep_periodically
from chat_server.broker.base import Broker
from chat_server.broker.local import LocalBroker
from chat_server.crypto.passwords import Passwords
from chat_server.crypto.verify_pool import SignatureChecks, default_verifier
from chat_server.hub import REVOKE_ERASED, Hub
from chat_server.lifecycle.eraser import AccountEraser
from chat_server.lifecycle.retention import (
    RetentionJob,
    RetentionPolicy,
    run_periodically,
    runs_in,
)
from chat_server.lifecycle.service import LifecycleService
from chat_server.metrics import Metrics, MetricsServer, serve_metrics
from chat_server.rooms.keys import E2EEVerifier, KeyService
from chat_server.rooms.service import ConversationService, MessageVerifier, NoVerification
from chat_server.rooms.structure_keys import StructureKeyService
from chat_server.session_watch import watch_sessions
from chat_server.settings import Settings
from chat_server.storage.base import (
    AccountStore,
    KeyStore,
    LifecycleStore,
    MessageStore,
    PresenceStore,
    StoreError,
)
from chat_server.storage.blobs import BlobStore
from chat_server.storage.embedded import EmbeddedMongo
from chat_server.storage.presence import SingleProcessPresence
from chat_server.storage.structure_keys import StructureKeyStore
from chat_server.tools.broadcast import BroadcastService, BroadcastStore
from chat_server.tools.devices import DeviceTools
from chat_server.tools.onboarding import OnboardingService
from chat_server.tools.portfolio import PortfolioService
from notifications.service import PushService
from notifications.setup import build_push
from notifications.store import PushStore

log = logging.getLogger(__name__)

PRESENCE_TTL = 30.0


class Database(Protocol):
    """A store backend: hands out the adapter of every storage port."""

    def accounts(self) -> AccountStore:
        """The account store."""

    def messages(self) -> MessageStore:
        """The message store."""

    def presence(self) -> PresenceStore:
        """The presence store."""

    def keys(self) -> KeyStore:
        """The key store."""

    def structure_keys(self) -> StructureKeyStore:
        """The structure-key store."""

    def lifecycle(self) -> LifecycleStore:
        """The lifecycle store (retention, erasure, archives)."""

    def push(self) -> PushStore:
        """The push store (Web Push subscriptions, the push outbox)."""

    def blobs(self) -> BlobStore:
        """The attachment blob store."""

    def broadcasts(self) -> BroadcastStore:
        """The broadcast store (lists, records)."""

    async def ping(self) -> bool:
        """True if the backend answers."""

    async def close(self) -> None:
        """Release connections."""


@dataclass
class Services:
    """Everything a request or a connection needs, built once per process."""

    settings: Settings
    database: Database
    accounts_store: AccountStore
    messages: MessageStore
    presence: PresenceStore
    key_store: KeyStore
    broker: Broker
    hub: Hub
    accounts: AccountService
    conversations: ConversationService
    keys: KeyService
    lifecycle_store: LifecycleStore
    lifecycle: LifecycleService
    retention: RetentionJob
    process_id: str
    push: PushService
    onboarding: OnboardingService
    portfolio: PortfolioService
    devices: DeviceTools
    blobs: BlobStore
    attachments: AttachmentService
    broadcasts: BroadcastService
    metrics: Metrics = field(default_factory=lambda: Metrics(False))
    # The scrape port when METRICS_PORT is set (docs/deployment.md).
    metrics_server: MetricsServer | None = None
    # The last background check of each dependency (``/healthz`` answers from it, no I/O).
    checks: dict[str, bool] = field(default_factory=lambda: {"store": True, "broker": True})
    _closers: list[object] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def ready(self) -> dict[str, bool]:
        """Readiness of each dependency."""
        return {"store": await self.database.ping(), "broker": await self.broker.healthy()}

    async def close(self) -> None:
        """Stop background tasks, the broker, the database and the embedded engine."""
        # Ask background loops to stop rather than cancelling them mid-operation:
        # a cancellation landing inside a driver call can be swallowed by it.
        self._stopping.set()
        for t in self._tasks:
            try:
                await asyncio.wait_for(asyncio.shield(t), 5)
            except (TimeoutError, asyncio.CancelledError):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(t, 5)
        await self.broker.close()
        for c in reversed(self._closers):
            close = getattr(c, "close", None) or getattr(c, "stop", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()


async def open_database(settings: Settings, closers: list[object]) -> Database:
    """The configured store: in-memory, a MongoDB URL, or the embedded engine."""
    if settings.store == "memory":
        from chat_server.storage.memory import MemoryDatabase

        mem = MemoryDatabase()
        closers.append(mem)
        return mem
    from chat_server.storage.mongo import MongoDatabase

    if settings.mongodb_url:
        db = MongoDatabase(
            settings.mongodb_url, settings.mongodb_db, timeout=settings.store_timeout_seconds
        )
    else:
        engine = EmbeddedMongo(settings.data_dir)
        await engine.start()
        engine.supervise()
        closers.append(engine)
        log.info("embedded MongoDB engine started", extra={"path": str(engine.socket)})
        db = MongoDatabase(
            engine.url, settings.mongodb_db, direct=True, timeout=settings.store_timeout_seconds
        )
    closers.append(db)
    await db.wait_ready(30)
    await db.create_indexes()
    return db


async def build_services(
    settings: Settings,
    verifier: MessageVerifier | None = None,
    clock: Callable[[], float] = time.time,
    background: bool = True,
) -> Services:
    """Start the store and the broker, wire the rest. ``clock`` is the domain's time
    (tests of the retention policy move it by years). ``background=False``: none of a
    web process's background tasks (push worker, presence heartbeat, session watch,
    attachment sweep, scheduled retention) is started: ``chat-push-worker`` builds the
    same parts and runs its own."""
    closers: list[object] = []
    db = await open_database(settings, closers)
    broker: Broker
    metrics = Metrics(settings.metrics_port is not None)
    metrics_server = None
    if settings.metrics_port is not None:
        metrics_server = serve_metrics(settings.metrics_host, settings.metrics_port)
        closers.append(metrics_server)
    if settings.redis_url:
        from chat_server.broker.redis import RedisBroker

        broker = RedisBroker(settings.redis_url)
    else:
        broker = LocalBroker()
    await broker.start()
    hub = Hub(broker)
    accounts_store = db.accounts()
    messages = db.messages()
    # One process: presence counts stay in memory (only last_seen is stored).
    presence = db.presence() if settings.redis_url else SingleProcessPresence(db.presence())
    key_store = db.keys()
    if verifier is None:
        if settings.require_e2ee:
            how = settings.verifier
            if how == "auto":
                how = default_verifier()
            # Half the send deadline behind: refuse with `overloaded` rather than time out.
            checks = SignatureChecks(
                settings.verify_threads if how == "threads" else 0,
                metrics.verified if metrics.enabled else None,
                max_wait=settings.store_timeout_seconds / 2,
                process=how == "process",
            )
            closers.append(checks)
            verifier = E2EEVerifier(key_store, checks)
        else:
            verifier = NoVerification()
    lifecycle_store = db.lifecycle()
    accounts = AccountService(
        accounts_store, messages, Passwords(), settings, clock, key_store, lifecycle_store
    )
    conversations = ConversationService(
        messages,
        accounts_store,
        presence,
        hub,
        clock,
        verifier,
        settings.max_body_bytes,
        settings.store_timeout_seconds,
    )
    keys = KeyService(key_store, messages, accounts_store, conversations, hub, clock)
    keys.structure = StructureKeyService(db.structure_keys(), key_store, accounts_store, hub, clock)
    push = await build_push(settings, db.push(), messages, accounts_store, clock)
    # The push outbox gets a job after each new message's durable write.
    conversations.on_stored = push.outbox.message_stored
    keys.on_key_request = push.outbox.key_request
    blobs = db.blobs()
    attachments = AttachmentService(blobs, messages, conversations, settings, clock)
    conversations.attachments = attachments
    eraser = AccountEraser(
        lifecycle_store,
        accounts_store,
        messages,
        key_store,
        clock,
        disconnect=lambda user_id: hub.revoke(user_id, REVOKE_ERASED),
        hooks=[push],
    )
    eraser.hooks.append(attachments)
    broadcasts = BroadcastService(db.broadcasts(), messages, accounts_store, clock)
    eraser.hooks.append(broadcasts)
    policy = RetentionPolicy.from_settings(settings)
    retention = RetentionJob(
        policy,
        lifecycle_store,
        accounts_store,
        messages,
        conversations,
        eraser,
        clock,
        warning_hooks=[push],
    )
    lifecycle = LifecycleService(
        lifecycle_store,
        messages,
        key_store,
        accounts,
        conversations,
        eraser,
        hub,
        clock,
        policy.archive_kept,
    )
    svc = Services(
        settings=settings,
        database=db,
        accounts_store=accounts_store,
        messages=messages,
        presence=presence,
        key_store=key_store,
        broker=broker,
        hub=hub,
        accounts=accounts,
        conversations=conversations,
        keys=keys,
        lifecycle_store=lifecycle_store,
        lifecycle=lifecycle,
        retention=retention,
        process_id=secrets.token_hex(8),
        push=push,
        onboarding=OnboardingService(accounts, accounts_store, conversations, key_store, clock),
        portfolio=PortfolioService(messages, accounts_store, presence, clock),
        devices=DeviceTools(keys, key_store, accounts, lifecycle_store, messages, clock),
        blobs=blobs,
        attachments=attachments,
        broadcasts=broadcasts,
        metrics=metrics,
        metrics_server=metrics_server,
        _closers=closers,
    )
    if push.worker is not None:
        # Its sender closes after the loop ends (the loop stops with ``_stopping``).
        closers.append(push.worker)
    if not background:
        return svc
    if push.worker is not None:
        svc._tasks.append(asyncio.create_task(push.worker.run(svc._stopping), name="push-worker"))
    svc._tasks.append(asyncio.create_task(_heartbeat(svc), name="presence-heartbeat"))
    svc._tasks.append(
        asyncio.create_task(
            watch_sessions(
                hub, accounts_store, settings.session_recheck_seconds, svc._stopping, clock
            ),
            name="session-watch",
        )
    )
    svc._tasks.append(
        asyncio.create_task(
            sweep_periodically(attachments, settings.attachment_sweep_seconds, svc._stopping),
            name="attachment-sweep",
        )
    )
    if runs_in(settings, "chat-server"):
        svc._tasks.append(
            asyncio.create_task(
                run_periodically(
                    retention,
                    settings.retention_interval_seconds,
                    svc._stopping,
                    holder=svc.process_id,
                ),
                name="retention",
            )
        )
    return svc


async def _heartbeat(svc: Services) -> None:
    """Every few seconds: check the dependencies; declare this process alive; end temporary
    transfers that are over.

    An outage is logged once when it starts and once when it ends, without a traceback.
    """
    while not svc._stopping.is_set():
        try:
            checks = await svc.ready()
            for name, ok in checks.items():
                if ok != svc.checks.get(name):
                    if ok:
                        log.warning(f"{name} is back")
                    else:
                        log.warning(f"{name} unavailable")
            svc.checks = checks
            if checks["store"]:
                await svc.presence.process_alive(svc.process_id, time.time() + PRESENCE_TTL)
                await svc.keys.expire_temporary()
                await svc.accounts.throttle.purge()
        except StoreError as exc:
            log.warning("heartbeat: store unavailable", extra={"error": str(exc)})
        except Exception:
            log.exception("heartbeat failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(svc._stopping.wait(), PRESENCE_TTL / 6)
