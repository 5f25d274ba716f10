"""Plain records of the push capability: subscriptions, outbox jobs. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class JobKind(StrEnum):
    """What a push job announces."""

    MESSAGE = "message"
    KEY_REQUEST = "key_request"
    REMINDER = "reminder"
    NOTICE = "notice"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One device's Web Push subscription (RFC 8030): where to send, and its keys.

    ``id`` is derived from the endpoint, so the same browser subscription
    registered twice is one record. A subscription belongs to one device of one
    user; registering it for another device or user moves it there.
    """

    id: str
    user_id: str
    device_id: str
    endpoint: str
    p256dh: str
    auth: str
    created_at: float
    #: Per-type preferences: the types switched off (``messages``, ``actions``,
    #: ``appointments``, ``reminders``, ``key_requests``).
    muted_types: tuple[str, ...] = ()
    #: Quiet hours, local ``HH:MM`` in ``timezone``; equal start and end: none.
    quiet_start: str = "20:00"
    quiet_end: str = "08:00"
    timezone: str = "Europe/Paris"
    #: Conversations muted on this device (counsellors).
    muted_conversations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Target:
    """One device still to be reached by a job: attempts so far, and not before when."""

    attempts: int = 0
    not_before: float = 0.0


@dataclass(frozen=True, slots=True)
class PushJob:
    """One outbox entry: something to announce to the devices of ``recipients``.

    ``id`` makes the write idempotent: a message's job is ``m:<conversation>:<seq>``,
    so a resend or a second writer never pushes twice. ``targets`` is filled by the
    worker the first time it handles the job (subscription id -> ``Target``); a
    target leaves the map when it is delivered, pruned, skipped or given up.
    """

    id: str
    kind: JobKind
    recipients: tuple[str, ...]
    created_at: float
    due_at: float
    conversation_id: str | None = None
    seq: int | None = None
    #: Kind-specific server-visible data (a reminder's item and moment, a key request's device).
    data: dict[str, object] = field(default_factory=dict)
    targets: dict[str, Target] | None = None
    lease_until: float = 0.0
