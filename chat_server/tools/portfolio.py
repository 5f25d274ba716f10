"""The portfolio dashboard: one row per beneficiary, built only from what the server sees.

A counsellor gets the beneficiaries they currently follow; a supervisor gets every
beneficiary of their structure with its counsellor (optionally one counsellor's).
Nothing here reads a message body: ids, times, senders, read markers, the
server-visible ``meta`` of actions and appointments, presence, the flag
(docs/security.md, "What the server can see").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chat_server.rooms import items
from chat_server.rooms.errors import Forbidden, NotFound
from chat_server.rooms.models import Conversation, Role, StoredMessage, User
from chat_server.storage.base import AccountStore, MessageStore, PresenceStore

#: The newest messages read per conversation to find when the beneficiary started waiting.
RECENT_MESSAGES = 50
#: Item messages folded per conversation (as ``GET /api/conversations/{id}/items``).
MAX_ITEM_MESSAGES = 5000
#: Conversations read from the store at once.
CONCURRENCY = 16
OPEN_ACTION = frozenset({"todo", "in_progress"})


@dataclass(frozen=True, slots=True)
class PortfolioRow:
    """One beneficiary of the dashboard (see ``docs/protocol.md``, "Portfolio")."""

    conversation_id: str
    beneficiary: dict[str, object]
    counsellor: dict[str, object]
    temporary_until: float | None
    last_app_activity: float | None
    online: bool
    unread_counsellor: int
    unread_beneficiary: int
    waiting_since: float | None
    open_actions: int
    overdue_actions: int
    next_appointment: int | None
    flagged: bool
    archived: bool
    last_at: float

    def public(self) -> dict[str, Any]:
        """The JSON shape of one row."""
        return {
            "conversation_id": self.conversation_id,
            "beneficiary": self.beneficiary,
            "counsellor": self.counsellor,
            "temporary_until": self.temporary_until,
            "last_app_activity": self.last_app_activity,
            "online": self.online,
            "unread_counsellor": self.unread_counsellor,
            "unread_beneficiary": self.unread_beneficiary,
            "waiting_since": self.waiting_since,
            "open_actions": self.open_actions,
            "overdue_actions": self.overdue_actions,
            "next_appointment": self.next_appointment,
            "flagged": self.flagged,
            "archived": self.archived,
            "last_at": self.last_at,
        }


def waiting_since(recent: Sequence[StoredMessage], beneficiary_id: str) -> float | None:
    """When the beneficiary's unanswered run began: the first of their messages after the
    last one from anyone else (system events aside); None if the last word is not theirs.

    ``recent`` is ascending; a run longer than ``recent`` starts at its oldest message.
    """
    since: float | None = None
    for m in reversed(recent):
        if m.sender_id == "system":
            continue
        if m.sender_id != beneficiary_id:
            break
        since = m.created_at
    return since


class PortfolioService:
    """Builds the dashboard's rows for a counsellor or a supervisor."""

    def __init__(
        self,
        messages: MessageStore,
        accounts: AccountStore,
        presence: PresenceStore,
        clock: Callable[[], float],
    ) -> None:
        self._messages = messages
        self._accounts = accounts
        self._presence = presence
        self._clock = clock

    def now(self) -> float:
        """The domain's current time (the rows' "overdue" and "upcoming" are relative to it)."""
        return self._clock()

    async def rows(self, user: User, counsellor_id: str | None = None) -> list[PortfolioRow]:
        """The rows ``user`` may see, most recent activity first.

        A counsellor: the conversations they currently follow (``counsellor_id``, if
        given, must be their own id: else ``Forbidden``). A supervisor: their
        structure's conversations, or one counsellor's (``NotFound`` if that is not a
        counsellor of the structure). Beneficiaries: ``Forbidden``. Deleted accounts'
        tombstones are left out; archived conversations are in, marked.
        """
        convs = await self._conversations(user, counsellor_id)
        convs = [c for c in convs if c.deleted_at is None]
        people = await self._accounts.get_users(
            sorted({c.beneficiary_id for c in convs} | {c.counsellor_id for c in convs})
        )
        now = self._clock()
        presence = await self._presence.presence([c.beneficiary_id for c in convs], now)
        markers = await self._messages.read_markers([c.id for c in convs])
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(conv: Conversation) -> PortfolioRow:
            async with gate:
                recent = (
                    await self._messages.messages_before(
                        conv.id, conv.last_seq + 1, RECENT_MESSAGES
                    )
                    if conv.last_seq
                    else []
                )
                found = await self._messages.messages_of_types(
                    conv.id, items.ITEM_TYPES, MAX_ITEM_MESSAGES
                )
            folded = items.fold_all(found)
            actions = [i for i in folded if i.kind == "action" and i.status in OPEN_ACTION]
            upcoming = [
                i.starts_at
                for i in folded
                if i.kind == "appointment"
                and i.status == "scheduled"
                and i.starts_at is not None
                and i.starts_at > now
            ]
            beneficiary = people.get(conv.beneficiary_id)
            counsellor = people.get(conv.counsellor_id)
            pres = presence.get(conv.beneficiary_id)
            wrote = [m.created_at for m in recent if m.sender_id == conv.beneficiary_id]
            activity = [
                t
                for t in (
                    beneficiary.active_at if beneficiary else None,
                    pres.last_seen if pres else None,
                    max(wrote) if wrote else None,
                )
                if t
            ]
            online = bool(pres and pres.online)
            read = markers.get(conv.id, {})
            return PortfolioRow(
                conversation_id=conv.id,
                beneficiary=(beneficiary.public() if beneficiary else {"id": conv.beneficiary_id}),
                counsellor={
                    "id": conv.counsellor_id,
                    "display_name": counsellor.display_name if counsellor else None,
                },
                temporary_until=conv.temporary_until,
                last_app_activity=now if online else (max(activity) if activity else None),
                online=online,
                unread_counsellor=max(0, conv.last_seq - read.get(conv.counsellor_id, 0)),
                unread_beneficiary=max(0, conv.last_seq - read.get(conv.beneficiary_id, 0)),
                waiting_since=waiting_since(recent, conv.beneficiary_id),
                open_actions=len(actions),
                overdue_actions=sum(1 for a in actions if a.due is not None and a.due < now),
                next_appointment=min(upcoming) if upcoming else None,
                flagged=conv.flagged,
                archived=conv.archived_at is not None,
                last_at=conv.last_at,
            )

        rows = await asyncio.gather(*(one(c) for c in convs))
        return sorted(rows, key=lambda r: -r.last_at)

    async def _conversations(self, user: User, counsellor_id: str | None) -> list[Conversation]:
        if user.role is Role.COUNSELLOR:
            if counsellor_id not in (None, user.id):
                raise Forbidden("a counsellor sees only their own beneficiaries")
            return [
                c
                for c in await self._messages.conversations_for(user.id)
                if c.counsellor_id == user.id
            ]
        if user.role is Role.SUPERVISOR and user.structure_id is not None:
            convs = await self._messages.conversations_in_structure(user.structure_id)
            if counsellor_id is None:
                return convs
            staff = await self._accounts.users_in_structure(user.structure_id, Role.COUNSELLOR)
            if counsellor_id not in {s.id for s in staff}:
                raise NotFound("no such counsellor in your structure")
            return [c for c in convs if c.counsellor_id == counsellor_id]
        raise Forbidden("only counsellors and supervisors have a portfolio")
