"""The activation box: the epoch keys written before activation, for the first phone.

The counsellor's client seals the conversation's epoch keys under a key
derived from the activation code it made (``chat_server.crypto.activation``;
the server never sees the code) and leaves the box here. The beneficiary's
first device, having proved the same code, opens it and reads what was
written before activation at once, with the counsellor offline. The server
holds ciphertext only; each key is accepted by the phone only if it matches
its epoch's signed commitment.
"""

from __future__ import annotations

from typing import Any

from chat_server.rooms.errors import E2EEError, NotFound, NotMember
from chat_server.rooms.models import User
from chat_server.storage.base import AccountStore, KeyStore, MessageStore

#: Largest box accepted (its JSON, as stored): about 80 epoch keys.
MAX_BOX_BYTES = 8192


class AlreadyActivated(E2EEError):
    """The beneficiary already has a device: the normal envelopes take over."""

    status = 409

    def __init__(self) -> None:
        super().__init__(
            "already_activated", "the beneficiary already has a device: share keys by envelope"
        )


class ActivationBoxes:
    """Leave, fetch and drop a conversation's activation box.

    Port contract: ``put`` replaces the box (the counsellor's client re-seals
    every epoch when one is added before activation); it is refused once the
    beneficiary has registered a device. ``get`` answers members only.
    ``drop`` is the beneficiary's (its first device took the keys) and is
    idempotent. The box goes with the account on erasure (it is a field of it).
    """

    def __init__(self, messages: MessageStore, accounts: AccountStore, keys: KeyStore) -> None:
        self._messages = messages
        self._accounts = accounts
        self._keys = keys

    async def put(self, user: User, conversation_id: str, box: dict[str, Any]) -> None:
        """The conversation's counsellor leaves (or replaces) the box."""
        conv = await self._messages.get_conversation(conversation_id)
        if conv is None or user.id not in conv.members:
            raise NotMember("you are not a member of this conversation")
        if user.id != conv.counsellor_id:
            raise NotMember("only the conversation's counsellor leaves an activation box")
        if await self._keys.ever_registered(conv.beneficiary_id) > 0:
            raise AlreadyActivated()
        await self._accounts.set_activation_box(conv.beneficiary_id, box)

    async def get(self, user: User, conversation_id: str) -> dict[str, Any]:
        """The box, for a member; ``NotFound`` if there is none (or no more)."""
        conv = await self._messages.get_conversation(conversation_id)
        if conv is None or user.id not in conv.members:
            raise NotMember("you are not a member of this conversation")
        box = await self._accounts.activation_box(conv.beneficiary_id)
        if box is None:
            raise NotFound("no activation box for this conversation")
        return box

    async def drop(self, user: User, conversation_id: str) -> None:
        """The beneficiary's device has the keys: the box is no longer needed."""
        conv = await self._messages.get_conversation(conversation_id)
        if conv is None or user.id != conv.beneficiary_id:
            raise NotMember("only the conversation's beneficiary drops its activation box")
        await self._accounts.set_activation_box(conv.beneficiary_id, None)
