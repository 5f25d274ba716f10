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
import datetime
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Any

import pymongo
from bson.int64 import Int64
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from chat_server.storage.base import StoreUnavailable
from chat_server.storage.blobs import Blob, BlobTooLarge
from chat_server.storage.mongo import DURABLE, translate_errors

log = logging.getLogger(__name__)

Doc = dict[str, Any]
BUCKET = "attachments"
GRIDFS_CHUNK = 256 * 1024
#: The budget of one GridFS operation (a chunk written or read, a file deleted): longer
#: than the store timeout of messages, as a busy store writes 256 KiB chunks slowly and
#: an upload in progress is better slow than lost.
BLOB_OP_SECONDS = 60.0


class _ChunkWriter:
    """Writes one GridFS file chunk by chunk, as the GridFS spec lays it out.

    PyMongo's ``GridIn`` keeps chunks in memory until 32 MiB of them are buffered
    (one ``insert_many``): a whole 5 MiB file per upload. This writer inserts each
    256 KiB chunk as soon as it is full, so an upload holds at most one chunk
    (bench/attachments.py measures it); the documents are the ones ``GridIn`` writes
    (``files_id``, ``n``, ``data``; then the file document), so ``AsyncGridFSBucket``
    reads and deletes them.
    """

    def __init__(self, db: AsyncDatabase[Doc], blob_id: str) -> None:
        # Durable like messages: an acknowledged upload survives a crash.
        self._chunks = db.get_collection("attachments.chunks", write_concern=DURABLE)
        self._files = db.get_collection("attachments.files", write_concern=DURABLE)
        self._id = blob_id
        self._buffer = bytearray()
        self._n = 0
        self._length = 0

    async def write(self, piece: bytes) -> None:
        self._buffer += piece
        self._length += len(piece)
        while len(self._buffer) >= GRIDFS_CHUNK:
            await self._insert(bytes(self._buffer[:GRIDFS_CHUNK]))
            del self._buffer[:GRIDFS_CHUNK]

    async def _insert(self, data: bytes) -> None:
        with pymongo.timeout(BLOB_OP_SECONDS):
            await self._chunks.insert_one({"files_id": self._id, "n": self._n, "data": data})
        self._n += 1

    async def close(self) -> None:
        if self._buffer:
            await self._insert(bytes(self._buffer))
            self._buffer.clear()
        with pymongo.timeout(BLOB_OP_SECONDS):
            await self._files.insert_one(
                {
                    "_id": self._id,
                    "filename": self._id,
                    "length": Int64(self._length),
                    "chunkSize": GRIDFS_CHUNK,
                    "uploadDate": datetime.datetime.now(tz=datetime.UTC),
                }
            )


def _blob(d: Mapping[str, Any]) -> Blob:
    return Blob(
        d["_id"],
        d["owner_id"],
        d["conversation_id"],
        int(d.get("size", 0)),
        float(d["created_at"]),
        d.get("seq"),
        d.get("expired_at"),
        d.get("grant_hash"),
        d.get("grant_expires"),
    )


@translate_errors
class GridFSBlobStore:
    """The ``BlobStore`` port on MongoDB (see ``storage/blobs.py``)."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._records = db.get_collection("attachment_blobs", write_concern=DURABLE)
        self._bucket = AsyncGridFSBucket(db, bucket_name=BUCKET, chunk_size_bytes=GRIDFS_CHUNK)
        self._chunks = db.get_collection("attachments.chunks")
        self._db = db

    async def create_indexes(self) -> None:
        """The indexes of the record queries (idempotent)."""
        # One field each: the embedded engine uses an index for an equality only when
        # one is named after that field alone (see ``MongoDatabase.create_indexes``).
        for name in ("owner_id", "conversation_id", "seq", "created_at"):
            await self._records.create_index([(name, ASCENDING)])
        # The indexes GridFS's own writer creates (the chunks are written here).
        await self._chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
        await self._db.get_collection("attachments.files").create_index(
            [("filename", ASCENDING), ("uploadDate", ASCENDING)]
        )

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
        upload = _ChunkWriter(self._db, blob.id)
        try:
            async for piece in chunks:
                size += len(piece)
                if size > limit:
                    raise BlobTooLarge(limit)
                await upload.write(piece)
            await upload.close()
        except BaseException:
            await self._discard(blob.id)
            raise
        await self._records.update_one({"_id": blob.id}, {"$set": {"size": size, "complete": True}})
        return Blob(blob.id, blob.owner_id, blob.conversation_id, size, blob.created_at)

    async def _discard(self, blob_id: str) -> None:
        # The chunks written so far go (as GridIn's abort does); the record too.
        with contextlib.suppress(PyMongoError), pymongo.timeout(BLOB_OP_SECONDS):
            await self._chunks.delete_many({"files_id": blob_id})
        with contextlib.suppress(PyMongoError):
            await self._records.delete_one({"_id": blob_id})

    async def _delete_content(self, blob_id: str) -> None:
        with contextlib.suppress(NoFile, PyMongoError), pymongo.timeout(BLOB_OP_SECONDS):
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
        return self._pieces(blob_id, int(stream.length))

    async def _pieces(self, blob_id: str, length: int) -> AsyncIterator[bytes]:
        # One chunk per query: GridOut's cursor, like the embedded engine (which ignores
        # ``batch_size``), would fetch a whole file in its first batch.
        count = -(-length // GRIDFS_CHUNK)
        for n in range(count):
            with pymongo.timeout(BLOB_OP_SECONDS):
                doc = await self._chunks.find_one({"files_id": blob_id, "n": n}, {"data": 1})
            if doc is None:
                raise StoreUnavailable(f"blob {blob_id}: chunk {n} of {count} is missing")
            yield bytes(doc["data"])

    async def bind(self, blob_id: str, seq: int) -> bool:
        d = await self._records.find_one_and_update(
            {"_id": blob_id, "complete": True, "seq": {"$in": [None, seq]}},
            {"$set": {"seq": seq}},
            return_document=ReturnDocument.AFTER,
        )
        return d is not None

    async def set_grant(self, blob_id: str, grant_hash: str, expires_at: float) -> bool:
        result = await self._records.update_one(
            {"_id": blob_id, "complete": True},
            {"$set": {"grant_hash": grant_hash, "grant_expires": expires_at}},
        )
        return bool(result.matched_count)

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
