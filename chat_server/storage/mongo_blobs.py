"""``GridFSBlobStore``: attachment blobs in MongoDB GridFS (PyMongo's asynchronous API).

The content goes to the GridFS bucket ``attachments`` (``attachments.files``,
``attachments.chunks``: 256 KiB chunks, so an upload or a download holds one
chunk at a time); the record the server acts on is an ordinary document in
``attachment_blobs`` (the embedded engine emulates GridFS's own collections, so
the queries run on this one). An upload first writes its record with
``complete: false``: if the process dies mid-upload, the orphan sweep
(``unbound_before``) finds it and removes whatever was written.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Any

from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from chat_server.storage.blobs import Blob, BlobTooLarge
from chat_server.storage.mongo import DURABLE, translate_errors

log = logging.getLogger(__name__)

Doc = dict[str, Any]
BUCKET = "attachments"
GRIDFS_CHUNK = 256 * 1024


def _blob(d: Mapping[str, Any]) -> Blob:
    return Blob(
        d["_id"],
        d["owner_id"],
        d["conversation_id"],
        int(d.get("size", 0)),
        float(d["created_at"]),
        d.get("seq"),
        d.get("expired_at"),
    )


@translate_errors
class GridFSBlobStore:
    """The ``BlobStore`` port on MongoDB (see ``storage/blobs.py``)."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._records = db.get_collection("attachment_blobs", write_concern=DURABLE)
        self._bucket = AsyncGridFSBucket(db, bucket_name=BUCKET, chunk_size_bytes=GRIDFS_CHUNK)

    async def create_indexes(self) -> None:
        """The indexes of the record queries (idempotent)."""
        # One field each: the embedded engine uses an index for an equality only when
        # one is named after that field alone (see ``MongoDatabase.create_indexes``).
        for name in ("owner_id", "conversation_id", "seq", "created_at"):
            await self._records.create_index([(name, ASCENDING)])

    async def put(self, blob: Blob, chunks: AsyncIterable[bytes], limit: int) -> Blob:
        await self._records.insert_one(
            {
                "_id": blob.id,
                "owner_id": blob.owner_id,
                "conversation_id": blob.conversation_id,
                "size": 0,
                "created_at": blob.created_at,
                "seq": None,
                "expired_at": None,
                "complete": False,
            }
        )
        size = 0
        upload = self._bucket.open_upload_stream_with_id(blob.id, blob.id)
        try:
            async for piece in chunks:
                size += len(piece)
                if size > limit:
                    raise BlobTooLarge(limit)
                await upload.write(piece)
            await upload.close()
        except BaseException:
            await self._discard(blob.id, upload)
            raise
        await self._records.update_one({"_id": blob.id}, {"$set": {"size": size, "complete": True}})
        return Blob(blob.id, blob.owner_id, blob.conversation_id, size, blob.created_at)

    async def _discard(self, blob_id: str, upload: Any) -> None:
        # The embedded engine answers an abort of a file it never completed with an
        # error; the record goes in any case, and the sweep removes any leftover chunk.
        with contextlib.suppress(PyMongoError):
            await upload.abort()
        await self._delete_content(blob_id)
        with contextlib.suppress(PyMongoError):
            await self._records.delete_one({"_id": blob_id})

    async def _delete_content(self, blob_id: str) -> None:
        with contextlib.suppress(NoFile, PyMongoError):
            await self._bucket.delete(blob_id)

    async def get(self, blob_id: str) -> Blob | None:
        d = await self._records.find_one({"_id": blob_id, "complete": True})
        return None if d is None else _blob(d)

    async def open(self, blob_id: str) -> AsyncIterator[bytes] | None:
        d = await self._records.find_one({"_id": blob_id, "complete": True, "expired_at": None})
        if d is None:
            return None
        try:
            stream = await self._bucket.open_download_stream(blob_id)
        except NoFile:
            return None
        return self._pieces(stream)

    @staticmethod
    async def _pieces(stream: Any) -> AsyncIterator[bytes]:
        try:
            while True:
                piece: bytes = await stream.readchunk()
                if not piece:
                    return
                yield piece
        finally:
            await stream.close()

    async def bind(self, blob_id: str, seq: int) -> bool:
        d = await self._records.find_one_and_update(
            {"_id": blob_id, "complete": True, "seq": {"$in": [None, seq]}},
            {"$set": {"seq": seq}},
            return_document=ReturnDocument.AFTER,
        )
        return d is not None

    async def expire(self, blob_id: str, now: float) -> bool:
        d = await self._records.find_one_and_update(
            {"_id": blob_id, "expired_at": None}, {"$set": {"expired_at": now}}
        )
        await self._delete_content(blob_id)
        return d is not None

    async def delete(self, blob_ids: Sequence[str]) -> int:
        for blob_id in blob_ids:
            await self._delete_content(blob_id)
        if not blob_ids:
            return 0
        result = await self._records.delete_many({"_id": {"$in": list(blob_ids)}})
        return int(result.deleted_count)

    async def unbound_before(self, before: float, limit: int) -> list[Blob]:
        cursor = (
            self._records.find({"seq": None, "created_at": {"$lt": before}})
            .sort("created_at", ASCENDING)
            .limit(limit)
        )
        return [_blob(d) async for d in cursor]

    async def live_before(self, before: float, limit: int) -> list[Blob]:
        cursor = (
            self._records.find(
                {"expired_at": None, "complete": True, "created_at": {"$lt": before}}
            )
            .sort("created_at", ASCENDING)
            .limit(limit)
        )
        return [_blob(d) async for d in cursor]

    async def of_conversations(self, conversation_ids: Sequence[str]) -> list[str]:
        if not conversation_ids:
            return []
        cursor = self._records.find(
            {"conversation_id": {"$in": list(conversation_ids)}}, {"_id": 1}
        )
        return [d["_id"] async for d in cursor]

    async def of_owner(self, owner_id: str) -> list[str]:
        return [d["_id"] async for d in self._records.find({"owner_id": owner_id}, {"_id": 1})]

    async def usage(self, owner_id: str, since: float) -> tuple[int, int]:
        total = recent = 0
        async for d in self._records.find(
            {"owner_id": owner_id}, {"size": 1, "created_at": 1, "expired_at": 1}
        ):
            if d.get("expired_at") is None:
                total += int(d.get("size", 0))
            if float(d["created_at"]) >= since:
                recent += 1
        return total, recent
