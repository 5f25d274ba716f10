"""``KeyStore`` on MongoDB: devices, epochs with envelopes, key requests, backups, audit.

An epoch is one document (``epochs``, ``_id`` = conversation:epoch) holding
every envelope of the rotation, so creating an epoch is one atomic insert and
two clients rotating at once cannot both win. Envelopes re-wrapped later for
new devices live in ``rewraps``, unique per (conversation, epoch, recipient
device, sender device): every sender's offer is kept beside the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.write_concern import WriteConcern

from chat_server.rooms.models import (
    AuditRecord,
    Device,
    EnvelopeRecord,
    EpochCommitment,
    KeyRequest,
)
from chat_server.storage.base import Conflict
from chat_server.storage.mongo import translate_errors

Doc = dict[str, Any]
DURABLE = WriteConcern(w="majority", j=True)


def _device(d: Mapping[str, Any]) -> Device:
    return Device(
        id=d["_id"],
        user_id=d["user_id"],
        dh_pub=bytes(d["dh_pub"]),
        sig_pub=bytes(d["sig_pub"]),
        registration_sig=bytes(d["registration_sig"]),
        created_at=d["created_at"],
        removed_at=d.get("removed_at"),
        name=d.get("name", ""),
    )


def _env_doc(e: EnvelopeRecord) -> Doc:
    return {
        "conversation_id": e.conversation_id,
        "epoch": e.epoch,
        "recipient_device": e.recipient_device,
        "sender_device": e.sender_device,
        "enc": e.enc,
        "ct": e.ct,
        "sig": e.sig,
    }


def _env(d: Mapping[str, Any]) -> EnvelopeRecord:
    return EnvelopeRecord(
        conversation_id=d["conversation_id"],
        epoch=d["epoch"],
        recipient_device=d["recipient_device"],
        sender_device=d["sender_device"],
        enc=bytes(d["enc"]),
        ct=bytes(d["ct"]),
        sig=bytes(d["sig"]),
    )


def _request(d: Mapping[str, Any]) -> KeyRequest:
    return KeyRequest(
        conversation_id=d["conversation_id"],
        recipient_device=d["recipient_device"],
        recipient_user=d["recipient_user"],
        reason=d["reason"],
        approved=bool(d["approved"]),
        created_at=d["created_at"],
        done=bool(d.get("done", False)),
    )


def audit_subjects(record: AuditRecord) -> list[str]:
    """The actor and every string detail value of an audit record (ids of people)."""
    found = [record.actor_id]
    found += [v for v in record.details.values() if isinstance(v, str)]
    return sorted(set(found))


@translate_errors
class MongoKeyStore:
    """``KeyStore`` on MongoDB."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db
        self._epochs = db.get_collection("epochs", write_concern=DURABLE)
        self._rewraps = db.get_collection("rewraps", write_concern=DURABLE)

    async def create_indexes(self) -> None:
        """Indexes the key queries need (idempotent)."""
        await self._db.devices.create_index([("user_id", ASCENDING)])
        await self._epochs.create_index([("conversation_id", ASCENDING), ("epoch", ASCENDING)])
        await self._epochs.create_index([("recipients", ASCENDING)])
        # Before every offer was kept, this index was unique (first re-wrap won).
        old = "conversation_id_1_epoch_1_recipient_device_1"
        if (await self._rewraps.index_information()).get(old, {}).get("unique"):
            await self._rewraps.drop_index(old)
        await self._rewraps.create_index(
            [("conversation_id", ASCENDING), ("epoch", ASCENDING), ("recipient_device", ASCENDING)]
        )
        await self._rewraps.create_index([("recipient_device", ASCENDING)])
        await self._db.key_requests.create_index([("conversation_id", ASCENDING)])
        await self._db.audit.create_index([("conversation_id", ASCENDING), ("at", ASCENDING)])

    async def add_device(self, device: Device) -> None:
        try:
            await self._db.devices.insert_one(
                {
                    "_id": device.id,
                    "user_id": device.user_id,
                    "dh_pub": device.dh_pub,
                    "sig_pub": device.sig_pub,
                    "registration_sig": device.registration_sig,
                    "created_at": device.created_at,
                    "removed_at": None,
                    "name": device.name,
                }
            )
        except DuplicateKeyError as exc:
            raise Conflict("device already registered") from exc

    async def get_device(self, device_id: str) -> Device | None:
        d = await self._db.devices.find_one({"_id": device_id})
        return _device(d) if d else None

    async def devices_of(self, user_ids: Sequence[str]) -> list[Device]:
        cursor = self._db.devices.find(
            {"user_id": {"$in": list(user_ids)}, "removed_at": None}
        ).sort("created_at", ASCENDING)
        return [_device(d) async for d in cursor]

    async def remove_device(self, device_id: str, now: float) -> bool:
        res = await self._db.devices.update_one(
            {"_id": device_id, "removed_at": None}, {"$set": {"removed_at": now}}
        )
        return bool(res.modified_count)

    async def add_epoch(
        self,
        conversation_id: str,
        epoch: int,
        creator_device: str,
        envelopes: Sequence[EnvelopeRecord],
        now: float,
        counsellor_id: str,
        commitment: EpochCommitment | None = None,
    ) -> None:
        doc: Doc = {
            "_id": f"{conversation_id}:{epoch}",
            "conversation_id": conversation_id,
            "epoch": epoch,
            "creator_device": creator_device,
            "created_at": now,
            "recipients": [e.recipient_device for e in envelopes],
            "envelopes": [_env_doc(e) for e in envelopes],
        }
        if commitment is not None:
            doc["commitment"] = commitment.commitment
            doc["commitment_sig"] = commitment.sig
        try:
            await self._epochs.insert_one(doc)
        except DuplicateKeyError as exc:
            await self._db.conversations.update_one(
                {"_id": conversation_id}, {"$max": {"epoch": epoch}}
            )
            raise Conflict(f"epoch {epoch} already exists") from exc
        await self._db.conversations.update_one(
            {"_id": conversation_id}, {"$max": {"epoch": epoch}}
        )
        await self._db.conversations.update_one(
            {"_id": conversation_id, "counsellor_id": counsellor_id, "epoch": epoch},
            {"$set": {"rotation_required": False}},
        )

    async def ever_registered(self, user_id: str) -> int:
        return int(await self._db.devices.count_documents({"user_id": user_id}))

    async def add_envelopes(self, envelopes: Sequence[EnvelopeRecord]) -> int:
        if not envelopes:
            return 0
        docs = [
            {
                "_id": f"{e.conversation_id}:{e.epoch}:{e.recipient_device}:{e.sender_device}",
                **_env_doc(e),
            }
            for e in envelopes
        ]
        try:
            res = await self._rewraps.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            return int(exc.details.get("nInserted", 0))
        return len(res.inserted_ids)

    async def envelopes_for(
        self, device_id: str, conversation_id: str | None
    ) -> list[EnvelopeRecord]:
        # {"$in": [x]} rather than plain equality: the embedded engine does not match
        # array elements by equality through an index.
        query: Doc = {"recipients": {"$in": [device_id]}}
        if conversation_id is not None:
            query["conversation_id"] = conversation_id
        out: list[EnvelopeRecord] = []
        async for d in self._epochs.find(query):
            out.extend(_env(e) for e in d["envelopes"] if e["recipient_device"] == device_id)
        rq: Doc = {"recipient_device": device_id}
        if conversation_id is not None:
            rq["conversation_id"] = conversation_id
        async for d in self._rewraps.find(rq):
            out.append(_env(d))
        out.sort(key=lambda e: (e.conversation_id, e.epoch))
        return out

    async def count_envelopes(self, conversation_id: str, epoch: int, recipient: str) -> int:
        ep = await self._epochs.find_one(
            {"_id": f"{conversation_id}:{epoch}"}, projection={"recipients": 1}
        )
        own = sum(1 for r in ep["recipients"] if r == recipient) if ep else 0
        rewraps = await self._rewraps.count_documents(
            {"conversation_id": conversation_id, "epoch": epoch, "recipient_device": recipient}
        )
        return own + int(rewraps)

    async def commitments(self, conversation_ids: Sequence[str]) -> list[EpochCommitment]:
        out = [
            EpochCommitment(
                d["conversation_id"],
                d["epoch"],
                d["creator_device"],
                bytes(d["commitment"]),
                bytes(d["commitment_sig"]),
            )
            async for d in self._epochs.find(
                {"conversation_id": {"$in": list(conversation_ids)}},
                projection={
                    "conversation_id": 1,
                    "epoch": 1,
                    "creator_device": 1,
                    "commitment": 1,
                    "commitment_sig": 1,
                },
            )
            if d.get("commitment") is not None
        ]
        out.sort(key=lambda c: (c.conversation_id, c.epoch))
        return out

    async def epochs_held(
        self, conversation_id: str, device_ids: Sequence[str]
    ) -> dict[str, set[int]]:
        held: dict[str, set[int]] = {d: set() for d in device_ids}
        async for d in self._epochs.find(
            {"conversation_id": conversation_id}, projection={"epoch": 1, "recipients": 1}
        ):
            for r in d["recipients"]:
                if r in held:
                    held[r].add(d["epoch"])
        async for d in self._rewraps.find(
            {"conversation_id": conversation_id, "recipient_device": {"$in": list(device_ids)}},
            projection={"epoch": 1, "recipient_device": 1},
        ):
            held[d["recipient_device"]].add(d["epoch"])
        return held

    async def require_rotation(self, conversation_id: str) -> None:
        await self._db.conversations.update_one(
            {"_id": conversation_id}, {"$set": {"rotation_required": True}}
        )

    async def put_key_request(self, request: KeyRequest) -> None:
        r = request
        key = f"{r.conversation_id}:{r.recipient_device}"
        # _id repeated in the replacement: the embedded engine's upsert ignores the filter's.
        await self._db.key_requests.replace_one(
            {"_id": key},
            {
                "_id": key,
                "conversation_id": r.conversation_id,
                "recipient_device": r.recipient_device,
                "recipient_user": r.recipient_user,
                "reason": r.reason,
                "approved": r.approved,
                "created_at": r.created_at,
                "done": r.done,
            },
            upsert=True,
        )

    async def key_requests(self, conversation_ids: Sequence[str]) -> list[KeyRequest]:
        cursor = self._db.key_requests.find(
            {"conversation_id": {"$in": list(conversation_ids)}, "done": False}
        )
        return [_request(d) async for d in cursor]

    async def close_key_request(self, conversation_id: str, device_id: str) -> None:
        await self._db.key_requests.update_one(
            {"_id": f"{conversation_id}:{device_id}"}, {"$set": {"done": True}}
        )

    async def put_backup(self, user_id: str, backup: dict[str, str], now: float) -> None:
        await self._db.backups.replace_one(
            {"_id": user_id},
            {"_id": user_id, "backup": backup, "updated_at": now},
            upsert=True,
        )

    async def get_backup(self, user_id: str) -> dict[str, str] | None:
        d = await self._db.backups.find_one({"_id": user_id})
        return dict(d["backup"]) if d else None

    async def swap_backup(
        self,
        user_id: str,
        expected: dict[str, str] | None,
        backup: dict[str, str],
        now: float,
    ) -> bool:
        doc = {"_id": user_id, "backup": backup, "updated_at": now}
        if expected is None:
            try:
                await self._db.backups.insert_one(doc)
            except DuplicateKeyError:
                return False
            return True
        # A compare-and-set on the nonce read before: a concurrent write makes it miss.
        result = await self._db.backups.replace_one(
            {"_id": user_id, "backup.nonce": expected.get("nonce")}, doc
        )
        return result.matched_count == 1

    async def add_audit(self, record: AuditRecord) -> None:
        await self._db.audit.insert_one(
            {
                "conversation_id": record.conversation_id,
                "actor_id": record.actor_id,
                "action": record.action,
                "details": record.details,
                "at": record.at,
                # Every person the record names, so an erasure finds them by index.
                "subjects": audit_subjects(record),
            }
        )

    async def audit_for(self, conversation_id: str) -> list[AuditRecord]:
        cursor = self._db.audit.find({"conversation_id": conversation_id}).sort("at", ASCENDING)
        return [
            AuditRecord(d["conversation_id"], d["actor_id"], d["action"], d["details"], d["at"])
            async for d in cursor
        ]
