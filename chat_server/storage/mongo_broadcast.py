"""``BroadcastStore`` on MongoDB: the ``broadcast_lists`` and ``broadcasts`` collections
(docs/privacy.md).

Array fields are matched with ``{"$in": [x]}`` and rewritten with ``$set`` (no ``$pull``,
no array filters): the embedded engine answers those the same way MongoDB does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from chat_server.storage.mongo import DURABLE, translate_errors
from chat_server.tools.broadcast import Broadcast, BroadcastList, Copy

Doc = dict[str, Any]

log = logging.getLogger(__name__)


def _list(d: Doc) -> BroadcastList:
    return BroadcastList(
        id=d["_id"],
        owner_id=d["owner_id"],
        name=d["name"],
        members=tuple(d.get("members", ())),
        created_at=d["created_at"],
        updated_at=d["updated_at"],
    )


def _copy_doc(c: Copy) -> Doc:
    return {
        "conversation_id": c.conversation_id,
        "beneficiary_id": c.beneficiary_id,
        "client_id": c.client_id,
        "seq": c.seq,
    }


def _broadcast(d: Doc) -> Broadcast:
    return Broadcast(
        id=d["_id"],
        owner_id=d["owner_id"],
        list_id=d.get("list_id"),
        label=d.get("label"),
        created_at=d["created_at"],
        copies=tuple(
            Copy(c["conversation_id"], c["beneficiary_id"], c["client_id"], c.get("seq"))
            for c in d.get("copies", ())
        ),
    )


def _copies_set(copies: Sequence[Copy]) -> Doc:
    return {
        "copies": [_copy_doc(c) for c in copies],
        "conversation_ids": [c.conversation_id for c in copies],
    }


@translate_errors
class MongoBroadcastStore:
    """``BroadcastStore`` on MongoDB (majority, journaled writes)."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._lists = db.get_collection("broadcast_lists", write_concern=DURABLE)
        self._records = db.get_collection("broadcasts", write_concern=DURABLE)

    async def create_indexes(self) -> None:
        """Lists by owner and by member; records by owner and by conversation (erasure)."""
        await self._lists.create_index([("owner_id", ASCENDING), ("created_at", ASCENDING)])
        await self._lists.create_index([("members", ASCENDING)])
        await self._records.create_index([("owner_id", ASCENDING), ("created_at", DESCENDING)])
        await self._records.create_index([("conversation_ids", ASCENDING)])

    async def add_list(self, lst: BroadcastList) -> None:
        await self._lists.insert_one(
            {
                "_id": lst.id,
                "owner_id": lst.owner_id,
                "name": lst.name,
                "members": list(lst.members),
                "created_at": lst.created_at,
                "updated_at": lst.updated_at,
            }
        )

    async def get_list(self, list_id: str) -> BroadcastList | None:
        d = await self._lists.find_one({"_id": list_id})
        return _list(d) if d else None

    async def lists_of(self, owner_id: str) -> list[BroadcastList]:
        found = [_list(d) async for d in self._lists.find({"owner_id": owner_id})]
        return sorted(found, key=lambda x: (x.created_at, x.id))

    async def update_list(
        self, list_id: str, name: str, members: Sequence[str], at: float
    ) -> BroadcastList | None:
        d = await self._lists.find_one_and_update(
            {"_id": list_id},
            {"$set": {"name": name, "members": list(members), "updated_at": at}},
            return_document=ReturnDocument.AFTER,
        )
        return _list(d) if d else None

    async def drop_members(self, list_id: str, gone: Sequence[str]) -> None:
        # One atomic $pull: an edit made since the list was read is kept.
        await self._lists.update_one({"_id": list_id}, {"$pull": {"members": {"$in": list(gone)}}})

    async def delete_list(self, list_id: str) -> bool:
        result = await self._lists.delete_one({"_id": list_id})
        return result.deleted_count > 0

    async def add_broadcast(self, record: Broadcast, keep: int) -> None:
        await self._records.insert_one(
            {
                "_id": record.id,
                "owner_id": record.owner_id,
                "list_id": record.list_id,
                "label": record.label,
                "created_at": record.created_at,
                **_copies_set(record.copies),
            }
        )
        # The record is stored: a failed prune must not report it as not stored (the next
        # record's prune catches up).
        try:
            await self._prune(record.owner_id, keep)
        except Exception as exc:
            log.warning(
                "broadcast records of %s not pruned: %s: %s",
                record.owner_id,
                type(exc).__name__,
                exc,
            )

    async def _prune(self, owner_id: str, keep: int) -> None:
        cursor = self._records.find({"owner_id": owner_id}, {"_id": 1, "created_at": 1})
        ids = [(d["created_at"], d["_id"]) async for d in cursor]
        ids.sort(reverse=True)
        old = [i for _, i in ids[keep:]]
        if old:
            await self._records.delete_many({"_id": {"$in": old}})

    async def get_broadcast(self, broadcast_id: str) -> Broadcast | None:
        d = await self._records.find_one({"_id": broadcast_id})
        return _broadcast(d) if d else None

    async def broadcasts_of(self, owner_id: str, limit: int) -> list[Broadcast]:
        found = [_broadcast(d) async for d in self._records.find({"owner_id": owner_id})]
        found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return found[:limit]

    async def set_seqs(self, broadcast_id: str, seqs: Mapping[str, int]) -> None:
        # A read, then a rewrite of the copies: two writers can only set the same seqs
        # (a seq is found once and never changes), so the last write loses nothing.
        record = await self.get_broadcast(broadcast_id)
        if record is None:
            return
        copies = [
            Copy(c.conversation_id, c.beneficiary_id, c.client_id, seqs.get(c.conversation_id))
            if c.seq is None
            else c
            for c in record.copies
        ]
        await self._records.update_one({"_id": broadcast_id}, {"$set": _copies_set(copies)})

    async def erase_user(self, user_id: str, conversation_ids: Sequence[str]) -> int:
        changed = (await self._lists.delete_many({"owner_id": user_id})).deleted_count
        changed += (await self._records.delete_many({"owner_id": user_id})).deleted_count
        # One atomic $pull per list: an edit made meanwhile is kept.
        left = await self._lists.update_many(
            {"members": {"$in": [user_id]}}, {"$pull": {"members": user_id}}
        )
        changed += left.modified_count
        gone = set(conversation_ids)
        if gone:
            query = {"conversation_ids": {"$in": sorted(gone)}}
            for d in [d async for d in self._records.find(query)]:
                kept = [c for c in _broadcast(d).copies if c.conversation_id not in gone]
                await self._records.update_one({"_id": d["_id"]}, {"$set": _copies_set(kept)})
                changed += 1
        return changed
