"""An access request (GDPR art. 15): everything the server holds about one account, in clear.

``account_export`` gathers, through the storage ports, the server-visible part
of what concerns one person: the account, its sessions and devices, its
conversations with their server-visible message metadata (sequence, sender,
type, ``meta``, times), read markers, presence, audit records naming them.
What is end-to-end encrypted (message bodies, the key backup, envelopes) is
listed as such, never decrypted: the server cannot. The person gets their
messages in clear from their own app (the export on the device).

``chat-admin export-account <login>`` prints it as JSON.
"""

from __future__ import annotations

import base64
from typing import Any

from chat_server.rooms.models import StoredMessage
from chat_server.rooms.service import archive_json
from chat_server.storage.base import (
    AccountStore,
    KeyStore,
    LifecycleStore,
    MessageStore,
    PresenceStore,
)

PAGE = 500
ENCRYPTED = "chiffré de bout en bout : lisible seulement sur les appareils des membres"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _message(m: StoredMessage) -> dict[str, Any]:
    return {
        "seq": m.seq,
        "sender": m.sender_id,
        "device": m.device_id,
        "type": m.msg_type,
        "meta": m.meta,
        "epoch": m.epoch,
        "created_at": m.created_at,
        "body_bytes": len(m.body),
    }


async def account_export(
    user_id: str,
    accounts: AccountStore,
    messages: MessageStore,
    presence: PresenceStore,
    keys: KeyStore,
    lifecycle: LifecycleStore,
) -> dict[str, Any] | None:
    """The export of ``user_id`` (None if there is no such account).

    Message pages are read ``PAGE`` at a time, so memory grows with the
    account's history, never with the store.
    """
    user = await accounts.get_user(user_id)
    if user is None:
        return None
    structure = await accounts.get_structure(user.structure_id) if user.structure_id else None
    out: dict[str, Any] = {
        "account": {
            **user.public(),
            "created_at": user.created_at,
            "last_login_at": user.active_at,
            "inactivity_warning_at": user.notice_at,
            "password": "haché (argon2id) : le mot de passe lui-même n'est pas conservé",
        },
        "structure": {"id": structure.id, "name": structure.name} if structure else None,
        "sessions": [
            {"device_id": s.device_id, "created_at": s.created_at, "expires_at": s.expires_at}
            for s in await lifecycle.sessions_of(user.id)
        ],
        "devices": [
            {
                "id": d.id,
                "name": d.name,
                "created_at": d.created_at,
                "removed_at": d.removed_at,
                "dh_public_key": _b64(d.dh_pub),
                "signing_public_key": _b64(d.sig_pub),
            }
            for d in await keys.devices_of([user.id])
        ],
        "key_backup": ENCRYPTED if await keys.get_backup(user.id) is not None else None,
        "last_seen": (await presence.seen_at([user.id])).get(user.id),
        "conversations": [],
        "audit": [
            {
                "conversation": r.conversation_id,
                "actor": r.actor_id,
                "action": r.action,
                "details": r.details,
                "at": r.at,
            }
            for r in await lifecycle.audit_involving(user.id)
        ],
        "message_bodies": ENCRYPTED,
    }
    for conv in await messages.conversations_for(user.id):
        items: list[dict[str, Any]] = []
        after = 0
        while True:
            page = await messages.messages_after(conv.id, after, PAGE)
            items.extend(_message(m) for m in page)
            if len(page) < PAGE:
                break
            after = page[-1].seq
        markers = (await messages.read_markers([conv.id])).get(conv.id, {})
        out["conversations"].append(
            {
                "id": conv.id,
                "beneficiary_id": conv.beneficiary_id,
                "counsellor_id": conv.counsellor_id,
                "previous_counsellor_id": conv.previous_counsellor_id,
                "created_at": conv.created_at,
                "archived": archive_json(conv),
                "deleted_at": conv.deleted_at,
                "read_up_to": markers,
                "messages": items,
            }
        )
    return out
