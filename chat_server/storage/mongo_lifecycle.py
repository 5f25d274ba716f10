"""``LifecycleStore`` on MongoDB: retention purges, erasure, archiving, access requests.

Purges read at most ``limit`` ids, then delete exactly those: a batch never
grows with the backlog, and a job that stops in the middle leaves nothing
half-deleted that the next run would not finish.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from chat_server.rooms.models import AuditRecord, Conversation, Session, User
from chat_server.storage.mongo import _conversation, _user, translate_errors
from chat_server.storage.mongo_keys import audit_subjects

Doc = dict[str, Any]


def _replace_id(value: Any, user_id: str, pseudonym: str) -> Any:
    if value == user_id:
        return pseudonym
    if isinstance(value, list):
        return [_replace_id(v, user_id, pseudonym) for v in value]
    if isinstance(value, dict):
        return {k: _replace_id(v, user_id, pseudonym) for k, v in value.items()}
    return value


def _involving(user_id: str) -> Doc:
    # ``subjects`` lists everyone a record names (``$in``: the embedded engine matches array
    # elements that way); records written before it existed name people as actor, from, to.
    return {
        "$or": [
            {"subjects": {"$in": [user_id]}},
            {"actor_id": user_id},
            {"details.from": user_id},
            {"details.to": user_id},
        ]
    }


def _audit(d: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(
        d["conversation_id"], d["actor_id"], d["action"], dict(d.get("details") or {}), d["at"]
    )


async def _ids(collection: AsyncCollection[Doc], query: Doc, limit: int) -> list[Any]:
    if limit <= 0:
        return []
    cursor = collection.find(query, projection={"_id": 1}).limit(limit)
    return [d["_id"] async for d in cursor]


@translate_errors
class MongoLifecycleStore:
    """``LifecycleStore`` on MongoDB."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db

    async def create_indexes(self) -> None:
        """Indexes the purges and the erasure need (idempotent)."""
        db = self._db
        await db.users.create_index([("active_at", ASCENDING)])
        await db.users.create_index([("activation_expires", ASCENDING)])
        await db.sessions.create_index([("expires_at", ASCENDING)])
        await db.conversations.create_index([("archived_at", ASCENDING)])
        await db.conversations.create_index([("deleted_at", ASCENDING)])
        await db.audit.create_index([("at", ASCENDING)])
        await db.audit.create_index([("subjects", ASCENDING)])
        await db.presence.create_index([("process_id", ASCENDING)])
        await db.processes.create_index([("until", ASCENDING)])

    async def record_login(self, user_id: str, at: float) -> None:
        await self._db.users.update_one(
            {"_id": user_id}, {"$max": {"active_at": at}, "$set": {"notice_at": None}}
        )

    async def inactive_users(
        self, active_before: float, limit: int, *, unwarned_only: bool
    ) -> list[User]:
        if limit <= 0:
            return []
        # Two finds, not one $or: the embedded engine drops matches of an $or combined
        # with another condition. The second finds accounts written before ``active_at``.
        base: Doc = {"erasing": None}
        if unwarned_only:
            base["notice_at"] = None
        queries = [
            {**base, "active_at": {"$lt": active_before}},
            {**base, "active_at": None, "created_at": {"$lt": active_before}},
        ]
        found: dict[str, User] = {}
        for query in queries:
            cursor = self._db.users.find(query).sort("active_at", ASCENDING).limit(limit)
            async for d in cursor:
                found[d["_id"]] = _user(d)
        return sorted(found.values(), key=lambda u: u.active_at)[:limit]

    async def mark_warned(self, user_id: str, at: float) -> bool:
        res = await self._db.users.update_one(
            {"_id": user_id, "notice_at": None, "erasing": None}, {"$set": {"notice_at": at}}
        )
        return bool(res.modified_count)

    async def begin_erasure(self, user_id: str, pseudonym: str) -> str | None:
        users = self._db.users
        d = await users.find_one_and_update(
            {"_id": user_id, "erasing": None},
            {"$set": {"erasing": pseudonym}},
            return_document=ReturnDocument.AFTER,
        )
        if d is None:
            d = await users.find_one({"_id": user_id}, projection={"erasing": 1})
        if d is None:
            return None
        await self._db.sessions.delete_many({"user_id": user_id})
        stored = d.get("erasing")
        return str(stored) if stored else None

    async def pending_erasures(self, limit: int) -> list[User]:
        if limit <= 0:
            return []
        cursor = self._db.users.find({"erasing": {"$type": "string"}}).limit(limit)
        return [_user(d) async for d in cursor]

    async def erase_conversation(self, conversation_id: str, pseudonym: str, now: float) -> int:
        db = self._db
        removed = 0
        for name in ("messages", "reads", "epochs", "rewraps", "key_requests"):
            res = await db[name].delete_many({"conversation_id": conversation_id})
            removed += int(res.deleted_count)
        await db.conversations.update_one(
            {"_id": conversation_id, "deleted_at": None},
            {
                "$set": {
                    "beneficiary_id": pseudonym,
                    "last_seq": 0,
                    "previous_counsellor_id": None,
                    "temporary_until": None,
                    "archived_at": None,
                    "archived_by": None,
                    "archive_reason": None,
                    "deleted_at": now,
                }
            },
        )
        return removed

    async def erase_account(self, user_id: str) -> int:
        db = self._db
        removed = 0
        for name in ("sessions", "devices", "presence"):
            res = await db[name].delete_many({"user_id": user_id})
            removed += int(res.deleted_count)
        for name in ("backups", "last_seen", "users"):  # the account itself last
            res = await db[name].delete_one({"_id": user_id})
            removed += int(res.deleted_count)
        return removed

    async def pseudonymise_audit(self, user_id: str, pseudonym: str) -> int:
        changed = 0
        async for d in self._db.audit.find(_involving(user_id)):
            record = _audit(d)
            details = _replace_id(record.details, user_id, pseudonym)
            actor = pseudonym if record.actor_id == user_id else record.actor_id
            renamed = AuditRecord(record.conversation_id, actor, record.action, details, record.at)
            res = await self._db.audit.update_one(
                {"_id": d["_id"]},
                {
                    "$set": {
                        "actor_id": actor,
                        "details": details,
                        "subjects": audit_subjects(renamed),
                    }
                },
            )
            changed += int(res.modified_count)
        return changed

    async def audit_involving(self, user_id: str) -> list[AuditRecord]:
        cursor = self._db.audit.find(_involving(user_id)).sort("at", ASCENDING)
        return [_audit(d) async for d in cursor]

    async def sessions_of(self, user_id: str) -> list[Session]:
        cursor = self._db.sessions.find({"user_id": user_id}).sort("created_at", ASCENDING)
        return [
            Session(d["_id"], d["user_id"], d["device_id"], d["created_at"], d["expires_at"])
            async for d in cursor
        ]

    async def archive(
        self, conversation_id: str, by: str, reason: str, at: float
    ) -> Conversation | None:
        d = await self._db.conversations.find_one_and_update(
            {"_id": conversation_id, "archived_at": None, "deleted_at": None},
            {"$set": {"archived_at": at, "archived_by": by, "archive_reason": reason}},
            return_document=ReturnDocument.AFTER,
        )
        return _conversation(d) if d else None

    async def restore(self, conversation_id: str) -> Conversation | None:
        d = await self._db.conversations.find_one_and_update(
            # $type, not $ne None: the embedded engine's $ne None matches a missing field.
            {"_id": conversation_id, "archived_at": {"$type": "number"}},
            {"$set": {"archived_at": None, "archived_by": None, "archive_reason": None}},
            return_document=ReturnDocument.AFTER,
        )
        return _conversation(d) if d else None

    async def archived_before(self, before: float, limit: int) -> list[Conversation]:
        if limit <= 0:
            return []
        cursor = (
            self._db.conversations.find({"archived_at": {"$lt": before}})
            .sort("archived_at", ASCENDING)
            .limit(limit)
        )
        return [_conversation(d) async for d in cursor]

    async def purge_sessions(self, now: float, limit: int) -> int:
        ids = await _ids(self._db.sessions, {"expires_at": {"$lte": now}}, limit)
        if not ids:
            return 0
        res = await self._db.sessions.delete_many({"_id": {"$in": ids}})
        return int(res.deleted_count)

    async def purge_activations(self, now: float, limit: int) -> int:
        ids = await _ids(self._db.users, {"activation_expires": {"$lte": now}}, limit)
        if not ids:
            return 0
        res = await self._db.users.update_many(
            {"_id": {"$in": ids}}, {"$unset": {"activation_hash": "", "activation_expires": ""}}
        )
        return int(res.modified_count)

    async def purge_audit(self, before: float, limit: int) -> int:
        ids = await _ids(self._db.audit, {"at": {"$lt": before}}, limit)
        if not ids:
            return 0
        res = await self._db.audit.delete_many({"_id": {"$in": ids}})
        return int(res.deleted_count)

    async def purge_dead_processes(self, before: float, limit: int) -> int:
        ids = await _ids(self._db.processes, {"until": {"$lt": before}}, limit)
        if not ids:
            return 0
        counters = await self._db.presence.delete_many({"process_id": {"$in": ids}})
        res = await self._db.processes.delete_many({"_id": {"$in": ids}})
        return int(counters.deleted_count) + int(res.deleted_count)

    async def take_lease(self, name: str, holder: str, now: float, seconds: float) -> bool:
        # Three atomic steps, no $or and no upsert (the embedded engine's weak spots):
        # renew one's own, take over an expired one, or create it (unique _id).
        leases, until = self._db.leases, now + seconds
        mine = await leases.update_one(
            {"_id": name, "holder": holder}, {"$set": {"until": until}}
        )
        if mine.matched_count:
            return True
        expired = await leases.update_one(
            {"_id": name, "until": {"$lte": now}}, {"$set": {"holder": holder, "until": until}}
        )
        if expired.matched_count:
            return True
        try:
            await leases.insert_one({"_id": name, "holder": holder, "until": until})
        except DuplicateKeyError:
            return False
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        await self._db.leases.delete_one({"_id": name, "holder": holder})

    async def purge_tombstones(self, before: float, limit: int) -> int:
        ids = await _ids(self._db.conversations, {"deleted_at": {"$lt": before}}, limit)
        if not ids:
            return 0
        res = await self._db.conversations.delete_many({"_id": {"$in": ids}})
        return int(res.deleted_count)
