"""What a push carries: JSON the device's service worker reads. Never plaintext.

A message push carries the stored message exactly as history pages give it
(ciphertext, nonce, epoch, sender device, signature, ``meta``), so the service
worker decrypts a preview with the epoch key it holds. When that does not fit
in one push record (``MAX_PAYLOAD``), or the push service answers 413, the
short form without ``message`` is sent and the device shows a generic text.
See ``docs/protocol.md`` (Push payloads).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from notifications.vapid import b64url

VERSION = 1

#: Message types that announce something, and the preference that governs each.
PREFERENCE_OF_TYPE: dict[str, str] = {
    "text": "messages",
    "attachment": "messages",
    "offer": "messages",
    "notice": "messages",
    "action": "actions",
    "appointment": "appointments",
    "system.counsellor_changed": "messages",
    "system.temporary_counsellor": "messages",
    "system.archived": "messages",
    "system.restored": "messages",
    "system.inactivity_notice": "messages",
}
PREFERENCES = ("messages", "actions", "appointments", "reminders", "key_requests")


def encode(data: dict[str, Any]) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def first_name(display_name: str) -> str:
    """The first word of a display name (what a preview shows of the sender)."""
    parts = display_name.split()
    return parts[0] if parts else display_name


def topic(conversation_id: str) -> str:
    """The ``Topic`` of a conversation's pushes: 32 base64url characters, not the id itself,
    so that a phone back online gets the latest push of each conversation, not forty."""
    return b64url(hashlib.sha256(b"push-topic:" + conversation_id.encode()).digest()[:24])


def message_payloads(
    conversation_id: str, seq: int, sender_name: str, sender_role: str, message: dict[str, Any]
) -> tuple[bytes, bytes]:
    """(full, short): the full payload carries ``message``; the short one does not."""
    short: dict[str, Any] = {
        "v": VERSION,
        "kind": "message",
        "conversation": conversation_id,
        "seq": seq,
        "msg_type": message.get("msg_type", "text"),
        "sender_name": first_name(sender_name),
        "sender_role": sender_role,
    }
    return encode({**short, "message": message}), encode(short)


def simple_payload(kind: str, conversation_id: str | None, **fields: Any) -> bytes:
    """A push without ciphertext (key requests, reminders)."""
    data: dict[str, Any] = {"v": VERSION, "kind": kind}
    if conversation_id is not None:
        data["conversation"] = conversation_id
    data.update(fields)
    return encode(data)
