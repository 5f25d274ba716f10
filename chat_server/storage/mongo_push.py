"""``PushStore`` on MongoDB: Web Push subscriptions and the durable push outbox.

Jobs are written with majority write concern and journaling (like messages),
so a job acknowledged by the store survives a crash and a worker that was
down finds it when it starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from chat_server.storage.mongo import DURABLE, translate_errors
from notifications.models import JobKind, PushJob, Subscription, Target

Doc = dict[str, Any]


def _sub_doc(s: Subscription) -> Doc:
    return {
        "_id": s.id,
        "user_id": s.user_id,
        "device_id": s.device_id,
        "endpoint": s.endpoint,
        "p256dh": s.p256dh,
        "auth": s.auth,
        "created_at": s.created_at,
        "muted_types": list(s.muted_types),
        "quiet_start": s.quiet_start,
        "quiet_end": s.quiet_end,
        "timezone": s.timezone,
        "muted_conversations": list(s.muted_conversations),
    }


def _sub(d: Mapping[str, Any]) -> Subscription:
    return Subscription(
        id=d["_id"],
        user_id=d["user_id"],
        device_id=d["device_id"],
        endpoint=d["endpoint"],
        p256dh=d["p256dh"],
        auth=d["auth"],
        created_at=d["created_at"],
        muted_types=tuple(d.get("muted_types") or ()),
        quiet_start=d.get("quiet_start", "20:00"),
        quiet_end=d.get("quiet_end", "08:00"),
        timezone=d.get("timezone", "Europe/Paris"),
        muted_conversations=tuple(d.get("muted_conversations") or ()),
    )


def _targets_doc(targets: dict[str, Target]) -> list[list[Any]]:
    # Stored as [id, attempts, not_before] triples, so no subscription id becomes a field name.
    return [[k, t.attempts, t.not_before] for k, t in targets.items()]


def _job_doc(j: PushJob) -> Doc:
    return {
        "_id": j.id,
        "kind": j.kind.value,
        "recipients": list(j.recipients),
        "created_at": j.created_at,
        "due_at": j.due_at,
        "conversation_id": j.conversation_id,
        "seq": j.seq,
        "data": dict(j.data),
        "targets": None if j.targets is None else _targets_doc(j.targets),
        "lease_until": j.lease_until,
    }


def _job(d: Mapping[str, Any]) -> PushJob:
    targets = d.get("targets")
    return PushJob(
        id=d["_id"],
        kind=JobKind(d["kind"]),
        recipients=tuple(d.get("recipients") or ()),
        created_at=d["created_at"],
        due_at=d["due_at"],
        conversation_id=d.get("conversation_id"),
        seq=d.get("seq"),
        data=dict(d.get("data") or {}),
        targets=None if targets is None else {k: Target(int(a), float(nb)) for k, a, nb in targets},
        lease_until=d.get("lease_until", 0.0),
    )


@translate_errors
class MongoPushStore:
    """``PushStore`` on the ``push_subscriptions`` and ``push_jobs`` collections."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._subs = db.get_collection("push_subscriptions", write_concern=DURABLE)
        self._jobs = db.get_collection("push_jobs", write_concern=DURABLE)
        self._config = db.get_collection("push_config", write_concern=DURABLE)
        # Figures only, rewritten every report: the default write concern is enough.
        self._workers = db.get_collection("push_workers")

    async def create_indexes(self) -> None:
        """Indexes the queries need (idempotent)."""
        await self._subs.create_index([("user_id", ASCENDING)])
        await self._jobs.create_index([("due_at", ASCENDING)])
        await self._jobs.create_index([("recipients", ASCENDING)])
        await self._jobs.create_index([("conversation_id", ASCENDING)])

    async def put_subscription(self, sub: Subscription) -> None:
        await self._subs.replace_one({"_id": sub.id}, _sub_doc(sub), upsert=True)

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        d = await self._subs.find_one({"_id": sub_id})
        return _sub(d) if d is not None else None

    async def subscriptions_of(self, user_ids: Sequence[str]) -> list[Subscription]:
        if not user_ids:
            return []
        cursor = self._subs.find({"user_id": {"$in": list(user_ids)}})
        subs = [_sub(d) async for d in cursor]
        return sorted(subs, key=lambda s: (s.created_at, s.id))

    async def delete_subscription(self, sub_id: str) -> bool:
        r = await self._subs.delete_one({"_id": sub_id})
        return r.deleted_count > 0

    async def delete_device_subscriptions(self, user_id: str, device_id: str) -> int:
        r = await self._subs.delete_many({"user_id": user_id, "device_id": device_id})
        return r.deleted_count

    async def delete_user_subscriptions(self, user_id: str) -> int:
        r = await self._subs.delete_many({"user_id": user_id})
        return r.deleted_count

    async def add_job(self, job: PushJob) -> bool:
        try:
            await self._jobs.insert_one(_job_doc(job))
        except DuplicateKeyError:
            return False
        return True

    async def claim_jobs(self, now: float, lease: float, limit: int) -> list[PushJob]:
        out: list[PushJob] = []
        # One atomic find-and-modify per job: no two workers lease the same one.
        while len(out) < limit:
            d = await self._jobs.find_one_and_update(
                {"due_at": {"$lte": now}, "lease_until": {"$lte": now}},
                {"$set": {"lease_until": now + lease}},
                sort=[("due_at", ASCENDING), ("_id", ASCENDING)],
                return_document=ReturnDocument.AFTER,
            )
            if d is None:
                break
            out.append(_job(d))
        return out

    async def update_job(self, job_id: str, targets: dict[str, Target], due_at: float) -> None:
        await self._jobs.update_one(
            {"_id": job_id},
            {
                "$set": {
                    "targets": _targets_doc(targets),
                    "due_at": due_at,
                    "lease_until": 0.0,
                }
            },
        )

    async def delete_job(self, job_id: str) -> bool:
        r = await self._jobs.delete_one({"_id": job_id})
        return r.deleted_count > 0

    async def get_job(self, job_id: str) -> PushJob | None:
        d = await self._jobs.find_one({"_id": job_id})
        return _job(d) if d is not None else None

    async def delete_jobs_with_prefix(self, prefix: str) -> int:
        # A range on the id (every id starting with the prefix sorts inside it).
        r = await self._jobs.delete_many({"_id": {"$gte": prefix, "$lt": prefix + "\uffff"}})
        return r.deleted_count

    async def delete_user_jobs(self, user_id: str, conversation_ids: Sequence[str]) -> int:
        query: Doc = {
            "$or": [
                {"recipients": {"$in": [user_id]}},
                {"conversation_id": {"$in": list(conversation_ids)}},
            ]
        }
        r = await self._jobs.delete_many(query)
        return r.deleted_count

    async def queue_stats(self, now: float) -> tuple[int, float | None]:
        count = await self._jobs.count_documents({})
        oldest = await self._jobs.find_one({"due_at": {"$lte": now}}, sort=[("due_at", ASCENDING)])
        return count, (oldest["due_at"] if oldest is not None else None)

    async def put_worker_stats(self, worker_id: str, stats: dict[str, Any], at: float) -> None:
        doc = {"_id": worker_id, "at": at, "stats": dict(stats)}
        await self._workers.replace_one({"_id": worker_id}, doc, upsert=True)

    async def worker_stats(self, since: float) -> list[dict[str, Any]]:
        await self._workers.delete_many({"at": {"$lt": since}})
        found = [d async for d in self._workers.find({}).sort("_id", ASCENDING)]
        return [{"worker": d["_id"], "at": d["at"], "stats": dict(d["stats"])} for d in found]

    async def vapid_key(self, candidate: str) -> str:
        with contextlib.suppress(DuplicateKeyError):
            await self._config.insert_one({"_id": "vapid", "private_pem": candidate})
        d = await self._config.find_one({"_id": "vapid"})
        if d is None:  # pragma: no cover - inserted or found just above
            return candidate
        pem: str = d["private_pem"]
        return pem
