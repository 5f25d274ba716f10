"""``MemoryBlobStore``: the ``BlobStore`` port in this process's memory (tests, benchmarks
with ``STORE=memory``; not durable). Its contract: ``storage/blobs.py``."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Sequence

from chat_server.storage.blobs import Blob, BlobTooLarge

PIECE = 256 * 1024


class MemoryBlobStore:
    """Blobs in a dict; ``open`` hands the content out in 256 KiB pieces."""

    def __init__(self) -> None:
        self._records: dict[str, Blob] = {}
        self._content: dict[str, bytes] = {}

    async def put(self, blob: Blob, chunks: AsyncIterable[bytes], limit: int) -> Blob:
        parts: list[bytes] = []
        size = 0
        async for piece in chunks:
            size += len(piece)
            if size > limit:
                raise BlobTooLarge(limit)
            parts.append(piece)
        stored = Blob(blob.id, blob.owner_id, blob.conversation_id, size, blob.created_at)
        self._content[blob.id] = b"".join(parts)
        self._records[blob.id] = stored
        return stored

    async def get(self, blob_id: str) -> Blob | None:
        return self._records.get(blob_id)

    async def open(self, blob_id: str) -> AsyncIterator[bytes] | None:
        content = self._content.get(blob_id)
        if content is None:
            return None
        return self._pieces(content)

    @staticmethod
    async def _pieces(content: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(content), PIECE):
            yield content[start : start + PIECE]

    async def bind(self, blob_id: str, seq: int) -> bool:
        blob = self._records.get(blob_id)
        if blob is None or blob.seq not in (None, seq):
            return False
        self._records[blob_id] = dataclasses.replace(blob, seq=seq)
        return True

    async def set_grant(self, blob_id: str, grant_hash: str, expires_at: float) -> bool:
        blob = self._records.get(blob_id)
        if blob is None:
            return False
        self._records[blob_id] = dataclasses.replace(
            blob, grant_hash=grant_hash, grant_expires=expires_at
        )
        return True

    async def expire(self, blob_id: str, now: float) -> bool:
        blob = self._records.get(blob_id)
        self._content.pop(blob_id, None)
        if blob is None or blob.expired_at is not None:
            return False
        self._records[blob_id] = dataclasses.replace(blob, expired_at=now)
        return True

    async def delete(self, blob_ids: Sequence[str]) -> int:
        removed = 0
        for blob_id in blob_ids:
            self._content.pop(blob_id, None)
            if self._records.pop(blob_id, None) is not None:
                removed += 1
        return removed

    async def unbound_before(self, before: float, limit: int) -> list[Blob]:
        found = [b for b in self._records.values() if b.seq is None and b.created_at < before]
        return sorted(found, key=lambda b: b.created_at)[:limit]

    async def live_before(self, before: float, limit: int) -> list[Blob]:
        found = [
            b for b in self._records.values() if b.expired_at is None and b.created_at < before
        ]
        return sorted(found, key=lambda b: b.created_at)[:limit]

    async def of_conversations(self, conversation_ids: Sequence[str]) -> list[str]:
        wanted = set(conversation_ids)
        return [b.id for b in self._records.values() if b.conversation_id in wanted]

    async def of_owner(self, owner_id: str) -> list[str]:
        return [b.id for b in self._records.values() if b.owner_id == owner_id]

    async def usage(self, owner_id: str, since: float) -> tuple[int, int]:
        mine = [b for b in self._records.values() if b.owner_id == owner_id]
        total = sum(b.size for b in mine if b.expired_at is None)
        return total, sum(1 for b in mine if b.created_at >= since)

    async def close(self) -> None:
        """Forget everything."""
        self._records.clear()
        self._content.clear()
