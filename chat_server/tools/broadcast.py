"""Broadcast: a counsellor's saved lists of their own beneficiaries, and the record of each
message sent to several of them (issue #15, point 1; docs/protocol.md, "Broadcast").

Sending is the console's: it encrypts one ordinary end-to-end encrypted message per
conversation (no shared key) and sends each through the usual ``message.send``. Before
sending it records the broadcast here (``record``): which conversations, and the
``client_id`` it gives each copy. The server links each copy to its stored message by
looking the ``(conversation, sender, client_id)`` up in the message store (the same key
that makes a resend idempotent), so a record is right even if the console was closed
before it learnt an ack. A copy's state is computed from what the server sees anyway:
``pending`` (not stored yet), ``delivered`` (stored in the thread), ``read`` (the
beneficiary's read marker is at or past its ``seq``), ``transferred`` (the caller no
longer follows that conversation: its read state is no longer theirs to see).

Lists are read against who the counsellor follows now: a beneficiary transferred away for
good leaves the list (the stored list is updated when it is read); one away on a temporary
transfer stays on it, ``absent`` until the transfer ends.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from chat_server.rooms.errors import Forbidden, InvalidInput, NotFound
from chat_server.rooms.models import Conversation, Role, User
from chat_server.storage.base import AccountStore, MessageStore

log = logging.getLogger(__name__)

#: Lists per counsellor.
MAX_LISTS = 50
#: Beneficiaries per list.
MAX_MEMBERS = 200
#: Copies per broadcast.
MAX_RECIPIENTS = 200
#: A list's name, in characters once spaces are collapsed.
MAX_NAME = 80
#: Broadcast records kept per counsellor: recording a new one deletes the oldest beyond it.
KEPT_BROADCASTS = 100
#: Store look-ups run at once when resolving copies.
CONCURRENCY = 16
#: Copy look-ups (by client id) one read may make; records beyond it show their pending
#: copies as last known, and a later read looks them up.
MAX_LOOKUPS_PER_READ = 400
#: A record this young has its pending copies looked up at every read (its copies are
#: being sent, and the console shows their progress live).
FRESH_SECONDS = 120.0
#: Seconds before this process looks an older record's pending copies up again.
LOOKUP_INTERVAL_SECONDS = 30.0
#: Records whose last look-up time a process remembers (the oldest are forgotten).
REMEMBERED_LOOKUPS = 1_000


class UnknownBeneficiary(InvalidInput):
    """A list or a broadcast names someone who is not a beneficiary the caller follows."""

    code = "unknown_beneficiary"


class EmptyList(InvalidInput):
    """A list with no beneficiary."""

    code = "empty_list"


class NoRecipients(InvalidInput):
    """A broadcast with no copy."""

    code = "no_recipients"


@dataclass(frozen=True, slots=True)
class BroadcastList:
    """A saved list: its owner (a counsellor), its name and its beneficiaries' user ids."""

    id: str
    owner_id: str
    name: str
    members: tuple[str, ...]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of a broadcast: its conversation, beneficiary, client id and, once the
    server has linked it to the stored message, its ``seq``."""

    conversation_id: str
    beneficiary_id: str
    client_id: str
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Broadcast:
    """The record of one message sent to several beneficiaries (no content: the copies
    are the messages)."""

    id: str
    owner_id: str
    list_id: str | None
    label: str | None
    created_at: float
    copies: tuple[Copy, ...]


class BroadcastStore(Protocol):
    """Storage of lists (``broadcast_lists``) and records (``broadcasts``); docs/privacy.md.

    Writes are durable (majority, journaled on MongoDB) before they return; a failure
    raises ``StoreError`` and changes nothing.
    """

    async def add_list(self, lst: BroadcastList) -> None:
        """Insert a new list."""

    async def get_list(self, list_id: str) -> BroadcastList | None:
        """The list or None."""

    async def lists_of(self, owner_id: str) -> list[BroadcastList]:
        """Every list of ``owner_id``, oldest first."""

    async def update_list(
        self, list_id: str, name: str, members: Sequence[str], at: float
    ) -> BroadcastList | None:
        """Replace name and members; None if the list does not exist (last write wins)."""

    async def drop_members(self, list_id: str, gone: Sequence[str]) -> None:
        """Remove these members from the list, atomically, leaving the rest of it (name,
        other members, ``updated_at``) as it is now, whatever was read before; nothing if
        the list does not exist."""

    async def delete_list(self, list_id: str) -> bool:
        """Delete; False if it did not exist."""

    async def add_broadcast(self, record: Broadcast, keep: int) -> None:
        """Insert a record, then delete the owner's oldest records beyond the newest
        ``keep``. The deletion is best effort: if it fails, the failure is logged (one line)
        and the call still succeeds, since the record is stored; the next call prunes."""

    async def get_broadcast(self, broadcast_id: str) -> Broadcast | None:
        """The record or None."""

    async def broadcasts_of(self, owner_id: str, limit: int) -> list[Broadcast]:
        """The owner's newest ``limit`` records, newest first."""

    async def set_seqs(self, broadcast_id: str, seqs: Mapping[str, int]) -> None:
        """Set the ``seq`` of the copies of these conversations (``{conversation: seq}``)."""

    async def erase_user(self, user_id: str, conversation_ids: Sequence[str]) -> int:
        """Forget ``user_id``: their lists and records go, they leave every list, and the
        copies in ``conversation_ids`` leave every record. Returns how many documents
        changed."""


class MemoryBroadcastStore:
    """``BroadcastStore`` in this process's memory (the memory database, tests)."""

    def __init__(self) -> None:
        self._lists: dict[str, BroadcastList] = {}
        self._records: dict[str, Broadcast] = {}

    async def add_list(self, lst: BroadcastList) -> None:
        self._lists[lst.id] = lst

    async def get_list(self, list_id: str) -> BroadcastList | None:
        return self._lists.get(list_id)

    async def lists_of(self, owner_id: str) -> list[BroadcastList]:
        found = [x for x in self._lists.values() if x.owner_id == owner_id]
        return sorted(found, key=lambda x: (x.created_at, x.id))

    async def update_list(
        self, list_id: str, name: str, members: Sequence[str], at: float
    ) -> BroadcastList | None:
        old = self._lists.get(list_id)
        if old is None:
            return None
        new = replace(old, name=name, members=tuple(members), updated_at=at)
        self._lists[list_id] = new
        return new

    async def drop_members(self, list_id: str, gone: Sequence[str]) -> None:
        old = self._lists.get(list_id)
        if old is not None:
            members = tuple(m for m in old.members if m not in gone)
            self._lists[list_id] = replace(old, members=members)

    async def delete_list(self, list_id: str) -> bool:
        return self._lists.pop(list_id, None) is not None

    async def add_broadcast(self, record: Broadcast, keep: int) -> None:
        self._records[record.id] = record
        try:
            await self._prune(record.owner_id, keep)
        except Exception as exc:  # as the Mongo adapter: the record is stored
            log.warning(
                "broadcast records of %s not pruned: %s: %s",
                record.owner_id,
                type(exc).__name__,
                exc,
            )

    async def _prune(self, owner_id: str, keep: int) -> None:
        for old in (await self.broadcasts_of(owner_id, len(self._records)))[keep:]:
            del self._records[old.id]

    async def get_broadcast(self, broadcast_id: str) -> Broadcast | None:
        return self._records.get(broadcast_id)

    async def broadcasts_of(self, owner_id: str, limit: int) -> list[Broadcast]:
        found = [r for r in self._records.values() if r.owner_id == owner_id]
        found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return found[:limit]

    async def set_seqs(self, broadcast_id: str, seqs: Mapping[str, int]) -> None:
        record = self._records.get(broadcast_id)
        if record is None:
            return
        copies = tuple(
            replace(c, seq=seqs[c.conversation_id]) if c.conversation_id in seqs else c
            for c in record.copies
        )
        self._records[broadcast_id] = replace(record, copies=copies)

    async def erase_user(self, user_id: str, conversation_ids: Sequence[str]) -> int:
        changed = 0
        for key, lst in list(self._lists.items()):
            if lst.owner_id == user_id:
                del self._lists[key]
                changed += 1
            elif user_id in lst.members:
                members = tuple(m for m in lst.members if m != user_id)
                self._lists[key] = replace(lst, members=members)
                changed += 1
        gone = set(conversation_ids)
        for key, record in list(self._records.items()):
            if record.owner_id == user_id:
                del self._records[key]
                changed += 1
            elif any(c.conversation_id in gone for c in record.copies):
                copies = tuple(c for c in record.copies if c.conversation_id not in gone)
                self._records[key] = replace(record, copies=copies)
                changed += 1
        return changed


def _name(name: str) -> str:
    name = " ".join(name.split())
    if not 1 <= len(name) <= MAX_NAME:
        raise InvalidInput(f"a list's name must be 1 to {MAX_NAME} characters")
    return name


def _person(user: User | None) -> dict[str, Any]:
    if user is None:
        return {"id": None, "display_name": "Compte supprimé", "login": None}
    return {"id": user.id, "display_name": user.display_name, "login": user.login}


class BroadcastService:
    """Lists and broadcast records of counsellors, each checked against the counsellor's
    current beneficiaries. Counsellors only (anyone else: ``Forbidden``); another
    counsellor's list or record is ``NotFound``."""

    def __init__(
        self,
        store: BroadcastStore,
        messages: MessageStore,
        accounts: AccountStore,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._messages = messages
        self._accounts = accounts
        self._clock = clock
        #: broadcast id -> monotonic time of this process's last look-up of its copies.
        self._looked_up: dict[str, float] = {}

    @staticmethod
    def _counsellor(user: User) -> None:
        if user.role is not Role.COUNSELLOR:
            raise Forbidden("only a counsellor has broadcast lists")

    async def _followed(self, user: User) -> dict[str, Conversation]:
        """beneficiary id -> conversation, for those ``user`` follows now (not erased)."""
        convs = await self._messages.conversations_for(user.id)
        return {
            c.beneficiary_id: c
            for c in convs
            if c.counsellor_id == user.id and c.deleted_at is None
        }

    async def _away(self, user: User) -> dict[str, Conversation]:
        """beneficiary id -> conversation, for those away from ``user`` on a temporary
        transfer."""
        return {
            c.beneficiary_id: c
            for c in await self._messages.conversations_previously_with(user.id)
            if c.temporary_until is not None and c.deleted_at is None
        }

    async def _members(
        self, user: User, members: Sequence[str], current: Sequence[str] | None = None
    ) -> tuple[str, ...]:
        """The checked member list. Editing a list (``current`` given: its members now) also
        accepts beneficiaries away on a temporary transfer and keeps those of ``current``:
        the console only offers those followed now, and a temporary absence must not drop
        anyone from a list."""
        away: Mapping[str, Conversation] = {} if current is None else await self._away(user)
        unique = tuple(dict.fromkeys([*members, *(m for m in current or () if m in away)]))
        if not unique:
            raise EmptyList("a list needs at least one beneficiary")
        if len(unique) > MAX_MEMBERS:
            raise InvalidInput(f"a list holds at most {MAX_MEMBERS} beneficiaries")
        followed = await self._followed(user)
        for m in unique:
            if m not in followed and m not in away:
                raise UnknownBeneficiary(f"{m!r} is not one of your beneficiaries")
        return unique

    async def _own_list(self, user: User, list_id: str) -> BroadcastList:
        self._counsellor(user)
        lst = await self._store.get_list(list_id)
        if lst is None or lst.owner_id != user.id:
            raise NotFound("no such list")
        return lst

    # ------------------------------------------------------------------ lists

    async def create(self, user: User, name: str, members: Sequence[str]) -> dict[str, Any]:
        """A new list of the caller's own beneficiaries (else ``empty_list``,
        ``unknown_beneficiary``, ``invalid_input``; nothing stored)."""
        self._counsellor(user)
        clean = _name(name)
        checked = await self._members(user, members)
        if len(await self._store.lists_of(user.id)) >= MAX_LISTS:
            raise InvalidInput(f"at most {MAX_LISTS} lists per counsellor")
        now = self._clock()
        lst = BroadcastList(secrets.token_hex(16), user.id, clean, checked, now, now)
        await self._store.add_list(lst)
        return (await self._resolve(user, [lst]))[0]

    async def update(
        self, user: User, list_id: str, name: str | None, members: Sequence[str] | None
    ) -> dict[str, Any]:
        """Rename and/or replace the members of one of the caller's lists (members away on
        a temporary transfer stay on it)."""
        lst = await self._own_list(user, list_id)
        clean = _name(name) if name is not None else lst.name
        checked = (
            await self._members(user, members, current=lst.members)
            if members is not None
            else lst.members
        )
        updated = await self._store.update_list(lst.id, clean, checked, self._clock())
        if updated is None:
            raise NotFound("no such list")
        return (await self._resolve(user, [updated]))[0]

    async def delete(self, user: User, list_id: str) -> None:
        """Delete one of the caller's lists (its past broadcasts stay)."""
        lst = await self._own_list(user, list_id)
        await self._store.delete_list(lst.id)

    async def lists(self, user: User) -> list[dict[str, Any]]:
        """The caller's lists, each member with its conversation and state."""
        self._counsellor(user)
        return await self._resolve(user, await self._store.lists_of(user.id))

    async def _resolve(self, user: User, lists: Sequence[BroadcastList]) -> list[dict[str, Any]]:
        followed = await self._followed(user)
        away = await self._away(user)
        people = await self._accounts.get_users(sorted({m for x in lists for m in x.members}))
        out: list[dict[str, Any]] = []
        for lst in lists:
            kept: list[str] = []
            members: list[dict[str, Any]] = []
            for m in lst.members:
                conv = followed.get(m)
                state = "present"
                if conv is None:
                    conv = away.get(m)
                    state = "absent"
                if conv is None or m not in people:
                    continue  # transferred for good, or erased: leaves the list
                kept.append(m)
                members.append(
                    {
                        "beneficiary": _person(people[m]),
                        "conversation_id": conv.id,
                        "state": state,
                        "absent_until": conv.temporary_until if state == "absent" else None,
                        "archived": conv.archived_at is not None,
                    }
                )
            if tuple(kept) != lst.members:
                # Only those removed, atomically: an edit made since the read is kept.
                await self._store.drop_members(lst.id, [m for m in lst.members if m not in kept])
            out.append(
                {
                    "id": lst.id,
                    "name": lst.name,
                    "members": members,
                    "created_at": lst.created_at,
                    "updated_at": lst.updated_at,
                }
            )
        return out

    # ------------------------------------------------------------------ broadcasts

    async def record(
        self, user: User, list_id: str | None, copies: Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        """Record a broadcast before its copies are sent: ``copies`` is
        ``[(conversation_id, client_id)]``, each a conversation the caller follows now and
        that is not archived (else ``unknown_beneficiary``), each conversation once,
        1 to ``MAX_RECIPIENTS`` (else ``no_recipients`` / ``invalid_input``). ``list_id``,
        if given, must be one of the caller's lists (else ``NotFound``)."""
        self._counsellor(user)
        if not copies:
            raise NoRecipients("a broadcast needs at least one recipient")
        if len(copies) > MAX_RECIPIENTS:
            raise InvalidInput(f"a broadcast goes to at most {MAX_RECIPIENTS} beneficiaries")
        label = None
        if list_id is not None:
            label = (await self._own_list(user, list_id)).name
        by_id = {c.id: c for c in (await self._followed(user)).values()}
        seen: set[str] = set()
        out: list[Copy] = []
        for conversation_id, client_id in copies:
            conv = by_id.get(conversation_id)
            if conv is None or conv.archived_at is not None:
                raise UnknownBeneficiary(
                    f"conversation {conversation_id!r} is not one of your beneficiaries'"
                )
            if conversation_id in seen:
                raise InvalidInput(f"conversation {conversation_id!r} is named twice")
            seen.add(conversation_id)
            out.append(Copy(conversation_id, conv.beneficiary_id, client_id))
        record = Broadcast(
            secrets.token_hex(16), user.id, list_id, label, self._clock(), tuple(out)
        )
        await self._store.add_broadcast(record, KEPT_BROADCASTS)
        return (await self._shape(user, [record]))[0]

    async def broadcasts(self, user: User, limit: int) -> list[dict[str, Any]]:
        """The caller's newest ``limit`` broadcasts with each copy's state."""
        self._counsellor(user)
        return await self._shape(user, await self._store.broadcasts_of(user.id, limit))

    async def broadcast(self, user: User, broadcast_id: str) -> dict[str, Any]:
        """One of the caller's broadcasts with each copy's state."""
        self._counsellor(user)
        record = await self._store.get_broadcast(broadcast_id)
        if record is None or record.owner_id != user.id:
            raise NotFound("no such broadcast")
        return (await self._shape(user, [record]))[0]

    async def _link(self, record: Broadcast) -> Broadcast:
        """Look the copies without a ``seq`` up by client id; store what was found."""
        waiting = [c for c in record.copies if c.seq is None]
        if not waiting:
            return record
        gate = asyncio.Semaphore(CONCURRENCY)

        async def seq_of(c: Copy) -> int | None:
            async with gate:
                m = await self._messages.message_by_client_id(
                    c.conversation_id, record.owner_id, c.client_id
                )
            return None if m is None else m.seq

        found = await asyncio.gather(*(seq_of(c) for c in waiting))
        seqs = {c.conversation_id: s for c, s in zip(waiting, found, strict=True) if s}
        if not seqs:
            return record
        await self._store.set_seqs(record.id, seqs)
        copies = tuple(
            replace(c, seq=seqs[c.conversation_id]) if c.conversation_id in seqs else c
            for c in record.copies
        )
        return replace(record, copies=copies)

    async def _link_some(self, records: Sequence[Broadcast]) -> list[Broadcast]:
        """``_link`` the records with pending copies, newest first, within
        ``MAX_LOOKUPS_PER_READ`` look-ups: every read for a record younger than
        ``FRESH_SECONDS``, at most once per ``LOOKUP_INTERVAL_SECONDS`` (per process) for an
        older one. A read so costs a bounded number of store queries however many copies
        never reached the thread (a copy stays ``pending`` until one is stored; the
        console retries it under the same client id)."""
        now = time.monotonic()
        budget = MAX_LOOKUPS_PER_READ
        out: list[Broadcast] = []
        for r in records:
            waiting = sum(c.seq is None for c in r.copies)
            last = self._looked_up.get(r.id)
            due = (
                last is None
                or self._clock() - r.created_at < FRESH_SECONDS
                or now - last >= LOOKUP_INTERVAL_SECONDS
            )
            if waiting and due and waiting <= budget:
                budget -= waiting
                r = await self._link(r)
                self._looked_up.pop(r.id, None)
                self._looked_up[r.id] = now
                while len(self._looked_up) > REMEMBERED_LOOKUPS:
                    del self._looked_up[next(iter(self._looked_up))]
            out.append(r)
        return out

    async def _shape(self, user: User, records: Sequence[Broadcast]) -> list[dict[str, Any]]:
        linked = await self._link_some(records)
        followed = {c.id for c in (await self._followed(user)).values()}
        followed |= {c.id for c in (await self._away(user)).values()}
        conv_ids = sorted({c.conversation_id for r in linked for c in r.copies})
        markers = await self._messages.read_markers(conv_ids)
        people = await self._accounts.get_users(
            sorted({c.beneficiary_id for r in linked for c in r.copies})
        )
        out: list[dict[str, Any]] = []
        for r in linked:
            copies: list[dict[str, Any]] = []
            for c in r.copies:
                if c.conversation_id not in followed:
                    state = "transferred"
                elif c.seq is None:
                    state = "pending"
                elif markers.get(c.conversation_id, {}).get(c.beneficiary_id, 0) >= c.seq:
                    state = "read"
                else:
                    state = "delivered"
                copies.append(
                    {
                        "conversation_id": c.conversation_id,
                        "beneficiary": _person(people.get(c.beneficiary_id)),
                        "client_id": c.client_id,
                        "seq": c.seq,
                        "state": state,
                    }
                )
            out.append(
                {
                    "id": r.id,
                    "list_id": r.list_id,
                    "label": r.label,
                    "created_at": r.created_at,
                    "total": len(copies),
                    "delivered": sum(c["state"] in {"delivered", "read"} for c in copies),
                    "read": sum(c["state"] == "read" for c in copies),
                    "copies": copies,
                }
            )
        return out

    async def erase_user(self, user_id: str, conversation_ids: Sequence[str]) -> int:
        """``ErasureHook``: an erased counsellor's lists and records go; an erased
        beneficiary leaves every list, and their conversations' copies every record."""
        return await self._store.erase_user(user_id, conversation_ids)
