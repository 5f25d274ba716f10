"""The registry of message types and the validation of their server-visible part.

Every message has an encrypted ``body`` the server never reads, and a small
``meta`` dict the server may see and act on (for example an appointment's
start time, for reminders). A type not in the registry is refused; types
marked ``system`` can only be written by the server itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chat_server.rooms.errors import InvalidInput, UnknownMessageType

Validator = Callable[[Mapping[str, Any]], None]


def _no_meta(meta: Mapping[str, Any]) -> None:
    if meta:
        raise InvalidInput("this message type takes no server-visible fields ('meta' must be {})")


# Numbers the server stores and clients read back exactly: JavaScript's safe integers.
# Larger ones cannot be stored (BSON holds 8-byte integers) nor read back by a browser.
MAX_NUMBER = 2**53


def bounded_numbers(meta: Mapping[str, Any]) -> None:
    """Every number in ``meta`` is finite and within +-2**53 (``InvalidInput`` otherwise)."""
    for key, value in meta.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not -MAX_NUMBER <= value <= MAX_NUMBER:  # NaN fails every comparison
            raise InvalidInput(f"meta.{key} must be a number between -2**53 and 2**53")


def _fields(
    allowed: Mapping[str, type | tuple[type, ...]], required: tuple[str, ...] = ()
) -> Validator:
    def check(meta: Mapping[str, Any]) -> None:
        bounded_numbers(meta)
        for key in required:
            if key not in meta:
                raise InvalidInput(f"meta.{key} is required for this message type")
        for key, value in meta.items():
            if key not in allowed:
                raise InvalidInput(f"meta.{key} is not a server-visible field of this type")
            if not isinstance(value, allowed[key]) or (
                isinstance(value, bool) and allowed[key] is not bool
            ):
                raise InvalidInput(f"meta.{key} has the wrong type")
            if isinstance(value, str) and len(value) > 200:
                raise InvalidInput(f"meta.{key} is too long")

    return check


def _one_of(key: str, values: set[str], base: Validator) -> Validator:
    def check(meta: Mapping[str, Any]) -> None:
        base(meta)
        if key in meta and meta[key] not in values:
            raise InvalidInput(f"meta.{key} must be one of {sorted(values)}")

    return check


@dataclass(frozen=True, slots=True)
class MessageType:
    """One registered type: who may write it and how its ``meta`` is checked."""

    name: str
    validate: Validator
    system: bool = False
    notify: bool = True


_REGISTRY: dict[str, MessageType] = {}


def register(t: MessageType) -> None:
    """Add a type to the registry."""
    _REGISTRY[t.name] = t


def lookup(name: str, *, from_server: bool = False) -> MessageType:
    """Return the type, or raise ``UnknownMessageType`` (also for system types from clients)."""
    t = _REGISTRY.get(name)
    if t is None or (t.system and not from_server):
        raise UnknownMessageType(f"unknown message type {name[:40]!r}")
    return t


def _target(meta: Mapping[str, Any]) -> None:
    _fields({"target_seq": int}, ("target_seq",))(meta)
    if meta["target_seq"] < 1:
        raise InvalidInput("meta.target_seq must be a stored message's seq (1 or more)")


register(MessageType("text", _no_meta))
register(MessageType("edit", _target))
register(MessageType("delete", _target, notify=False))
OFFER_KINDS = frozenset({"emploi", "alternance", "immersion", "service_civique", "evenement"})
ACTION_EVENTS = frozenset({"created", "status_changed", "commented", "changed"})
ACTION_STATUSES = frozenset({"todo", "in_progress", "done", "cancelled"})
APPOINTMENT_EVENTS = frozenset({"created", "changed", "cancelled", "answered"})
#: An item's id: chosen by the client that creates it (its creation message's
#: ``client_id`` in the web apps and the SDK), unique in the conversation.
ITEM_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


def _item_id(meta: Mapping[str, Any]) -> None:
    if not ITEM_ID.fullmatch(meta["item"]):
        raise InvalidInput("meta.item must be 8 to 64 characters of [A-Za-z0-9_-]")


def _needs(
    meta: Mapping[str, Any], event: str, required: tuple[str, ...], allowed: set[str]
) -> None:
    for key in required:
        if key not in meta:
            raise InvalidInput(f"meta.{key} is required for the event {event!r}")
    for key in meta:
        if key not in allowed:
            raise InvalidInput(f"meta.{key} is not allowed for the event {event!r}")


def _action(meta: Mapping[str, Any]) -> None:
    base = _one_of(
        "event",
        set(ACTION_EVENTS),
        _one_of(
            "status",
            set(ACTION_STATUSES),
            _fields(
                {"item": str, "event": str, "status": str, "due": (int, float)}, ("item", "event")
            ),
        ),
    )
    base(meta)
    _item_id(meta)
    event = meta["event"]
    common = {"item", "event"}
    if event == "created":
        _needs(meta, event, ("status", "due"), common | {"status", "due"})
    elif event == "status_changed":
        _needs(meta, event, ("status",), common | {"status"})
    elif event == "changed":
        _needs(meta, event, (), common | {"due"})
    else:
        _needs(meta, event, (), common)


def _appointment(meta: Mapping[str, Any]) -> None:
    base = _one_of(
        "event",
        set(APPOINTMENT_EVENTS),
        _fields({"item": str, "event": str, "starts_at": (int, float)}, ("item", "event")),
    )
    base(meta)
    _item_id(meta)
    event = meta["event"]
    if event in ("created", "changed"):
        _needs(meta, event, ("starts_at",), {"item", "event", "starts_at"})
    else:
        _needs(meta, event, (), {"item", "event"})


def _notice(meta: Mapping[str, Any]) -> None:
    _fields({"starts_at": (int, float), "ends_at": (int, float)}, ("starts_at", "ends_at"))(meta)


register(
    MessageType(
        "offer",
        _one_of("kind", set(OFFER_KINDS), _fields({"kind": str}, ("kind",))),
    )
)
register(MessageType("action", _action))
register(MessageType("appointment", _appointment))
register(MessageType("notice", _notice))
def _attachment(meta: Mapping[str, Any]) -> None:
    _fields({"blob": str, "size": int}, ("blob", "size"))(meta)
    if not BLOB_ID.fullmatch(meta["blob"]):
        raise InvalidInput("meta.blob must be an uploaded attachment's id")
    if meta["size"] < 1:
        raise InvalidInput("meta.size must be the blob's size in bytes")


#: A blob id, as ``POST /api/conversations/{id}/attachments`` gives it.
BLOB_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
register(MessageType("attachment", _attachment, notify=True))
# System events are written by the server. A change of counsellor is news for
# both members; key housekeeping (epochs, devices) is shown but never unread.
for _name, _news in (
    ("system.counsellor_changed", True),
    ("system.temporary_counsellor", True),
    ("system.epoch_rotated", False),
    ("system.device_changed", False),
    # The data lifecycle (chat_server/lifecycle): both members are told.
    ("system.archived", True),
    ("system.restored", True),
    ("system.inactivity_notice", True),
    # Onboarding (chat_server/tools/onboarding.py): a new activation code was issued.
    ("system.activation_issued", True),
):
    register(MessageType(_name, lambda meta: None, system=True, notify=_news))


def quiet_types() -> frozenset[str]:
    """Key housekeeping: server events that are shown but are never unread and never
    move a conversation up the list (``system.epoch_rotated``, ``system.device_changed``)."""
    return frozenset(t.name for t in _REGISTRY.values() if t.system and not t.notify)
