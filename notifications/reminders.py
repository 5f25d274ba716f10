"""Reminders from the server-visible ``meta`` of appointments and actions.

When an item's event is stored, the item is folded again from its events
(``chat_server.rooms.items.fold``) and its reminders are replaced: every
reminder job of the item is deleted, then the ones its current state calls
for are written to the outbox, due at the moment they must go:

- an appointment (not cancelled): the day before (``starts_at`` - 24 h) and
  one hour before (``starts_at`` - 1 h);
- an action to do (``todo`` or ``in_progress``) with a due date: the day
  before (``due`` - 24 h).

So a change moves them, and a cancelled appointment or an action done or
cancelled has none left. A moment already past is skipped. The jobs go to the
beneficiary; their ids ``r:<conversation>:<item>:<day|hour>`` make each one
sent once (the worker deletes a job once delivered). Quiet hours apply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from chat_server.rooms import items
from chat_server.rooms.models import Conversation, StoredMessage
from chat_server.storage.base import MessageStore, StoreError
from notifications.models import JobKind, PushJob
from notifications.store import PushStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]

DAY = 86400
HOUR = 3600
#: Item events read to fold one item (beyond, the first ones count).
MAX_EVENTS = 5000


def reminder_prefix(conversation_id: str, item_id: str) -> str:
    """The id prefix of an item's reminder jobs."""
    return f"r:{conversation_id}:{item_id}:"


def plan(conv: Conversation, item: items.Item, now: float) -> list[PushJob]:
    """The reminder jobs ``item``'s current state calls for (none for a finished item)."""
    moments: list[tuple[str, float, int]] = []
    if item.kind == "appointment" and item.status != "cancelled" and item.starts_at:
        moments = [
            ("day", item.starts_at - DAY, item.starts_at),
            ("hour", item.starts_at - HOUR, item.starts_at),
        ]
    elif item.kind == "action" and item.status in ("todo", "in_progress") and item.due:
        moments = [("day", item.due - DAY, item.due)]
    jobs = []
    for when, due_at, at in moments:
        if due_at <= now:
            continue
        jobs.append(
            PushJob(
                id=reminder_prefix(conv.id, item.id) + when,
                kind=JobKind.REMINDER,
                recipients=(conv.beneficiary_id,),
                created_at=now,
                due_at=due_at,
                conversation_id=conv.id,
                data={
                    "item": item.id,
                    "item_type": item.kind,
                    "at": at,
                    "when": when,
                    "preference": "reminders",
                    # Useless once the moment itself has passed.
                    "ttl": max(60, int(at - due_at)),
                },
            )
        )
    return jobs


class Reminders:
    """Keeps each item's reminder jobs in line with its current state."""

    def __init__(self, store: PushStore, messages: MessageStore, clock: Clock) -> None:
        self._store = store
        self._messages = messages
        self._clock = clock

    async def item_changed(self, conv: Conversation, message: StoredMessage) -> None:
        """Reschedule the reminders of the item ``message`` is an event of."""
        item_id = message.meta.get("item")
        if message.msg_type not in items.ITEM_TYPES or not isinstance(item_id, str):
            return
        try:
            events = await self._messages.messages_by_meta(conv.id, "item", item_id, MAX_EVENTS)
            item = items.fold(events)
            await self._store.delete_jobs_with_prefix(reminder_prefix(conv.id, item_id))
            if item is None:
                return
            for job in plan(conv, item, self._clock()):
                await self._store.add_job(job)
        except StoreError as exc:
            log.warning(
                "reminders not updated", extra={"conversation_id": conv.id, "error": str(exc)}
            )
