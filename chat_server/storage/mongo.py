"""MongoDB adapters (PyMongo's asyncio API), for a real server or the embedded engine.

Only this module imports ``pymongo``. Messages are written with majority write
concern and journaling, so an acknowledged message survives a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)
from pymongo.write_concern import WriteConcern

from chat_server.rooms.models import (
    Conversation,
    NewMessage,
    Presence,
    Role,
    Session,
    StoredMessage,
    Structure,
    User,
)
from chat_server.storage.base import Conflict, NonceReused, StoreError

if TYPE_CHECKING:
    from chat_server.storage.mongo_keys import MongoKeyStore

Doc = dict[str, Any]
DURABLE = WriteConcern(w="majority", j=True)
PING_TIMEOUT = 2.0


class MongoDatabase:
    """Owns the client, creates indexes, and hands out the adapters."""

    def __init__(self, url: str, db_name: str, *, direct: bool = False) -> None:
        kwargs: dict[str, Any] = {"tz_aware": False, "serverSelectionTimeoutMS": 10_000}
        if direct:
            kwargs["directConnection"] = True
        self.client: AsyncMongoClient[Doc] = AsyncMongoClient(url, **kwargs)
        self.db: AsyncDatabase[Doc] = self.client[db_name]

    async def ping(self, timeout: float = PING_TIMEOUT) -> bool:
        """True if the server answers a ping within ``timeout`` seconds.

        Bounded so that a readiness probe answers promptly while the database is
        down, instead of waiting out the client's server-selection timeout.
        """
        try:
            with pymongo.timeout(timeout):
                await self.db.command("ping")
        except PyMongoError:
            return False
        return True

    async def wait_ready(self, timeout: float) -> None:
        """Poll ``ping`` until it answers or ``timeout`` seconds pass (then StoreError)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.ping():
            if loop.time() > deadline:
                raise StoreError("MongoDB did not answer in time")
            await asyncio.sleep(0.1)

    async def create_indexes(self) -> None:
        """Create every index the queries need (idempotent)."""
        db = self.db
        await db.users.create_index([("login_lower", ASCENDING)], unique=True)
        await db.users.create_index([("structure_id", ASCENDING), ("role", ASCENDING)])
        await db.users.create_index(
            [("activation_hash", ASCENDING)],
            unique=True,
            partialFilterExpression={"activation_hash": {"$type": "string"}},
        )
        await db.sessions.create_index([("user_id", ASCENDING)])
        await db.conversations.create_index([("beneficiary_id", ASCENDING)], unique=True)
        await db.conversations.create_index([("counsellor_id", ASCENDING)])
        await db.conversations.create_index([("previous_counsellor_id", ASCENDING)])
        await db.conversations.create_index([("structure_id", ASCENDING)])
        await db.messages.create_index(
            [("conversation_id", ASCENDING), ("seq", ASCENDING)], unique=True
        )
        await db.messages.create_index(
            [("conversation_id", ASCENDING), ("sender_id", ASCENDING), ("client_id", ASCENDING)],
            unique=True,
        )
        await db.messages.create_index(
            [("nonce_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"nonce_key": {"$type": "string"}},
        )
        await db.reads.create_index([("conversation_id", ASCENDING)])
        await db.presence.create_index([("user_id", ASCENDING)])
        await self.keys().create_indexes()

    def accounts(self) -> MongoAccountStore:
        """The account store on this database."""
        return MongoAccountStore(self.db)

    def messages(self) -> MongoMessageStore:
        """The message store on this database."""
        return MongoMessageStore(self.db)

    def presence(self) -> MongoPresenceStore:
        """The presence store on this database."""
        return MongoPresenceStore(self.db)

    def keys(self) -> MongoKeyStore:
        """The key store on this database."""
        from chat_server.storage.mongo_keys import MongoKeyStore

        return MongoKeyStore(self.db)

    def collection(self, name: str) -> AsyncCollection[Doc]:
        """A raw collection, for the other adapters of this package."""
        return self.db[name]

    async def close(self) -> None:
        """Close the client."""
        await self.client.close()


def _structure(d: Mapping[str, Any]) -> Structure:
    return Structure(d["_id"], d["name"], d["kind"], tuple(d.get("programmes", ())))


def _user(d: Mapping[str, Any]) -> User:
    return User(
        id=d["_id"],
        role=Role(d["role"]),
        login=d["login"],
        display_name=d["display_name"],
        structure_id=d.get("structure_id"),
        programme=d.get("programme"),
        password_hash=d.get("password_hash"),
        created_at=d.get("created_at", 0.0),
    )


class MongoAccountStore:
    """``AccountStore`` on MongoDB."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db

    async def add_structure(self, structure: Structure) -> None:
        doc = {
            "_id": structure.id,
            "name": structure.name,
            "kind": structure.kind,
            "programmes": list(structure.programmes),
        }
        try:
            await self._db.structures.insert_one(doc)
        except DuplicateKeyError as exc:
            raise Conflict(f"structure {structure.id} exists") from exc
        except PyMongoError as exc:
            raise StoreError(str(exc)) from exc

    async def get_structure(self, structure_id: str) -> Structure | None:
        d = await self._db.structures.find_one({"_id": structure_id})
        return _structure(d) if d else None

    async def list_structures(self) -> list[Structure]:
        return [_structure(d) async for d in self._db.structures.find().sort("name", ASCENDING)]

    async def add_user(self, user: User) -> None:
        doc = {
            "_id": user.id,
            "role": user.role.value,
            "login": user.login,
            "login_lower": user.login.lower(),
            "display_name": user.display_name,
            "structure_id": user.structure_id,
            "programme": user.programme,
            "password_hash": user.password_hash,
            "created_at": user.created_at,
        }
        try:
            await self._db.users.insert_one(doc)
        except DuplicateKeyError as exc:
            raise Conflict(f"login {user.login!r} is taken") from exc
        except PyMongoError as exc:
            raise StoreError(str(exc)) from exc

    async def get_user(self, user_id: str) -> User | None:
        d = await self._db.users.find_one({"_id": user_id})
        return _user(d) if d else None

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, User]:
        cursor = self._db.users.find({"_id": {"$in": list(user_ids)}})
        return {d["_id"]: _user(d) async for d in cursor}

    async def find_user_by_login(self, login: str) -> User | None:
        d = await self._db.users.find_one({"login_lower": login.lower()})
        return _user(d) if d else None

    async def users_in_structure(self, structure_id: str, role: Role) -> list[User]:
        cursor = self._db.users.find({"structure_id": structure_id, "role": role.value}).sort(
            "login_lower", ASCENDING
        )
        return [_user(d) async for d in cursor]

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._db.users.update_one(
            {"_id": user_id}, {"$set": {"password_hash": password_hash}}
        )

    async def set_activation(self, user_id: str, code_hash: str, expires_at: float) -> None:
        await self._db.users.update_one(
            {"_id": user_id},
            {"$set": {"activation_hash": code_hash, "activation_expires": expires_at}},
        )

    async def consume_activation(self, code_hash: str, now: float) -> User | None:
        d = await self._db.users.find_one_and_update(
            {"activation_hash": code_hash, "activation_expires": {"$gt": now}},
            {"$unset": {"activation_hash": "", "activation_expires": ""}},
            return_document=ReturnDocument.AFTER,
        )
        return _user(d) if d else None

    async def add_session(self, session: Session) -> None:
        await self._db.sessions.insert_one(
            {
                "_id": session.token_hash,
                "user_id": session.user_id,
                "device_id": session.device_id,
                "created_at": session.created_at,
                "expires_at": session.expires_at,
            }
        )

    async def get_session(self, token_hash: str, now: float) -> Session | None:
        d = await self._db.sessions.find_one({"_id": token_hash, "expires_at": {"$gt": now}})
        if not d:
            return None
        return Session(d["_id"], d["user_id"], d["device_id"], d["created_at"], d["expires_at"])

    async def delete_session(self, token_hash: str) -> None:
        await self._db.sessions.delete_one({"_id": token_hash})

    async def delete_user_sessions(self, user_id: str) -> int:
        res = await self._db.sessions.delete_many({"user_id": user_id})
        return int(res.deleted_count)

    async def delete_device_sessions(self, user_id: str, device_id: str) -> int:
        res = await self._db.sessions.delete_many({"user_id": user_id, "device_id": device_id})
        return int(res.deleted_count)

    async def record_login_failure(self, key: str, now: float, window: float) -> int:
        d = await self._db.login_failures.find_one_and_update(
            {"_id": key, "start": {"$gt": now - window}},
            {"$inc": {"count": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if d:
            return int(d["count"])
        await self._db.login_failures.replace_one(
            {"_id": key}, {"_id": key, "count": 1, "start": now}, upsert=True
        )
        return 1

    async def login_failures(self, key: str, now: float, window: float) -> int:
        d = await self._db.login_failures.find_one({"_id": key, "start": {"$gt": now - window}})
        return int(d["count"]) if d else 0

    async def clear_login_failures(self, key: str) -> None:
        await self._db.login_failures.delete_one({"_id": key})


def _conversation(d: Mapping[str, Any]) -> Conversation:
    return Conversation(
        id=d["_id"],
        beneficiary_id=d["beneficiary_id"],
        counsellor_id=d["counsellor_id"],
        structure_id=d.get("structure_id"),
        last_seq=d.get("last_seq", 0),
        last_at=d.get("last_at", 0.0),
        # bool(): the embedded engine (SQLite) hands booleans back as 0/1.
        flagged=bool(d.get("flagged", False)),
        epoch=d.get("epoch", 0),
        created_at=d.get("created_at", 0.0),
        previous_counsellor_id=d.get("previous_counsellor_id"),
        temporary_until=d.get("temporary_until"),
        rotation_required=bool(d.get("rotation_required", False)),
    )


def _message(d: Mapping[str, Any]) -> StoredMessage:
    return StoredMessage(
        conversation_id=d["conversation_id"],
        seq=d["seq"],
        client_id=d["client_id"],
        sender_id=d["sender_id"],
        device_id=d["device_id"],
        msg_type=d["msg_type"],
        body=bytes(d["body"]),
        meta=dict(d.get("meta") or {}),
        epoch=d.get("epoch", 0),
        nonce=bytes(d.get("nonce", b"")),
        sig=bytes(d.get("sig", b"")),
        created_at=d["created_at"],
    )


class _GroupCommit:
    """Batches concurrent single-document inserts into unordered ``insert_many`` calls.

    ``insert(doc)`` returns when that document is durably written, or raises
    what a lone ``insert_one`` would have raised for it (``DuplicateKeyError``
    for its own unique-index conflict; the batch's error if the whole write
    failed). Documents of one batch do not depend on each other's success.
    """

    MAX_BATCH = 256

    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self._collection = collection
        self._queue: list[tuple[Doc, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, doc: Doc) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((doc, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.MAX_BATCH], self._queue[self.MAX_BATCH :]
            try:
                await self._collection.insert_many([d for d, _ in batch], ordered=False)
            except BulkWriteError as exc:
                failed = {e["index"]: e for e in exc.details.get("writeErrors", [])}
                # Written but not confirmed by a majority (or the journal): not durable, so
                # not acknowledged. A resend finds the document by its client id.
                unconfirmed = exc.details.get("writeConcernErrors") or []
                for i, (_, fut) in enumerate(batch):
                    err = failed.get(i)
                    if fut.done():
                        continue
                    if err is None and unconfirmed:
                        wce = unconfirmed[0]
                        fut.set_exception(
                            WriteConcernError(wce.get("errmsg", ""), wce.get("code"), wce)
                        )
                    elif err is None:
                        fut.set_result(None)
                    elif err.get("code") == 11000:
                        fut.set_exception(DuplicateKeyError(err.get("errmsg", ""), 11000, err))
                    else:
                        fut.set_exception(OperationFailure(err.get("errmsg", ""), err.get("code")))
                continue
            except BaseException as exc:  # the whole batch failed: every sender hears it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(
                            exc if isinstance(exc, PyMongoError) else PyMongoError(str(exc))
                        )
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)


class MongoMessageStore:
    """``MessageStore`` on MongoDB.

    ``seq`` is allocated by inserting with a unique ``(conversation_id, seq)``
    index: a seq is only ever taken by a successful insert, so there are no
    holes; a concurrent writer in another process loses the race with a
    duplicate-key error and retries with the next value.

    Group commit: inserts from concurrent senders (one per conversation at a
    time, under that conversation's lock) are gathered by ``_GroupCommit``
    into one unordered ``insert_many``, so one durable (majority, journaled)
    round trip acknowledges many messages.
    """

    _MAX_ATTEMPTS = 50

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db
        self._messages = db.get_collection("messages", write_concern=DURABLE)
        self._next: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._commit = _GroupCommit(self._messages)

    async def add_conversation(self, conversation: Conversation) -> None:
        c = conversation
        try:
            await self._db.conversations.insert_one(
                {
                    "_id": c.id,
                    "beneficiary_id": c.beneficiary_id,
                    "counsellor_id": c.counsellor_id,
                    "structure_id": c.structure_id,
                    "last_seq": c.last_seq,
                    "last_at": c.last_at,
                    "flagged": c.flagged,
                    "epoch": c.epoch,
                    "created_at": c.created_at,
                    "previous_counsellor_id": c.previous_counsellor_id,
                    "temporary_until": c.temporary_until,
                    "rotation_required": c.rotation_required,
                }
            )
        except DuplicateKeyError as exc:
            raise Conflict("this beneficiary already has a conversation") from exc

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        d = await self._db.conversations.find_one({"_id": conversation_id})
        return _conversation(d) if d else None

    async def conversations_for(self, user_id: str) -> list[Conversation]:
        # Two indexed finds, not one $or: the embedded engine scans the whole
        # collection for an $or (73 ms at 5,000 conversations against 1.8 ms).
        out = {d["_id"]: d async for d in self._db.conversations.find({"counsellor_id": user_id})}
        async for d in self._db.conversations.find({"beneficiary_id": user_id}):
            out.setdefault(d["_id"], d)
        return [_conversation(d) for d in out.values()]

    async def conversations_previously_with(self, user_id: str) -> list[Conversation]:
        cursor = self._db.conversations.find({"previous_counsellor_id": user_id})
        return [_conversation(d) async for d in cursor]

    async def conversations_in_structure(self, structure_id: str) -> list[Conversation]:
        cursor = self._db.conversations.find({"structure_id": structure_id})
        return [_conversation(d) async for d in cursor]

    async def expired_temporary(self, now: float) -> list[Conversation]:
        cursor = self._db.conversations.find({"temporary_until": {"$ne": None, "$lte": now}})
        return [_conversation(d) async for d in cursor]

    async def set_flag(self, conversation_id: str, flagged: bool) -> None:
        await self._db.conversations.update_one(
            {"_id": conversation_id}, {"$set": {"flagged": flagged}}
        )

    async def set_counsellor(
        self,
        conversation_id: str,
        counsellor_id: str,
        previous_counsellor_id: str | None,
        temporary_until: float | None,
    ) -> Conversation | None:
        d = await self._db.conversations.find_one_and_update(
            {"_id": conversation_id},
            {
                "$set": {
                    "counsellor_id": counsellor_id,
                    "previous_counsellor_id": previous_counsellor_id,
                    "temporary_until": temporary_until,
                    "rotation_required": True,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return _conversation(d) if d else None

    async def _existing(self, m: NewMessage) -> StoredMessage | None:
        d = await self._messages.find_one(
            {
                "conversation_id": m.conversation_id,
                "sender_id": m.sender_id,
                "client_id": m.client_id,
            }
        )
        return _message(d) if d else None

    async def append(self, message: NewMessage, now: float) -> tuple[StoredMessage, bool]:
        m = message
        lock = self._locks.setdefault(m.conversation_id, asyncio.Lock())
        try:
            async with lock:
                return await self._append_locked(m, now)
        except PyMongoError as exc:
            self._next.pop(m.conversation_id, None)
            raise StoreError(f"append failed: {type(exc).__name__}") from exc
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(m.conversation_id, None)

    async def _append_locked(self, m: NewMessage, now: float) -> tuple[StoredMessage, bool]:
        seq = self._next.get(m.conversation_id)
        if seq is None:
            seq = await self.last_seq(m.conversation_id) + 1
        for _ in range(self._MAX_ATTEMPTS):
            doc = {
                "conversation_id": m.conversation_id,
                "seq": seq,
                "client_id": m.client_id,
                "sender_id": m.sender_id,
                "device_id": m.device_id,
                "msg_type": m.msg_type,
                "body": m.body,
                "meta": m.meta,
                "epoch": m.epoch,
                "nonce": m.nonce,
                "sig": m.sig,
                "created_at": now,
            }
            if m.nonce:
                # One string field, so one unique index refuses a nonce reused by a device.
                doc["nonce_key"] = m.device_id + ":" + m.nonce.hex()
            try:
                await self._commit.insert(doc)
            except DuplicateKeyError:
                existing = await self._existing(m)
                if existing is not None:
                    self._next.pop(m.conversation_id, None)
                    await self._touch(existing.conversation_id, existing.seq, existing.created_at)
                    return existing, False
                if m.nonce and await self._messages.find_one(
                    {"nonce_key": doc.get("nonce_key")}, projection={"_id": 1}
                ):
                    raise NonceReused("this device already used this nonce") from None
                seq = await self.last_seq(m.conversation_id) + 1
                continue
            self._next[m.conversation_id] = seq + 1
            await self._touch(m.conversation_id, seq, now)
            return _message(doc), True
        raise StoreError("could not allocate a seq: too much contention")

    async def _touch(self, conversation_id: str, seq: int, at: float) -> None:
        await self._db.conversations.update_one(
            {"_id": conversation_id}, {"$max": {"last_seq": seq, "last_at": at}}
        )

    async def messages_after(
        self, conversation_id: str, after_seq: int, limit: int
    ) -> list[StoredMessage]:
        # seq has no holes, so the range (after, after + limit] is exactly the page:
        # no sort for the engine to do, however long the history.
        cursor = self._messages.find(
            {
                "conversation_id": conversation_id,
                "seq": {"$gt": after_seq, "$lte": after_seq + limit},
            }
        )
        out = [_message(d) async for d in cursor]
        out.sort(key=lambda m: m.seq)
        return out

    async def messages_before(
        self, conversation_id: str, before_seq: int, limit: int
    ) -> list[StoredMessage]:
        cursor = (
            self._messages.find({"conversation_id": conversation_id, "seq": {"$lt": before_seq}})
            .sort("seq", DESCENDING)
            .limit(limit)
        )
        out = [_message(d) async for d in cursor]
        out.reverse()
        return out

    async def last_seq(self, conversation_id: str) -> int:
        d = await self._messages.find_one(
            {"conversation_id": conversation_id}, sort=[("seq", DESCENDING)], projection={"seq": 1}
        )
        return int(d["seq"]) if d else 0

    async def set_read(self, conversation_id: str, user_id: str, seq: int) -> int:
        key = f"{conversation_id}:{user_id}"
        d = await self._db.reads.find_one_and_update(
            {"_id": key},
            {
                "$max": {"seq": seq},
                "$set": {"conversation_id": conversation_id, "user_id": user_id},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int(d["seq"]) if d else seq

    async def read_markers(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {c: {} for c in conversation_ids}
        cursor = self._db.reads.find({"conversation_id": {"$in": list(conversation_ids)}})
        async for d in cursor:
            out.setdefault(d["conversation_id"], {})[d["user_id"]] = int(d["seq"])
        return out


class MongoPresenceStore:
    """``PresenceStore`` on MongoDB: one counter per (user, process) plus process liveness.

    Counters are separate documents (no dotted paths), so every update is a
    plain ``$inc`` that behaves the same on MongoDB and the embedded engine.
    """

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db

    async def connected(self, user_id: str, process_id: str, delta: int, now: float) -> None:
        await self._db.presence.update_one(
            {"_id": f"{user_id}:{process_id}"},
            {"$inc": {"count": delta}, "$set": {"user_id": user_id, "process_id": process_id}},
            upsert=True,
        )
        if delta < 0:
            await self._db.last_seen.replace_one(
                {"_id": user_id}, {"_id": user_id, "at": now}, upsert=True
            )

    async def process_alive(self, process_id: str, until: float) -> None:
        await self._db.processes.replace_one(
            {"_id": process_id}, {"_id": process_id, "until": until}, upsert=True
        )

    async def presence(self, user_ids: Sequence[str], now: float) -> dict[str, Presence]:
        alive = {d["_id"] async for d in self._db.processes.find({"until": {"$gt": now}})}
        ids = list(user_ids)
        online = set()
        async for d in self._db.presence.find({"user_id": {"$in": ids}, "count": {"$gt": 0}}):
            if d["process_id"] in alive:
                online.add(d["user_id"])
        seen = {d["_id"]: d["at"] async for d in self._db.last_seen.find({"_id": {"$in": ids}})}
        out = {u: Presence(u, u in online, seen.get(u)) for u in ids}
        return out
