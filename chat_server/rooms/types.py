"""The registry of message types and the validation of their server-visible part.

Every message has an encrypted ``body`` the server never reads, and a small
``meta`` dict the server may see and act on (for example an appointment's
start time, for reminders). A type not in the registry is refused; types
marked ``system`` can only be written by the server itself.
"""

from __future__ import annotations

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


register(MessageType("text", _no_meta))
register(MessageType("edit", _fields({"target_seq": int}, ("target_seq",))))
register(MessageType("delete", _fields({"target_seq": int}, ("target_seq",)), notify=False))
register(
    MessageType(
        "offer",
        _one_of(
            "kind",
            {"emploi", "alternance", "immersion", "service_civique", "evenement"},
            _fields({"kind": str}, ("kind",)),
        ),
    )
)
register(
    MessageType(
        "action",
        _one_of(
            "event",
            {"created", "status_changed", "commented"},
            _one_of(
                "status",
                {"todo", "in_progress", "done", "cancelled"},
                _fields({"event": str, "status": str, "due": (int, float)}, ("event",)),
            ),
        ),
    )
)
register(
    MessageType(
        "appointment",
        _one_of(
            "event",
            {"created", "changed", "cancelled", "answered"},
            _fields({"event": str, "starts_at": (int, float)}, ("event",)),
        ),
    )
)
register(MessageType("attachment", _fields({"size": int}), notify=True))
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
):
    register(MessageType(_name, lambda meta: None, system=True, notify=_news))
