"""The outbox writer: the web process records push jobs, after the durable write.

``Outbox.message_stored`` is called by ``ConversationService.send`` once the
message is durably stored and before its ack: the job is keyed by
(conversation, seq), so a second call for the same message writes nothing.
A store failure here is logged and never turns the stored message into an
error for its sender (the message is already durable; only its push is lost,
which the log line says). Both entry points are bounded by
``STORE_TIMEOUT_SECONDS`` (``message_stored`` by ``ConversationService``,
``key_request`` here): a store that freezes right after the message's append
delays its ack by that much at most, then the sender gets the ack all the same. Nobody to notify (no
recipient has a subscription): no job at all, so a deployment without push
pays one indexed read per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from chat_server.rooms.models import Conversation, StoredMessage
from chat_server.storage.base import StoreError
from notifications.models import JobKind, PushJob
from notifications.payload import PREFERENCE_OF_TYPE
from notifications.reminders import Reminders
from notifications.store import PushStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: How long whether a user has a push subscription is remembered (see ``_subscribed``).
KNOWN_SECONDS = 30.0
MAX_KNOWN = 50_000


def message_job_id(conversation_id: str, seq: int) -> str:
    """The outbox id of a message's push job."""
    return f"m:{conversation_id}:{seq}"


class Outbox:
    """Writes push jobs into the ``PushStore``; wakes an in-process worker if there is one."""

    def __init__(
        self,
        store: PushStore,
        clock: Clock,
        wake: Callable[[], None] | None = None,
        reminders: Reminders | None = None,
        timeout: float = 2.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self.wake = wake
        self.reminders = reminders
        self._timeout = timeout
        # user id -> (has a subscription, until when this answer is trusted)
        self._known: dict[str, tuple[bool, float]] = {}

    async def add(self, job: PushJob) -> bool:
        """Write ``job`` (idempotent by id); False if it existed or could not be written."""
        try:
            added = await self._store.add_job(job)
        except StoreError as exc:
            log.warning("push job not written", extra={"job": job.id, "error": str(exc)})
            return False
        if added and self.wake is not None:
            self.wake()
        return added

    def forget(self, user_id: str) -> None:
        """A subscription of ``user_id`` was added or removed here: ask the store next time."""
        self._known.pop(user_id, None)

    async def _subscribed(self, user_ids: tuple[str, ...]) -> bool:
        """True if one of these users has a subscription (no job, no worker round otherwise).

        The answer per user is kept ``KNOWN_SECONDS`` (a subscription made through
        another process is noticed within that time; one made here at once), so a busy
        conversation costs the store one read per user and period, not one per message.
        A store failure answers True: the job is then written if the store allows."""
        now = time.monotonic()
        unknown = []
        for uid in user_ids:
            known = self._known.get(uid)
            if known is None or known[1] < now:
                unknown.append(uid)
            elif known[0]:
                return True
        if not unknown:
            return False
        try:
            subs = await self._store.subscriptions_of(unknown)
        except StoreError:
            return True
        if len(self._known) > MAX_KNOWN:
            self._known.clear()
        holders = {s.user_id for s in subs}
        for uid in unknown:
            self._known[uid] = (uid in holders, now + KNOWN_SECONDS)
        return bool(holders)

    async def message_stored(self, conv: Conversation, message: StoredMessage) -> None:
        """Record the push of a stored message to the other member(s) of ``conv``; an item's
        event also reschedules the item's reminders. The caller bounds it in time
        (``ConversationService``: one timer per send, not one more here)."""
        if self.reminders is not None and message.msg_type in ("action", "appointment"):
            await self.reminders.item_changed(conv, message)
        if message.msg_type not in PREFERENCE_OF_TYPE:
            return
        recipients = tuple(m for m in conv.members if m and m != message.sender_id)
        if not recipients or not await self._subscribed(recipients):
            return
        now = self._clock()
        await self.add(
            PushJob(
                id=message_job_id(conv.id, message.seq),
                kind=JobKind.MESSAGE,
                recipients=recipients,
                created_at=now,
                due_at=now,
                conversation_id=conv.id,
                seq=message.seq,
                data={"preference": PREFERENCE_OF_TYPE[message.msg_type]},
            )
        )

    async def key_request(self, conv: Conversation, device_id: str) -> None:
        """Tell the conversation's counsellor that a new device waits for approval (within
        ``timeout``, else logged)."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._key_request(conv, device_id)
        except TimeoutError:
            log.warning(
                "push job not written: the store did not answer in time",
                extra={"conversation_id": conv.id},
            )

    async def _key_request(self, conv: Conversation, device_id: str) -> None:
        if not conv.counsellor_id or not await self._subscribed((conv.counsellor_id,)):
            return
        now = self._clock()
        await self.add(
            PushJob(
                id=f"k:{conv.id}:{device_id}",
                kind=JobKind.KEY_REQUEST,
                recipients=(conv.counsellor_id,),
                created_at=now,
                due_at=now,
                conversation_id=conv.id,
                data={"preference": "key_requests"},
            )
        )
