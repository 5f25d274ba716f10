"""``PushService``: subscriptions of devices, the outbox, and the in-process worker.

The HTTP endpoints (``chat_server/api/push.py``) call it; ``services.py`` builds
it. A subscription belongs to one device of one user: registering the same
endpoint again (the browser's subscription) replaces the record, logging out
or removing the device deletes it, and so does an account's erasure
(``erase_user``, an ``ErasureHook``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from chat_server.rooms.models import Role, User
from notifications import rules
from notifications.endpoint import (
    EndpointPolicy,
    EndpointRefused,
    Resolve,
    check_endpoint,
    system_resolve,
)
from notifications.models import JobKind, PushJob, Subscription
from notifications.outbox import Outbox
from notifications.payload import PREFERENCES
from notifications.store import PushStore
from notifications.vapid import VapidKeys, b64url_decode
from notifications.worker import PushWorker

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: Subscriptions one user may hold (every browser and phone they use).
MAX_SUBSCRIPTIONS_PER_USER = 20


class PushRefused(ValueError):
    """A subscription request the server refuses: ``status``, ``code``, ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Preferences:
    """What a device wants: types switched off, quiet hours, muted conversations."""

    muted_types: tuple[str, ...] = ()
    quiet_start: str = "20:00"
    quiet_end: str = "08:00"
    timezone: str = "Europe/Paris"
    muted_conversations: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise ``PushRefused`` (400 ``invalid_field``) for a value the server cannot use."""
        for t in self.muted_types:
            if t not in PREFERENCES:
                raise PushRefused(
                    400, "invalid_field", f"muted_types: {t!r} is not one of {list(PREFERENCES)}"
                )
        for name, value in (("quiet_start", self.quiet_start), ("quiet_end", self.quiet_end)):
            if not rules.valid_time(value):
                raise PushRefused(400, "invalid_field", f"{name} must be a time HH:MM")
        if not rules.valid_timezone(self.timezone):
            raise PushRefused(400, "invalid_field", "timezone must be an IANA zone name")


def subscription_id(endpoint: str) -> str:
    """The id of the subscription with this endpoint (not the endpoint: it is a secret URL)."""
    return hashlib.sha256(endpoint.encode()).hexdigest()[:32]


def subscription_json(sub: Subscription) -> dict[str, object]:
    """What the API shows of a subscription (never its keys, never the whole endpoint)."""
    return {
        "id": sub.id,
        "device_id": sub.device_id,
        "push_service": sub.endpoint.split("/")[2] if sub.endpoint.count("/") >= 2 else "",
        "created_at": sub.created_at,
        "muted_types": list(sub.muted_types),
        "quiet_start": sub.quiet_start,
        "quiet_end": sub.quiet_end,
        "timezone": sub.timezone,
        "muted_conversations": list(sub.muted_conversations),
    }


def _check_key(name: str, value: str, size: int) -> None:
    try:
        raw = b64url_decode(value)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != size or (size == 65 and raw[0] != 4):
        raise PushRefused(
            400, "invalid_field", f"keys.{name} must be the base64url of {size} bytes"
        )


class PushService:
    """Subscriptions, preferences, the outbox writer and (if in-process) the worker."""

    def __init__(
        self,
        store: PushStore,
        vapid: VapidKeys,
        policy: EndpointPolicy,
        clock: Clock,
        outbox: Outbox,
        worker: PushWorker | None = None,
        resolve: Resolve = system_resolve,
    ) -> None:
        self.store = store
        self.vapid = vapid
        self.policy = policy
        self._clock = clock
        self.outbox = outbox
        self.worker = worker
        self._resolve = resolve

    async def subscribe(
        self,
        user_id: str,
        device_id: str,
        endpoint: str,
        p256dh: str,
        auth: str,
        prefs: Preferences,
    ) -> Subscription:
        """Register (or update) this device's subscription after the endpoint policy's checks."""
        _check_key("p256dh", p256dh, 65)
        _check_key("auth", auth, 16)
        prefs.check()
        try:
            await check_endpoint(endpoint, self.policy, self._resolve)
        except EndpointRefused as exc:
            raise PushRefused(400, exc.code, exc.message) from None
        sub_id = subscription_id(endpoint)
        existing = await self.store.subscriptions_of([user_id])
        if len(existing) >= MAX_SUBSCRIPTIONS_PER_USER and all(s.id != sub_id for s in existing):
            raise PushRefused(
                409,
                "too_many_subscriptions",
                f"at most {MAX_SUBSCRIPTIONS_PER_USER} push subscriptions per account",
            )
        # One device holds one subscription: a new endpoint replaces the device's old one.
        for s in existing:
            if s.device_id == device_id and s.id != sub_id:
                await self.store.delete_subscription(s.id)
        sub = Subscription(
            id=sub_id,
            user_id=user_id,
            device_id=device_id,
            endpoint=endpoint,
            p256dh=p256dh,
            auth=auth,
            created_at=self._clock(),
            muted_types=prefs.muted_types,
            quiet_start=prefs.quiet_start,
            quiet_end=prefs.quiet_end,
            timezone=prefs.timezone,
            muted_conversations=prefs.muted_conversations,
        )
        await self.store.put_subscription(sub)
        self.outbox.forget(user_id)
        return sub

    async def update_preferences(
        self, user_id: str, device_id: str, prefs: Preferences
    ) -> Subscription:
        """Change the preferences of this device's subscription (404 ``not_subscribed``)."""
        prefs.check()
        for s in await self.store.subscriptions_of([user_id]):
            if s.device_id == device_id:
                updated = replace(
                    s,
                    muted_types=prefs.muted_types,
                    quiet_start=prefs.quiet_start,
                    quiet_end=prefs.quiet_end,
                    timezone=prefs.timezone,
                    muted_conversations=prefs.muted_conversations,
                )
                await self.store.put_subscription(updated)
                return updated
        raise PushRefused(404, "not_subscribed", "this device has no push subscription")

    async def subscriptions(self, user_id: str) -> list[Subscription]:
        """The user's subscriptions (every device)."""
        return await self.store.subscriptions_of([user_id])

    async def unsubscribe(self, user_id: str, device_id: str, sub_id: str | None = None) -> int:
        """Delete this device's subscription (or the user's subscription ``sub_id``)."""
        if sub_id is None:
            return await self.store.delete_device_subscriptions(user_id, device_id)
        sub = await self.store.get_subscription(sub_id)
        if sub is None or sub.user_id != user_id:
            return 0
        return int(await self.store.delete_subscription(sub_id))

    async def forget_device(self, user_id: str, device_id: str | None) -> int:
        """Logout or device removal: the device's subscriptions go (all of them if None)."""
        self.outbox.forget(user_id)
        if device_id is None:
            return await self.store.delete_user_subscriptions(user_id)
        return await self.store.delete_device_subscriptions(user_id, device_id)

    async def erase_user(self, user_id: str, conversation_ids: Sequence[str]) -> int:
        """``ErasureHook``: the user's subscriptions, and jobs for them or their conversations."""
        removed = await self.store.delete_user_subscriptions(user_id)
        removed += await self.store.delete_user_jobs(user_id, conversation_ids)
        return removed

    async def warn_inactive(self, user: User, deletion_at: float) -> None:
        """``WarningHook``: push the inactivity warning to a staff member's devices.

        A beneficiary's warning is a message in their thread, pushed like any other."""
        if user.role is Role.BENEFICIARY:
            return
        now = self._clock()
        await self.outbox.add(
            PushJob(
                id=f"n:{user.id}:{int(deletion_at)}",
                kind=JobKind.NOTICE,
                recipients=(user.id,),
                created_at=now,
                due_at=now,
                data={"notice": "inactivity", "deletion_at": deletion_at, "preference": "messages"},
            )
        )
