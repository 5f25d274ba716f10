"""End-to-end key management on the server side (devices, epochs, envelopes)."""

from __future__ import annotations

from collections.abc import Callable

from chat_server.hub import Hub
from chat_server.rooms.models import Conversation, NewMessage
from chat_server.rooms.service import ConversationService
from chat_server.storage.base import AccountStore, KeyStore, MessageStore


class E2EEVerifier:
    """Placeholder."""

    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys

    async def check_message(self, conversation: Conversation, message: NewMessage) -> None:
        raise NotImplementedError


class KeyService:
    """Placeholder."""

    def __init__(
        self,
        keys: KeyStore,
        messages: MessageStore,
        accounts: AccountStore,
        conversations: ConversationService,
        hub: Hub,
        clock: Callable[[], float],
    ) -> None:
        self._keys = keys
