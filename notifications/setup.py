"""Building the push capability from the settings (the web process and the worker share it)."""

from __future__ import annotations

import time
from collections.abc import Callable

from chat_server.settings import Settings
from chat_server.storage.base import AccountStore, MessageStore
from notifications.endpoint import EndpointPolicy
from notifications.outbox import Outbox
from notifications.reminders import Reminders
from notifications.sender import WebPushSender
from notifications.service import PushService
from notifications.store import PushStore
from notifications.vapid import VapidKeys, generate_pem
from notifications.worker import PushWorker, WorkerConfig


def policy_of(settings: Settings) -> EndpointPolicy:
    """The endpoint policy the settings ask for."""
    return EndpointPolicy(settings.push_allowed_hosts, settings.push_allow_loopback)


def worker_config(settings: Settings) -> WorkerConfig:
    """The worker's knobs from the settings."""
    return WorkerConfig(
        max_attempts=settings.push_max_attempts,
        backoff=settings.push_backoff_seconds,
        message_ttl=settings.push_ttl_seconds,
        concurrency=settings.push_concurrency,
        poll=settings.push_poll_seconds,
        stats_interval=settings.push_stats_seconds,
    )


async def vapid_keys(settings: Settings, store: PushStore) -> VapidKeys:
    """The configured VAPID key, or the one kept in the store (generated on first start)."""
    if settings.vapid_private_key:
        return VapidKeys(settings.vapid_private_key)
    return VapidKeys(await store.vapid_key(generate_pem()))


def build_worker(
    settings: Settings,
    store: PushStore,
    messages: MessageStore,
    accounts: AccountStore,
    vapid: VapidKeys,
    clock: Callable[[], float] = time.time,
) -> PushWorker:
    """A worker sending with ``WebPushSender``."""
    sender = WebPushSender(
        vapid.private_key,
        settings.vapid_subject,
        policy_of(settings),
        settings.push_timeout_seconds,
        settings.push_concurrency,
    )
    return PushWorker(store, messages, accounts, sender, clock, worker_config(settings))


async def build_push(
    settings: Settings,
    store: PushStore,
    messages: MessageStore,
    accounts: AccountStore,
    clock: Callable[[], float] = time.time,
) -> PushService:
    """The ``PushService`` of a web process; with ``PUSH_WORKER=in-process``, its worker too
    (started by the caller: ``worker.run``)."""
    vapid = await vapid_keys(settings, store)
    worker = None
    if settings.push_worker == "in-process":
        worker = build_worker(settings, store, messages, accounts, vapid, clock)
    reminders = Reminders(store, messages, clock)
    outbox = Outbox(
        store,
        clock,
        wake=worker.wake if worker is not None else None,
        reminders=reminders,
        timeout=settings.store_timeout_seconds,
    )
    return PushService(store, vapid, policy_of(settings), clock, outbox, worker)
