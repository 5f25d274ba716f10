"""Items of the accompaniment thread: their fold and the checks the server can make.

An item (an action, an appointment) is not a record of its own: it is the
fold of the messages that carry its id in ``meta.item``, in ``seq`` order.
The server sees only ``meta`` (kind, event, status, due date, start time);
titles, descriptions, notes and answers stay in the encrypted bodies.

This module is pure (no I/O): the service reads the events and calls
``check_event`` before storing a new one, and ``fold`` for the items API.
Every refusal raises a ``DomainError`` with its own code (docs/protocol.md,
"Items"), so nothing is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chat_server.rooms.errors import (
    Forbidden,
    InvalidDate,
    InvalidTransition,
    ItemExists,
    NotEditable,
    NotOwnMessage,
    UnknownItem,
    UnknownTarget,
)
from chat_server.rooms.models import StoredMessage

ITEM_TYPES = ("action", "appointment")
#: How far ahead a due date, an appointment or a notice may be.
MAX_AHEAD_SECONDS = 2 * 366 * 86400
#: Clocks of phones and of the server differ: "in the past" means older than this.
CLOCK_SKEW_SECONDS = 300

#: The status changes an action allows (a done action may be reopened, a cancelled one restored).
ACTION_TRANSITIONS: dict[str, frozenset[str]] = {
    "todo": frozenset({"in_progress", "done", "cancelled"}),
    "in_progress": frozenset({"todo", "done", "cancelled"}),
    "done": frozenset({"in_progress"}),
    "cancelled": frozenset({"todo"}),
}
#: What may be edited and deleted (items change through their own events).
EDITABLE = frozenset({"text", "offer"})
DELETABLE = frozenset({"text", "offer", "attachment"})


@dataclass(frozen=True, slots=True)
class Item:
    """An item's server-visible state, folded from its events."""

    kind: str
    id: str
    created_seq: int
    created_by: str
    created_at: float
    status: str
    due: int | None
    starts_at: int | None
    last_event: str
    last_seq: int
    last_at: float

    def public(self) -> dict[str, object]:
        """The shape of ``GET /api/conversations/{id}/items``."""
        return {
            "kind": self.kind,
            "id": self.id,
            "status": self.status,
            "due": self.due,
            "starts_at": self.starts_at,
            "created_seq": self.created_seq,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "last_event": self.last_event,
            "last_seq": self.last_seq,
            "last_at": self.last_at,
        }


def fold(events: Sequence[StoredMessage]) -> Item | None:
    """The item the events (one item's, ascending ``seq``) describe; None without a creation."""
    item: Item | None = None
    for m in events:
        meta = m.meta
        event = str(meta.get("event", ""))
        if item is None:
            if event != "created":
                continue
            item = Item(
                kind=m.msg_type,
                id=str(meta.get("item")),
                created_seq=m.seq,
                created_by=m.sender_id,
                created_at=m.created_at,
                status=str(meta.get("status", "todo")) if m.msg_type == "action" else "scheduled",
                due=_int(meta.get("due")),
                starts_at=_int(meta.get("starts_at")),
                last_event=event,
                last_seq=m.seq,
                last_at=m.created_at,
            )
            continue
        if m.msg_type != item.kind:
            continue
        status, due, starts_at = item.status, item.due, item.starts_at
        if "status" in meta:
            status = str(meta["status"])
        if "due" in meta:
            due = _int(meta["due"])
        if "starts_at" in meta:
            starts_at = _int(meta["starts_at"])
        if item.kind == "appointment" and event == "cancelled":
            status = "cancelled"
        item = Item(
            kind=item.kind,
            id=item.id,
            created_seq=item.created_seq,
            created_by=item.created_by,
            created_at=item.created_at,
            status=status,
            due=due,
            starts_at=starts_at,
            last_event=event,
            last_seq=m.seq,
            last_at=m.created_at,
        )
    return item


def fold_all(messages: Sequence[StoredMessage]) -> list[Item]:
    """Every item of a conversation from its item messages (ascending ``seq``), oldest first."""
    by_id: dict[str, list[StoredMessage]] = {}
    for m in messages:
        if m.msg_type in ITEM_TYPES and isinstance(m.meta.get("item"), str):
            by_id.setdefault(str(m.meta["item"]), []).append(m)
    items = [fold(events) for events in by_id.values()]
    return sorted((i for i in items if i is not None), key=lambda i: i.created_seq)


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def check_date(name: str, value: int, now: float, *, past_ok: bool = False) -> None:
    """``value`` (Unix seconds) is not in the past (unless ``past_ok``) nor two years ahead."""
    if not past_ok and value < now - CLOCK_SKEW_SECONDS:
        raise InvalidDate(f"meta.{name} is in the past")
    if value > now + MAX_AHEAD_SECONDS:
        raise InvalidDate(f"meta.{name} is more than two years ahead")


def check_event(
    msg_type: str,
    meta: Mapping[str, Any],
    events: Sequence[StoredMessage],
    *,
    sender_id: str,
    counsellor_id: str,
    now: float,
) -> None:
    """Refuse an item event that the item's current state (``events``) does not allow.

    ``events`` are the conversation's messages naming the same item id,
    ascending. Who may do what: either member creates, changes, comments an
    action and changes its status; only the counsellor creates, changes and
    cancels an appointment, only the beneficiary answers it.
    """
    event = meta["event"]
    counsellor = sender_id == counsellor_id
    status = ""  # the item's current status (none before its creation)
    if event == "created":
        if events:
            raise ItemExists(f"an item {meta['item']!r} already exists in this conversation")
    else:
        item = fold(events)
        if item is None or item.kind != msg_type:
            raise UnknownItem(f"this conversation has no {msg_type} {str(meta['item'])[:64]!r}")
        status = item.status
    if msg_type == "action":
        if "due" in meta:
            check_date("due", meta["due"], now)
        if event == "created" and meta["status"] == "cancelled":
            raise InvalidTransition("an action cannot be created cancelled")
        if event == "status_changed" and meta["status"] not in ACTION_TRANSITIONS.get(
            status, frozenset()
        ):
            raise InvalidTransition(f"an action cannot go from {status!r} to {meta['status']!r}")
        return
    # An appointment.
    if event == "answered":
        if counsellor:
            raise Forbidden("only the beneficiary answers an appointment")
    elif not counsellor:
        raise Forbidden("only the counsellor creates, changes or cancels an appointment")
    if status == "cancelled":
        raise InvalidTransition("this appointment is cancelled")
    if "starts_at" in meta:
        check_date("starts_at", meta["starts_at"], now)


def check_notice(
    meta: Mapping[str, Any], *, sender_id: str, counsellor_id: str, now: float
) -> None:
    """A counsellor's notice: ends after it starts, not over already, at most two years ahead.

    A notice whose end is now (``starts_at == ends_at``) lifts the previous one.
    """
    if sender_id != counsellor_id:
        raise Forbidden("only the counsellor posts a notice")
    starts, ends = meta["starts_at"], meta["ends_at"]
    if ends < starts:
        raise InvalidDate("meta.ends_at is before meta.starts_at")
    check_date("ends_at", ends, now)
    check_date("starts_at", starts, now, past_ok=True)


def check_target(
    msg_type: str, target: StoredMessage | None, seq: int, sender_id: str, deleted: bool
) -> None:
    """An edit or a delete: the target exists, is the sender's own and can be changed."""
    if target is None:
        raise UnknownTarget(f"this conversation has no message {seq}")
    if target.sender_id != sender_id:
        raise NotOwnMessage("only its sender may edit or delete a message")
    allowed = EDITABLE if msg_type == "edit" else DELETABLE
    if target.msg_type not in allowed:
        verb = "edited" if msg_type == "edit" else "deleted"
        raise NotEditable(f"a message of type {target.msg_type!r} cannot be {verb}")
    if deleted:
        raise NotEditable("this message was deleted")
