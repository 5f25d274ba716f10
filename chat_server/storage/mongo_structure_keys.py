"""``StructureKeyStore`` on MongoDB: ``structure_keys`` (``_id`` = structure id, so a
structure has one key, created by one atomic insert) and ``structure_grants``
(``_id`` = key id:device id, one grant per device and key) and
``structure_endorsements`` (``_id`` = key id:device id, one endorsement per device
and key)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from chat_server.storage.base import Conflict
from chat_server.storage.mongo import DURABLE, translate_errors
from chat_server.storage.structure_keys import EndorsementRecord, GrantRecord, StructureKey

Doc = dict[str, Any]


def _key(d: Mapping[str, Any]) -> StructureKey:
    return StructureKey(
        structure_id=d["_id"],
        key_id=d["key_id"],
        public_key=bytes(d["public_key"]),
        creator_device=d["creator_device"],
        creator_user=d["creator_user"],
        sig=bytes(d["sig"]),
        created_at=d["created_at"],
    )


def _grant(d: Mapping[str, Any]) -> GrantRecord:
    return GrantRecord(
        structure_id=d["structure_id"],
        key_id=d["key_id"],
        recipient_device=d["recipient_device"],
        sender_device=d["sender_device"],
        enc=bytes(d["enc"]),
        ct=bytes(d["ct"]),
        sig=bytes(d["sig"]),
        created_at=d["created_at"],
    )


def _endorsement(d: Mapping[str, Any]) -> EndorsementRecord:
    return EndorsementRecord(
        structure_id=d["structure_id"],
        key_id=d["key_id"],
        device_id=d["device_id"],
        user_id=d["user_id"],
        sig=bytes(d["sig"]),
        created_at=d["created_at"],
    )


@translate_errors
class MongoStructureKeyStore:
    """``StructureKeyStore`` on MongoDB."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._keys = db.get_collection("structure_keys", write_concern=DURABLE)
        self._grants = db.get_collection("structure_grants", write_concern=DURABLE)
        self._endorsements = db.get_collection("structure_endorsements", write_concern=DURABLE)

    async def create_indexes(self) -> None:
        """The indexes of the grant queries (idempotent)."""
        await self._grants.create_index([("structure_id", ASCENDING)])
        await self._endorsements.create_index([("structure_id", ASCENDING)])
        await self._endorsements.create_index([("key_id", ASCENDING)])
        await self._endorsements.create_index([("device_id", ASCENDING)])

    async def create_key(self, key: StructureKey) -> None:
        try:
            await self._keys.insert_one(
                {
                    "_id": key.structure_id,
                    "key_id": key.key_id,
                    "public_key": key.public_key,
                    "creator_device": key.creator_device,
                    "creator_user": key.creator_user,
                    "sig": key.sig,
                    "created_at": key.created_at,
                }
            )
        except DuplicateKeyError:
            raise Conflict(f"structure {key.structure_id} already has a key") from None

    async def current_key(self, structure_id: str) -> StructureKey | None:
        d = await self._keys.find_one({"_id": structure_id})
        return None if d is None else _key(d)

    async def add_grants(self, grants: Sequence[GrantRecord]) -> int:
        docs = [
            {
                "_id": f"{g.key_id}:{g.recipient_device}",
                "structure_id": g.structure_id,
                "key_id": g.key_id,
                "recipient_device": g.recipient_device,
                "sender_device": g.sender_device,
                "enc": g.enc,
                "ct": g.ct,
                "sig": g.sig,
                "created_at": g.created_at,
            }
            for g in grants
        ]
        if not docs:
            return 0
        try:
            result = await self._grants.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            return int(exc.details.get("nInserted", 0))
        return len(result.inserted_ids)

    async def grants_for(self, key_id: str, device_ids: Sequence[str]) -> list[GrantRecord]:
        ids = [f"{key_id}:{d}" for d in device_ids]
        return [_grant(d) async for d in self._grants.find({"_id": {"$in": ids}})]

    async def add_endorsement(self, endorsement: EndorsementRecord) -> bool:
        e = endorsement
        try:
            await self._endorsements.insert_one(
                {
                    "_id": f"{e.key_id}:{e.device_id}",
                    "structure_id": e.structure_id,
                    "key_id": e.key_id,
                    "device_id": e.device_id,
                    "user_id": e.user_id,
                    "sig": e.sig,
                    "created_at": e.created_at,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def endorsements_for(
        self, key_id: str, device_ids: Sequence[str]
    ) -> list[EndorsementRecord]:
        ids = [f"{key_id}:{d}" for d in sorted(set(device_ids))]
        found = self._endorsements.find({"_id": {"$in": ids}}).sort("_id", ASCENDING)
        return sorted([_endorsement(d) async for d in found], key=lambda e: e.device_id)

    async def count_endorsements(self, key_id: str) -> int:
        return int(await self._endorsements.count_documents({"key_id": key_id}))

    async def remove_endorsements(self, device_id: str) -> int:
        result = await self._endorsements.delete_many({"device_id": device_id})
        return int(result.deleted_count)

    async def remove_grant(self, key_id: str, recipient_device: str) -> bool:
        result = await self._grants.delete_one({"_id": f"{key_id}:{recipient_device}"})
        return result.deleted_count == 1

    async def delete_structure(self, structure_id: str) -> int:
        g = await self._grants.delete_many({"structure_id": structure_id})
        e = await self._endorsements.delete_many({"structure_id": structure_id})
        k = await self._keys.delete_one({"_id": structure_id})
        return g.deleted_count + e.deleted_count + k.deleted_count
