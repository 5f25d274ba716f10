"""The blob store port: attachment ciphertext, streamed in and out.

Each method's docstring is its contract; every adapter passes
``tests/contract/test_blob_contract.py``. Adapters: ``MemoryBlobStore``
(``storage/blobs_memory.py``) and ``GridFSBlobStore`` (``storage/mongo_blobs.py``,
MongoDB GridFS through PyMongo's asynchronous API; the embedded engine serves it).

A blob is opaque bytes (the device encrypted them) plus a small record the
server acts on: who uploaded it, for which conversation, its size, when, the
``seq`` of the message that refers to it once sent, and when it expired.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


class BlobTooLarge(Exception):
    """An upload passed its byte limit; nothing of it was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Blob:
    """The server-visible record of one uploaded blob."""

    id: str
    owner_id: str
    conversation_id: str
    size: int
    created_at: float
    #: The ``seq`` of the ``attachment`` message that refers to it (None: not sent yet).
    seq: int | None = None
    #: When its content was deleted at the end of its lifetime (the record stays).
    expired_at: float | None = None
    #: A download grant for a scanning service: the SHA-256 of its token, and its end.
    grant_hash: str | None = None
    grant_expires: float | None = None


class BlobStore(Protocol):
    """Stores blobs and their records."""

    async def put(self, blob: Blob, chunks: AsyncIterable[bytes], limit: int) -> Blob:
        """Stream ``chunks`` into a new blob with ``blob``'s id, owner, conversation and
        creation time; return the record with the real ``size``.

        Never holds the whole content in memory. Raises ``BlobTooLarge`` as soon as
        more than ``limit`` bytes came, and keeps nothing; any other failure (of
        ``chunks`` or of the store) also keeps nothing visible and propagates.
        ``get`` and ``open`` see the blob only once it is complete.
        """

    async def get(self, blob_id: str) -> Blob | None:
        """The record of a complete blob (also once expired), or None."""

    async def open(self, blob_id: str) -> AsyncIterator[bytes] | None:
        """The content in pieces, in order, or None if there is none (missing, expired).

        Pieces are read from the store as the caller iterates (bounded memory).
        """

    async def bind(self, blob_id: str, seq: int) -> bool:
        """Record that message ``seq`` refers to the blob, if no other message does.

        True if the blob is now bound to ``seq`` (also when it already was), False
        if it is missing or bound to another message. Atomic.
        """

    async def set_grant(self, blob_id: str, grant_hash: str, expires_at: float) -> bool:
        """Replace the blob's download grant (one at a time). False if it is missing."""

    async def expire(self, blob_id: str, now: float) -> bool:
        """Delete the content, keep the record with ``expired_at = now``. True if it had
        content. Idempotent."""

    async def delete(self, blob_ids: Sequence[str]) -> int:
        """Delete content and records; return how many records were removed. Idempotent."""

    async def unbound_before(self, before: float, limit: int) -> list[Blob]:
        """Up to ``limit`` records not bound to a message, created before ``before``
        (also uploads that never completed), oldest first."""

    async def live_before(self, before: float, limit: int) -> list[Blob]:
        """Up to ``limit`` records created before ``before`` whose content is still
        stored, oldest first."""

    async def of_conversations(self, conversation_ids: Sequence[str]) -> list[str]:
        """The ids of every blob uploaded for one of ``conversation_ids``."""

    async def of_owner(self, owner_id: str) -> list[str]:
        """The ids of every blob ``owner_id`` uploaded."""

    async def usage(self, owner_id: str, since: float) -> tuple[int, int]:
        """``(bytes, uploads)``: the bytes of ``owner_id``'s blobs whose content is
        stored, and how many blobs they uploaded at or after ``since``."""
