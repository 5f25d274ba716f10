"""ConversationService: every read and write of a conversation goes through here.

Each method first checks that the caller is a member of the conversation
(the beneficiary or the current counsellor); nobody else reads or writes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgspec

from chat_server import protocol as p
from chat_server.deadlines import Deadlines
from chat_server.hub import KIND_MESSAGE, Hub
from chat_server.rooms import items, types
from chat_server.rooms.errors import (
    BodyTooLarge,
    ConversationArchived,
    ConversationDeleted,
    E2EEError,
    Forbidden,
    InvalidInput,
    NotMember,
    OutcomeUnknown,
    Unavailable,
)
from chat_server.rooms.models import Conversation, NewMessage, Role, StoredMessage, User
from chat_server.storage.base import (
    AccountStore,
    MessageStore,
    NonceReused,
    PresenceStore,
    StoreError,
    StoreOutcomeUnknown,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: The message types ``_check_context`` checks against the conversation's state.
_CONTEXT_TYPES = frozenset((*items.ITEM_TYPES, "attachment", "notice", "edit", "delete"))
#: The message types that bind (an attachment) or release (a delete) a blob once stored.
_BLOB_TYPES = ("attachment", "delete")

#: Events read to fold one item (or the edits of one message); beyond, the first ones count.
MAX_ITEM_EVENTS = 5000
#: Item and notice messages read for ``GET /api/conversations/{id}/items`` (the newest).
MAX_ITEM_MESSAGES = 5000


class MessageVerifier(Protocol):
    """The end-to-end checks a message must pass before it is stored."""

    async def check_message(self, conversation: Conversation, message: NewMessage) -> None:
        """Raise ``E2EEError`` with a specific code if the message must be refused."""


class AttachmentHook(Protocol):
    """The attachment checks around a send (``chat_server/attachments.py``)."""

    async def check_send(
        self, conv: Conversation, sender_id: str, client_id: str, meta: dict[str, Any]
    ) -> None:
        """Raise a ``DomainError`` if the ``attachment`` message must be refused."""

    async def after_send(self, conv: Conversation, stored: StoredMessage) -> None:
        """After a new message is stored: bind its blob, or delete a deleted one's. Never
        raises for a store failure (the message is stored already)."""


class NoVerification:
    """Verifier used when end-to-end encryption is not required (tests of the core)."""

    async def check_message(self, conversation: Conversation, message: NewMessage) -> None:
        return None


def writable(conv: Conversation) -> None:
    """Refuse a write to an archived conversation or a deleted account's tombstone."""
    if conv.deleted_at is not None:
        raise ConversationDeleted("the beneficiary's account was deleted; nothing can be sent")
    if conv.archived_at is not None:
        raise ConversationArchived(
            "this conversation is archived and read-only; a supervisor can restore it"
        )


def archive_json(conv: Conversation) -> dict[str, Any] | None:
    """The archive state clients show (None: not archived)."""
    if conv.archived_at is None:
        return None
    return {"at": conv.archived_at, "by": conv.archived_by, "reason": conv.archive_reason}


def message_out(m: StoredMessage) -> p.MessageOut:
    """The wire shape of a stored message."""
    return p.MessageOut(
        conversation=m.conversation_id,
        seq=m.seq,
        client_id=m.client_id,
        sender=m.sender_id,
        device=m.device_id,
        msg_type=m.msg_type,
        body=m.body,
        meta=m.meta,
        epoch=m.epoch,
        nonce=m.nonce,
        sig=m.sig,
        created_at=m.created_at,
        v=m.version,
    )


def message_json(m: StoredMessage) -> dict[str, Any]:
    """A stored message as JSON builtins (binary fields in base64), as history pages give it."""
    out: dict[str, Any] = msgspec.to_builtins(message_out(m))
    return out


class ConversationService:
    """Membership checks, sending, reading, read markers, typing, the conversation list."""

    def __init__(
        self,
        messages: MessageStore,
        accounts: AccountStore,
        presence: PresenceStore,
        hub: Hub,
        clock: Clock,
        verifier: MessageVerifier,
        max_body_bytes: int,
        store_timeout: float = 2.0,
    ) -> None:
        self._messages = messages
        self._accounts = accounts
        self._presence = presence
        self._hub = hub
        self._clock = clock
        self._verifier = verifier
        self._max_body = max_body_bytes
        self._store_timeout = store_timeout
        # A send's deadline fires at most a tick late: an eighth of it, at most 50 ms.
        self._deadlines = Deadlines(tick=min(0.05, store_timeout / 8))
        #: Called after a new message's durable write, before its ack (the push outbox).
        self.on_stored: Callable[[Conversation, StoredMessage], Awaitable[None]] | None = None
        #: Set by ``services.py`` once the attachment service exists.
        self.attachments: AttachmentHook | None = None

    async def member_conversation(self, user_id: str, conversation_id: str) -> Conversation:
        """The conversation if ``user_id`` is a member; else ``NotMember``."""
        conv = await self._messages.get_conversation(conversation_id)
        if conv is None or user_id not in conv.members:
            raise NotMember("you are not a member of this conversation")
        return conv

    async def send(
        self, user: User, device_id: str, frame: p.MessageSend, origin: str
    ) -> tuple[StoredMessage, bool]:
        """Check, store durably, then publish. Returns ``(stored, created)``.

        Nothing is stored if any check fails. The publish happens after the
        durable write; a resend of a stored ``client_id`` publishes nothing.
        """
        if len(frame.body) > self._max_body:
            raise BodyTooLarge(f"body is larger than {self._max_body} bytes")
        mtype = types.lookup(frame.msg_type)
        mtype.validate(frame.meta)
        # One deadline for the whole send: during an outage the sender hears it in about
        # STORE_TIMEOUT_SECONDS, whichever store call hangs. One coarse deadline watched
        # by a shared timer (`chat_server.deadlines`), not a timer per send: asyncio's
        # cost about 16 µs per send, re-armed twice (docs/benchmarks.md, issue #16).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._store_timeout
        # Where a failure happens decides its error: "read" (nothing stored), "append"
        # (outcome unknown), "publish" (raised as is), "after" (the ack goes all the same).
        stage = "read"
        try:
            with self._deadlines.scope(deadline) as budget:
                conv = await self.member_conversation(user.id, frame.conversation)
                writable(conv)
                new = NewMessage(
                    conversation_id=conv.id,
                    client_id=frame.client_id,
                    sender_id=user.id,
                    device_id=device_id,
                    msg_type=frame.msg_type,
                    body=frame.body,
                    meta=frame.meta,
                    epoch=frame.epoch,
                    nonce=frame.nonce,
                    sig=frame.sig,
                    version=frame.v,
                )
                await self._verifier.check_message(conv, new)
                if frame.msg_type in _CONTEXT_TYPES:
                    await self._check_context(conv, user.id, frame)
                stage = "append"
                stored, created = await self._messages.append(new, self._clock())
                if created:
                    # Stored: publishing is not bounded here (as before the timer), then
                    # the push job and the sender's read marker (sending implies having
                    # read everything before it) get one more STORE_TIMEOUT_SECONDS, on
                    # the same timer. A store failing or freezing now never turns the ack
                    # into an error nor holds it longer: one log line says what is missing.
                    budget.deadline = None
                    stage = "publish"
                    if self.attachments is not None and frame.msg_type in _BLOB_TYPES:
                        await self.attachments.after_send(conv, stored)
                    await self._publish_message(conv, stored, origin)
                    budget.deadline = loop.time() + self._store_timeout
                    stage = "after"
                    if self.on_stored is not None:
                        await self.on_stored(conv, stored)
                    await self._messages.advance_read(conv.id, user.id, stored.seq)
        except TimeoutError as exc:
            if stage == "after":
                self._not_recorded(frame.conversation, exc)
                return stored, created
            if stage == "publish":
                raise
            if stage == "append":
                raise self._unconfirmed(frame.conversation, exc) from None
            raise Unavailable("the store is unavailable; nothing was stored; retry") from None
        except StoreError as exc:
            if stage == "after":
                self._not_recorded(frame.conversation, exc)
                return stored, created
            if stage != "append":
                raise  # a read failed: the transport answers store_unavailable
            if isinstance(exc, NonceReused):
                raise E2EEError("nonce_reused", "this device already used this nonce") from None
            if isinstance(exc, StoreOutcomeUnknown):
                raise self._unconfirmed(frame.conversation, exc) from None
            log.warning(
                "append failed", extra={"conversation_id": frame.conversation, "error": str(exc)}
            )
            raise Unavailable("the store is unavailable; nothing was stored; retry") from None
        return stored, created

    @staticmethod
    def _not_recorded(conversation_id: str, exc: BaseException) -> None:
        log.warning(
            "push job or read marker not recorded",
            extra={"conversation_id": conversation_id, "error": repr(exc)},
        )

    @staticmethod
    def _unconfirmed(conversation_id: str, exc: BaseException) -> OutcomeUnknown:
        log.warning(
            "append not confirmed", extra={"conversation_id": conversation_id, "error": repr(exc)}
        )
        return OutcomeUnknown(
            "the store did not confirm the message in time; resend it with the same "
            "client_id (it is never stored twice)"
        )

    async def _check_context(
        self, conv: Conversation, sender_id: str, frame: p.MessageSend
    ) -> None:
        """The checks that need the conversation's state: items, notices, edits and deletes
        (``_CONTEXT_TYPES``: ``send`` calls this for those types only).

        A resend (a message of the sender with the same ``client_id`` among the
        ones read) is not checked again: the store answers it with the first ack.
        """
        now = self._clock()
        meta = frame.meta
        if frame.msg_type in items.ITEM_TYPES:
            events = await self._messages.messages_by_meta(
                conv.id, "item", meta["item"], MAX_ITEM_EVENTS
            )
            if any(e.client_id == frame.client_id and e.sender_id == sender_id for e in events):
                return
            items.check_event(
                frame.msg_type,
                meta,
                events,
                sender_id=sender_id,
                counsellor_id=conv.counsellor_id,
                now=now,
            )
        elif frame.msg_type == "attachment" and self.attachments is not None:
            await self.attachments.check_send(conv, sender_id, frame.client_id, meta)
        elif frame.msg_type == "notice":
            items.check_notice(meta, sender_id=sender_id, counsellor_id=conv.counsellor_id, now=now)
        elif frame.msg_type in ("edit", "delete"):
            seq = int(meta["target_seq"])
            page = await self._messages.messages_after(conv.id, seq - 1, 1)
            target = page[0] if page and page[0].seq == seq else None
            deleted = False
            if target is not None:
                changes = await self._messages.messages_by_meta(
                    conv.id, "target_seq", seq, MAX_ITEM_EVENTS
                )
                if any(
                    c.client_id == frame.client_id and c.sender_id == sender_id for c in changes
                ):
                    return
                deleted = any(c.msg_type == "delete" for c in changes)
            items.check_target(frame.msg_type, target, seq, sender_id, deleted)

    async def items(self, user: User, conversation_id: str) -> dict[str, Any]:
        """The server-visible part of the conversation's items and its current notice.

        ``items``: every action and appointment folded from its events (oldest
        first); ``notice``: the latest notice if it has not ended, else None.
        """
        conv = await self.member_conversation(user.id, conversation_id)
        found = await self._messages.messages_of_types(
            conv.id, (*items.ITEM_TYPES, "notice"), MAX_ITEM_MESSAGES
        )
        notices = [m for m in found if m.msg_type == "notice"]
        notice: dict[str, Any] | None = None
        if notices:
            last = notices[-1]
            ends = last.meta.get("ends_at")
            if isinstance(ends, int) and ends > self._clock():
                notice = {
                    "seq": last.seq,
                    "starts_at": last.meta.get("starts_at"),
                    "ends_at": ends,
                    "created_at": last.created_at,
                }
        return {"items": [i.public() for i in items.fold_all(found)], "notice": notice}

    async def post_system(
        self,
        conv: Conversation,
        msg_type: str,
        meta: dict[str, Any],
        client_id: str,
        actor: str | None = None,
    ) -> StoredMessage:
        """Append a server-written event (counsellor changed, epoch rotated...).

        The member who caused it (``actor``) has it marked read if they were up
        to date: one's own new device is not an unread message. Key housekeeping
        (``types.quiet_types()``) is marked read for every member who was up to
        date, moves ``last_seq`` but not ``last_at``, and is left out of unread counts.
        """
        types.lookup(msg_type, from_server=True)
        new = NewMessage(
            conversation_id=conv.id,
            client_id=client_id,
            sender_id="system",
            device_id="system",
            msg_type=msg_type,
            body=b"",
            meta=meta,
            quiet=msg_type in types.quiet_types(),
        )
        stored, created = await self._messages.append(new, self._clock())
        if created:
            await self._publish_message(conv, stored, "")
            # Members who were up to date stay so: the actor (one's own new device
            # is not news to oneself) and, for key housekeeping, everyone. A marker
            # behind is left where it is, so no unread message is swallowed.
            quiet = not types.lookup(msg_type, from_server=True).notify
            concerned = [m for m in conv.members if quiet or m == actor]
            if concerned:
                markers = (await self._messages.read_markers([conv.id])).get(conv.id, {})
                for member in concerned:
                    if markers.get(member, 0) == stored.seq - 1:
                        await self._messages.advance_read(conv.id, member, stored.seq)
            if self.on_stored is not None and not quiet:
                try:
                    async with asyncio.timeout(self._store_timeout):
                        await self.on_stored(conv, stored)
                except TimeoutError as exc:
                    self._not_recorded(conv.id, exc)
        return stored

    async def _publish_message(self, conv: Conversation, m: StoredMessage, origin: str) -> None:
        frame = p.encode_text(p.MessageCreated(message_out(m)))
        await self._hub.publish(
            conv.members, frame, kind=KIND_MESSAGE, origin=origin, conversation=conv.id, seq=m.seq
        )

    async def mark_read(self, user: User, conversation_id: str, seq: int) -> int:
        """Move the caller's read marker forward and tell both members."""
        conv = await self.member_conversation(user.id, conversation_id)
        # The conversation's own last_seq is enough unless it lags a write in flight.
        last = conv.last_seq if seq <= conv.last_seq else await self._messages.last_seq(conv.id)
        if seq > last:
            raise InvalidInput(f"seq {seq} is beyond the last message ({last})")
        marker = await self._messages.set_read(conv.id, user.id, seq)
        frame = p.encode_text(p.ReadUpdated(conversation=conv.id, user=user.id, seq=marker))
        await self._hub.publish(conv.members, frame)
        return marker

    async def set_typing(self, user: User, conversation_id: str, typing: bool) -> None:
        """Tell the other member (only them) that the caller is typing."""
        conv = await self.member_conversation(user.id, conversation_id)
        others = [m for m in conv.members if m != user.id]
        frame = p.encode_text(p.Typing(conversation=conv.id, user=user.id, typing=typing))
        await self._hub.publish(others, frame)

    async def history(
        self,
        user: User,
        conversation_id: str,
        before: int | None,
        after: int | None,
        limit: int,
    ) -> tuple[list[StoredMessage], bool]:
        """A page: ``after`` gives newer messages, else the newest before ``before``."""
        conv = await self.member_conversation(user.id, conversation_id)
        if before is not None and after is not None:
            raise InvalidInput("give either 'before' or 'after', not both")
        if after is not None:
            page = await self._messages.messages_after(conv.id, after, limit + 1)
            return page[:limit], len(page) > limit
        edge = before if before is not None else 2**53
        page = await self._messages.messages_before(conv.id, edge, limit + 1)
        return page[-limit:], len(page) > limit

    async def resume(
        self, user: User, conversation_id: str, after: int, max_messages: int
    ) -> tuple[bool, list[StoredMessage], int]:
        """Messages after ``after``: ``(recovered, messages, latest_seq)``.

        ``recovered`` is false when more than ``max_messages`` are missing; the
        client must then page history from ``latest_seq``.
        """
        conv = await self.member_conversation(user.id, conversation_id)
        page = await self._messages.messages_after(conv.id, after, max_messages + 1)
        if len(page) > max_messages:
            return False, [], await self._messages.last_seq(conv.id)
        latest = page[-1].seq if page else max(after, 0)
        return True, page, latest

    async def set_flag(self, user: User, conversation_id: str, flagged: bool) -> None:
        """The counsellor flags or unflags a conversation.

        The counsellor's connections (their other tabs and devices) get
        ``conversation.updated`` with the new summary.
        """
        conv = await self.member_conversation(user.id, conversation_id)
        if user.id != conv.counsellor_id:
            raise Forbidden("only the counsellor can flag a conversation")
        await self._messages.set_flag(conv.id, flagged)
        updated = await self._messages.get_conversation(conv.id)
        if updated is not None:
            (summary,) = await self._summarise(user, [updated])
            await self._hub.publish([user.id], p.encode_text(p.ConversationUpdated(summary)))

    async def peers(self, user_id: str) -> list[str]:
        """The other member of each of the user's conversations."""
        convs = await self._messages.conversations_for(user_id)
        return sorted({m for c in convs for m in c.members if m != user_id})

    async def summaries(self, user: User) -> list[dict[str, Any]]:
        """The user's conversations with unread counts, peers and presence.

        Sorted for the counsellor's list: unread first, then flagged, then the
        most recent activity.
        """
        convs = await self._messages.conversations_for(user.id)
        return await self._summarise(user, convs)

    async def _summarise(self, user: User, convs: Sequence[Conversation]) -> list[dict[str, Any]]:
        ids = [c.id for c in convs]
        markers = await self._messages.read_markers(ids)
        peer_ids = [m for c in convs for m in c.members if m != user.id]
        users = await self._accounts.get_users(peer_ids)
        presence = await self._presence.presence(peer_ids, self._clock())
        lasts = await asyncio.gather(
            *(self._messages.messages_after(c.id, c.last_seq - 1, 1) for c in convs if c.last_seq)
        )
        last_message = {page[0].conversation_id: page[0] for page in lasts if page}
        quiet = await self._quiet_unread(user, convs, markers)
        out: list[dict[str, Any]] = []
        for c in convs:
            peer_id = c.counsellor_id if user.id == c.beneficiary_id else c.beneficiary_id
            mine = markers.get(c.id, {}).get(user.id, 0)
            peer = users.get(peer_id)
            pres = presence.get(peer_id)
            out.append(
                {
                    "id": c.id,
                    "beneficiary_id": c.beneficiary_id,
                    "counsellor_id": c.counsellor_id,
                    "peer": peer.public() if peer else {"id": peer_id},
                    "peer_online": bool(pres and pres.online),
                    "peer_last_seen": pres.last_seen if pres else None,
                    "last_seq": c.last_seq,
                    "last_at": c.last_at,
                    "unread": max(0, c.last_seq - mine - quiet.get(c.id, 0)),
                    "read": mine,
                    "peer_read": markers.get(c.id, {}).get(peer_id, 0),
                    "flagged": c.flagged,
                    "epoch": c.epoch,
                    "rotation_required": c.rotation_required,
                    "archived": archive_json(c),
                    "deleted_at": c.deleted_at,
                    "last_message": (
                        message_json(last_message[c.id]) if c.id in last_message else None
                    ),
                }
            )
        if user.role is Role.BENEFICIARY:
            for item in out:
                del item["flagged"]  # the counsellor's private marker
        else:
            out.sort(key=lambda s: (s["unread"] == 0, not s["flagged"], -s["last_at"]))
        return out

    async def _quiet_unread(
        self, user: User, convs: Sequence[Conversation], markers: dict[str, dict[str, int]]
    ) -> dict[str, int]:
        """Key housekeeping after the user's read marker, per conversation with unread
        messages: it is subtracted from the unread count (it is never news)."""
        behind = [c for c in convs if c.last_seq > markers.get(c.id, {}).get(user.id, 0)]
        quiet = sorted(types.quiet_types())
        counts = await asyncio.gather(
            *(
                self._messages.count_types_after(
                    c.id, markers.get(c.id, {}).get(user.id, 0), quiet
                )
                for c in behind
            )
        )
        return {c.id: n for c, n in zip(behind, counts, strict=True)}

    async def unread_total(self, user: User) -> int:
        """Unread messages over all the user's conversations."""
        return sum(s["unread"] for s in await self.summaries(user))

    async def presence_changed(
        self,
        user_id: str,
        online: bool,
        last_seen: float | None = None,
        peers: Sequence[str] | None = None,
    ) -> None:
        """Tell the user's conversation peers (only them) about a presence change.

        Going offline, ``last_seen`` is the time the presence store recorded
        (the clock's time if not given). ``peers``, when the caller has just
        read them (from ``summaries``), saves reading the conversations again.
        """
        if peers is None:
            peers = await self.peers(user_id)
        if not peers:
            return
        if not online and last_seen is None:
            last_seen = self._clock()
        frame = p.encode_text(
            p.PresenceFrame(user=user_id, online=online, last_seen=None if online else last_seen)
        )
        await self._hub.publish(peers, frame)
