"""MongoDB adapters (PyMongo's asyncio API), for a real server or the embedded engine.

Only this module imports ``pymongo``. Messages are written with majority write
concern and journaling, so an acknowledged message survives a crash.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pymongo
from bson.errors import InvalidDocument
from pymongo import ASCENDING, AsyncMongoClient, InsertOne, ReplaceOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
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
from chat_server.storage.base import (
    Conflict,
    NonceReused,
    StoreError,
    StoreOutcomeUnknown,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from chat_server.storage.mongo_blobs import GridFSBlobStore
    from chat_server.storage.mongo_broadcast import MongoBroadcastStore
    from chat_server.storage.mongo_keys import MongoKeyStore
    from chat_server.storage.mongo_lifecycle import MongoLifecycleStore
    from chat_server.storage.mongo_push import MongoPushStore
    from chat_server.storage.mongo_structure_keys import MongoStructureKeyStore

log = logging.getLogger(__name__)

Doc = dict[str, Any]
DURABLE = WriteConcern(w="majority", j=True)
PING_TIMEOUT = 2.0
# The share of the store timeout (STORE_TIMEOUT_SECONDS) an operation waits for a store it
# cannot reach: a send during an outage is refused (store_unavailable) in about this time.
SELECTION_SHARE = 0.75

C = TypeVar("C", bound=type)


def translate_errors(cls: C) -> C:
    """Class decorator: a driver error in a public coroutine method raises ``StoreUnavailable``.

    So that callers above the adapters (the transport, the HTTP layer) see the
    port's own errors and never ``pymongo``'s. Errors a method already turns
    into ``StoreError`` pass through unchanged.
    """
    for name, fn in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(fn):
            setattr(cls, name, _translated(fn))
    return cls


def _translated(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except PyMongoError as exc:
            raise StoreUnavailable(f"{fn.__name__}: {type(exc).__name__}") from exc

    return wrapper


class MongoDatabase:
    """Owns the client, creates indexes, and hands out the adapters."""

    def __init__(
        self, url: str, db_name: str, *, direct: bool = False, timeout: float = 2.0
    ) -> None:
        # An operation that cannot reach the store fails before the caller's own
        # deadline (``timeout``), so that it can say nothing was written.
        ms = int(timeout * SELECTION_SHARE * 1000)
        kwargs: dict[str, Any] = {
            "tz_aware": False,
            "serverSelectionTimeoutMS": ms,
            "connectTimeoutMS": ms,
            # A store that accepts but never answers (frozen, partitioned) must not hold
            # reads forever: generous, so that a busy store is never cut off.
            "socketTimeoutMS": int(max(10.0, 5 * timeout) * 1000),
        }
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
        # Redundant on MongoDB (the prefix above serves), needed by the embedded engine:
        # it treats an equality as indexed only if an index is named after that field
        # alone; otherwise every query on a conversation scans all messages.
        await db.messages.create_index([("conversation_id", ASCENDING)])
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
        await db.login_failures.create_index([("start", ASCENDING)])
        await self.keys().create_indexes()
        await self.lifecycle().create_indexes()
        await self.push().create_indexes()
        await self.structure_keys().create_indexes()
        await self.blobs().create_indexes()
        await self.broadcasts().create_indexes()

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

    def structure_keys(self) -> MongoStructureKeyStore:
        """The structure-key store on this database."""
        from chat_server.storage.mongo_structure_keys import MongoStructureKeyStore

        return MongoStructureKeyStore(self.db)

    def lifecycle(self) -> MongoLifecycleStore:
        """The lifecycle store on this database."""
        from chat_server.storage.mongo_lifecycle import MongoLifecycleStore

        return MongoLifecycleStore(self.db)

    def push(self) -> MongoPushStore:
        """The push store (subscriptions, outbox) on this database."""
        from chat_server.storage.mongo_push import MongoPushStore

        return MongoPushStore(self.db)
    def broadcasts(self) -> MongoBroadcastStore:
        """The broadcast store (lists, records) on this database."""
        from chat_server.storage.mongo_broadcast import MongoBroadcastStore

        return MongoBroadcastStore(self.db)

    def blobs(self) -> GridFSBlobStore:
        """The attachment blob store on this database (GridFS)."""
        from chat_server.storage.mongo_blobs import GridFSBlobStore

        return GridFSBlobStore(self.db)

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
        active_at=d.get("active_at", d.get("created_at", 0.0)),
        notice_at=d.get("notice_at"),
        erasing=d.get("erasing"),
    )


@translate_errors
class MongoAccountStore:
    """``AccountStore`` on MongoDB.

    Reads by id (users, sessions) from concurrent connections are batched
    into one ``$in`` find per round trip (``_finder``): a reconnect storm
    costs the store batches, not one query per client.
    """

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db
        self._users = _finder(db.users, "_id")
        self._sessions = _finder(db.sessions, "_id")

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
            "active_at": user.active_at or user.created_at,
        }
        try:
            await self._db.users.insert_one(doc)
        except DuplicateKeyError as exc:
            raise Conflict(f"login {user.login!r} is taken") from exc
        except PyMongoError as exc:
            raise StoreError(str(exc)) from exc

    async def get_user(self, user_id: str) -> User | None:
        found = await self._users.submit((user_id,))
        return _user(found[0]) if found else None

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, User]:
        if not user_ids:
            return {}
        return {d["_id"]: _user(d) for d in await self._users.submit(tuple(user_ids))}

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

    async def claim_first_device(self, user_id: str, device_id: str, *, claim: bool = True) -> bool:
        if claim:
            claimed = await self._db.users.find_one_and_update(
                {"_id": user_id, "first_device": {"$exists": False}},
                {"$set": {"first_device": device_id}},
                projection={"_id": 1},
            )
            if claimed is not None:
                return True
        d = await self._db.users.find_one({"_id": user_id}, projection={"first_device": 1})
        return d is not None and d.get("first_device") == device_id

    async def set_activation_box(self, user_id: str, box: dict[str, Any] | None) -> None:
        change = {"$set": {"activation_box": box}} if box else {"$unset": {"activation_box": ""}}
        await self._db.users.update_one({"_id": user_id}, change)

    async def activation_box(self, user_id: str) -> dict[str, Any] | None:
        d = await self._db.users.find_one({"_id": user_id}, projection={"activation_box": 1})
        box = d.get("activation_box") if d else None
        return dict(box) if isinstance(box, dict) else None

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
        found = await self._sessions.submit((token_hash,))
        if not found or not found[0]["expires_at"] > now:
            return None
        d = found[0]
        return Session(d["_id"], d["user_id"], d["device_id"], d["created_at"], d["expires_at"])

    async def delete_session(self, token_hash: str) -> None:
        await self._db.sessions.delete_one({"_id": token_hash})

    async def delete_user_sessions(self, user_id: str) -> int:
        res = await self._db.sessions.delete_many({"user_id": user_id})
        return int(res.deleted_count)

    async def delete_device_sessions(self, user_id: str, device_id: str) -> int:
        res = await self._db.sessions.delete_many({"user_id": user_id, "device_id": device_id})
        return int(res.deleted_count)

    async def record_login_failure(
        self, key: str, now: float, window: float, delta: int = 1
    ) -> int:
        failures = self._db.login_failures
        update: Doc = {"$inc": {"count": delta}}
        if delta > 0:
            update["$max"] = {"last": now}
        for _ in range(5):  # bounded: each round another writer changed the window first
            d = await failures.find_one_and_update(
                {"_id": key, "start": {"$gt": now - window}},
                update,
                return_document=ReturnDocument.AFTER,
            )
            if d:
                return int(d["count"])
            # No current window: start one, only where the old one (if any) has passed.
            # If another writer started it meanwhile, the upsert's insert collides on _id
            # and the $inc above counts this attempt in that window instead.
            try:
                await failures.replace_one(
                    {"_id": key, "start": {"$lte": now - window}},
                    {"_id": key, "count": delta, "start": now, "last": now},
                    upsert=True,
                )
            except DuplicateKeyError:
                continue
            return delta
        raise StoreUnavailable("could not count the attempt: too much contention")

    async def login_failures(self, key: str, now: float, window: float) -> int:
        d = await self._db.login_failures.find_one({"_id": key, "start": {"$gt": now - window}})
        return int(d["count"]) if d else 0

    async def last_login_failure(self, key: str, now: float, window: float) -> float | None:
        d = await self._db.login_failures.find_one({"_id": key, "start": {"$gt": now - window}})
        return float(d["last"] if "last" in d else d["start"]) if d else None

    async def clear_login_failures(self, key: str) -> None:
        await self._db.login_failures.delete_one({"_id": key})

    async def purge_login_failures(self, now: float, window: float) -> int:
        res = await self._db.login_failures.delete_many({"start": {"$lte": now - window}})
        return int(res.deleted_count)


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
        archived_at=d.get("archived_at"),
        archived_by=d.get("archived_by"),
        archive_reason=d.get("archive_reason"),
        deleted_at=d.get("deleted_at"),
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
        version=d.get("v", 1),
    )


T = TypeVar("T")
R = TypeVar("R")


class _Batcher(Generic[T, R]):
    """Gathers concurrent single requests into one round trip: ``run(items)``.

    ``submit(item)`` returns ``item``'s result, or raises ``item``'s own
    exception: ``run`` returns one result or exception per item, in order.
    If ``run`` itself raises, every item of the batch gets that error (as a
    ``PyMongoError``). While a batch is in flight the next requests queue, so
    the busier the store, the bigger the batches; an idle store sees batches
    of one and no added delay.
    """

    MAX_BATCH = 256

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]) -> None:
        self._run = run
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.MAX_BATCH], self._queue[self.MAX_BATCH :]
            try:
                results = await self._run([item for item, _ in batch])
            except Exception as exc:  # the whole batch failed: every caller hears it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(
                            exc if isinstance(exc, PyMongoError) else PyMongoError(str(exc))
                        )
                continue
            except BaseException:  # cancelled (shutdown): nobody may wait forever
                pending, self._queue = batch + self._queue, []
                for _, fut in pending:
                    if not fut.done():
                        fut.set_exception(PyMongoError("the store is shutting down"))
                raise
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)


def _bulk_errors(exc: BulkWriteError, size: int) -> list[BaseException | None]:
    """Per-operation errors of an unordered bulk write, as a lone write would raise them.

    Written but not confirmed by a majority (or the journal) counts as an error:
    not durable, so not acknowledged (a resend finds the document by its client id).
    """
    failed = {e["index"]: e for e in exc.details.get("writeErrors", [])}
    unconfirmed = exc.details.get("writeConcernErrors") or []
    out: list[BaseException | None] = []
    for i in range(size):
        err = failed.get(i)
        if err is None and unconfirmed:
            wce = unconfirmed[0]
            out.append(WriteConcernError(wce.get("errmsg", ""), wce.get("code"), wce))
        elif err is None:
            out.append(None)
        elif err.get("code") == 11000:
            out.append(DuplicateKeyError(err.get("errmsg", ""), 11000, err))
        else:
            out.append(OperationFailure(err.get("errmsg", ""), err.get("code")))
    return out


Write = InsertOne[Doc] | UpdateOne | ReplaceOne[Doc]


def _writer(collection: AsyncCollection[Doc]) -> _Batcher[Write, None]:
    """Concurrent single-document writes as one unordered ``bulk_write``.

    Writes of one batch do not depend on each other's success; each caller
    gets what its write alone would have raised (``DuplicateKeyError`` for its
    own unique-index conflict). Only for writes whose order does not matter:
    inserts (group commit), ``$max``, ``$inc``, a replacement where the latest wins.
    """

    async def run(ops: list[Write]) -> Sequence[BaseException | None]:
        try:
            await collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            return _bulk_errors(exc, len(ops))
        except (InvalidDocument, OverflowError) as exc:
            # The driver cannot encode a document: nothing was sent. One bad document
            # must not fail the others' writes: write each alone, the bad one fails alone.
            if len(ops) == 1:
                return [OperationFailure(f"the document cannot be stored: {exc}")]
            alone = await asyncio.gather(*(run([op]) for op in ops))
            return [r for results in alone for r in results]
        return [None] * len(ops)

    return _Batcher(run)


def _finder(collection: AsyncCollection[Doc], field: str) -> _Batcher[tuple[str, ...], list[Doc]]:
    """Concurrent ``find({field: {"$in": keys}})`` as one find over all their keys.

    Each caller gets the documents whose ``field`` is one of its own keys.
    The embedded engine answers ``$in`` on a field other than ``_id`` by
    scanning the collection: use this on ``_id`` or on small collections
    (users, sessions, conversations, read markers, presence), never on messages.
    """

    async def run(requests: list[tuple[str, ...]]) -> Sequence[list[Doc]]:
        keys = list({k for r in requests for k in r})
        found: dict[str, list[Doc]] = {}
        async for d in collection.find({field: {"$in": keys}}):
            found.setdefault(d[field], []).append(d)
        return [[d for k in dict.fromkeys(r) for d in found.get(k, ())] for r in requests]

    return _Batcher(run)


_SEQ_INDEX = re.compile(r"conversation_id_(?:1_)?seq(?:_1)?\b")


def _seq_taken(exc: DuplicateKeyError) -> bool:
    """Whether the error names the unique ``(conversation_id, seq)`` index.

    MongoDB gives the index's ``keyPattern``; the embedded engine only names
    the index in its message (``idx_messages_conversation_id_seq``).
    """
    details = exc.details or {}
    pattern = details.get("keyPattern")
    if isinstance(pattern, Mapping):
        return set(pattern) == {"conversation_id", "seq"}
    return bool(_SEQ_INDEX.search(str(details.get("errmsg", ""))))


Range = tuple[str, int, int]  # conversation, after seq, last seq wanted


def _pager(collection: AsyncCollection[Doc], span: int = 512) -> _Batcher[Range, list[Doc]]:
    """Concurrent seq-range reads ``(conversation, after, upto]`` as few finds as possible.

    Ranges of one conversation that lie within ``span`` of each other (the two
    members resuming, a resume and a gap fill) are read by one ``find`` over
    the union of their ranges; the finds of a batch run concurrently. A find
    names one conversation (an equality: ``$in`` on a field other than ``_id``
    scans the whole collection in the embedded engine). Each caller gets its
    own range, sorted by seq.
    """

    async def run(ranges: list[Range]) -> Sequence[list[Doc]]:
        # Per conversation, sorted by start; a group grows while it stays within ``span``.
        groups: list[tuple[str, int, int, list[int]]] = []  # (conversation, lo, hi, members)
        for i in sorted(range(len(ranges)), key=lambda i: ranges[i][:2]):
            conv, after, upto = ranges[i]
            last = groups[-1] if groups else None
            if (
                last is not None
                and last[0] == conv
                and max(last[2], upto) - last[1] <= max(span, upto - after)
            ):
                last[3].append(i)
                groups[-1] = (conv, last[1], max(last[2], upto), last[3])
            else:
                groups.append((conv, after, upto, [i]))

        async def read(conv: str, lo: int, hi: int) -> list[Doc]:
            query = {"conversation_id": conv, "seq": {"$gt": lo, "$lte": hi}}
            return [d async for d in collection.find(query)]

        found = await asyncio.gather(*(read(c, lo, hi) for c, lo, hi, _ in groups))
        out: list[list[Doc]] = [[] for _ in ranges]
        for (_, _, _, members), docs in zip(groups, found, strict=True):
            for i in members:
                _, after, upto = ranges[i]
                out[i] = sorted(
                    (d for d in docs if after < d["seq"] <= upto), key=lambda d: int(d["seq"])
                )
        return out

    return _Batcher(run)


@translate_errors
class MongoMessageStore:
    """``MessageStore`` on MongoDB.

    ``seq`` is allocated by inserting with a unique ``(conversation_id, seq)``
    index: a seq is only ever taken by a successful insert, so there are no
    holes; a concurrent writer in another process loses the race with a
    duplicate-key error and retries with the next value.

    Group commit: inserts from concurrent senders (one per conversation at a
    time, under that conversation's lock) are gathered into one unordered
    ``bulk_write``, so one durable (majority, journaled) round trip
    acknowledges many messages. The other per-message round trips are batched
    the same way (``_Batcher``): reading the conversation for the membership
    check, moving its ``last_seq``/``last_at``, and moving the sender's read
    marker. Each is still awaited before the sender's ack, so nothing the ack
    promises is behind; a busy store just answers many senders per round trip.
    """

    _MAX_ATTEMPTS = 50

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db
        self._messages = db.get_collection("messages", write_concern=DURABLE)
        self._next: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._insert = _writer(self._messages)
        self._by_id = _finder(db.conversations, "_id")
        self._by_counsellor = _finder(db.conversations, "counsellor_id")
        self._by_beneficiary = _finder(db.conversations, "beneficiary_id")
        self._reads = _finder(db.reads, "conversation_id")
        self._pages = _pager(self._messages)
        self._update_conversation = _writer(db.conversations)
        self._update_read = _writer(db.reads)

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
                    "archived_at": c.archived_at,
                    "archived_by": c.archived_by,
                    "archive_reason": c.archive_reason,
                    "deleted_at": c.deleted_at,
                }
            )
        except DuplicateKeyError as exc:
            raise Conflict("this beneficiary already has a conversation") from exc

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        found = await self._by_id.submit((conversation_id,))
        return _conversation(found[0]) if found else None

    async def conversations_for(self, user_id: str) -> list[Conversation]:
        # Two indexed finds, not one $or: the embedded engine scans the whole
        # collection for an $or (73 ms at 5,000 conversations against 1.8 ms).
        mine, theirs = await asyncio.gather(
            self._by_counsellor.submit((user_id,)), self._by_beneficiary.submit((user_id,))
        )
        out = {d["_id"]: d for d in mine}
        for d in theirs:
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
        sent = [False]  # an insert is out and its outcome unknown (see _append_locked)
        try:
            async with lock:
                stored, created = await self._append_locked(m, now, sent)
        except PyMongoError as exc:
            self._next.pop(m.conversation_id, None)
            unknown = sent[0] and not isinstance(exc, ServerSelectionTimeoutError)
            error = StoreOutcomeUnknown if unknown else StoreUnavailable
            raise error(f"append failed: {type(exc).__name__}") from exc
        except BaseException:
            # Cancelled (a caller's deadline): an insert may still land, so the next
            # seq must be read from the store again.
            self._next.pop(m.conversation_id, None)
            raise
        finally:
            # Only this sender's lock, and only if nobody holds or awaits it: by the
            # time _touch returns, another sender may have replaced it.
            idle = not lock.locked() and not getattr(lock, "_waiters", None)
            if idle and self._locks.get(m.conversation_id) is lock:
                del self._locks[m.conversation_id]
        # Outside the lock: $max does not care about order, and the next sender of this
        # conversation need not wait for it. The message is stored: a failure here must
        # not fail the send (last_seq also reads past the conversation's value).
        try:
            # A quiet event leaves last_at alone ($max with 0).
            at = 0.0 if m.quiet else stored.created_at
            await self._touch(stored.conversation_id, stored.seq, at)
        except PyMongoError as exc:
            log.warning(
                "conversation position not updated",
                extra={"conversation_id": m.conversation_id, "error": type(exc).__name__},
            )
        return stored, created

    async def _append_locked(
        self, m: NewMessage, now: float, sent: list[bool]
    ) -> tuple[StoredMessage, bool]:
        seq = self._next.get(m.conversation_id)
        if seq is None:
            seq = await self.last_seq(m.conversation_id) + 1
        taken = 0  # seqs found taken in a row
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
                "v": m.version,
            }
            if m.nonce:
                # One string field, so one unique index refuses a nonce reused by a device.
                doc["nonce_key"] = m.device_id + ":" + m.nonce.hex()
            sent[0] = True
            try:
                await self._insert.submit(InsertOne(doc))
            except DuplicateKeyError as exc:
                sent[0] = False  # refused: not written
                if _seq_taken(exc) and taken < 2:
                    # Another process wrote this seq: try the next one straight away (if the
                    # message is also a resend or reuses a nonce, that insert will say so).
                    taken += 1
                    seq += 1
                    continue
                taken = 0
                existing = await self._existing(m)
                if existing is not None:
                    self._next.pop(m.conversation_id, None)
                    return existing, False
                if m.nonce and await self._messages.find_one(
                    {"nonce_key": doc.get("nonce_key")}, projection={"_id": 1}
                ):
                    raise NonceReused("this device already used this nonce") from None
                seq = await self.last_seq(m.conversation_id) + 1
                continue
            self._next[m.conversation_id] = seq + 1
            return _message(doc), True
        raise StoreError("could not allocate a seq: too much contention")

    async def _touch(self, conversation_id: str, seq: int, at: float) -> None:
        await self._update_conversation.submit(
            UpdateOne({"_id": conversation_id}, {"$max": {"last_seq": seq, "last_at": at}})
        )

    async def messages_after(
        self, conversation_id: str, after_seq: int, limit: int
    ) -> list[StoredMessage]:
        # seq has no holes, so the range (after, after + limit] is exactly the page:
        # no sort for the engine to do, however long the history.
        page = await self._pages.submit((conversation_id, after_seq, after_seq + limit))
        return [_message(d) for d in page]

    async def messages_before(
        self, conversation_id: str, before_seq: int, limit: int
    ) -> list[StoredMessage]:
        # seq has no holes: the page is the range (top - limit, top], no sort needed.
        top = min(before_seq - 1, await self.last_seq(conversation_id))
        if top <= 0 or limit <= 0:
            return []
        start = max(0, top - limit)
        return await self.messages_after(conversation_id, start, top - start)

    async def message_by_client_id(
        self, conversation_id: str, sender_id: str, client_id: str
    ) -> StoredMessage | None:
        # The unique (conversation_id, sender_id, client_id) index answers it.
        d = await self._messages.find_one(
            {"conversation_id": conversation_id, "sender_id": sender_id, "client_id": client_id}
        )
        return _message(d) if d else None

    async def messages_by_meta(
        self, conversation_id: str, key: str, value: str | int, limit: int
    ) -> list[StoredMessage]:
        if limit <= 0:
            return []
        # An equality on conversation_id (indexed) narrows it to one conversation.
        query = {"conversation_id": conversation_id, f"meta.{key}": value}
        docs = [d async for d in self._messages.find(query)]
        docs.sort(key=lambda d: int(d["seq"]))
        return [_message(d) for d in docs[:limit]]

    async def messages_of_types(
        self, conversation_id: str, msg_types: Sequence[str], limit: int
    ) -> list[StoredMessage]:
        if limit <= 0:
            return []
        query = {"conversation_id": conversation_id, "msg_type": {"$in": list(msg_types)}}
        docs = [d async for d in self._messages.find(query)]
        docs.sort(key=lambda d: int(d["seq"]))
        return [_message(d) for d in docs[-limit:]]

    async def count_types_after(
        self, conversation_id: str, after_seq: int, msg_types: Sequence[str]
    ) -> int:
        query = {
            "conversation_id": conversation_id,
            "seq": {"$gt": after_seq},
            "msg_type": {"$in": list(msg_types)},
        }
        # A find, not count_documents: the embedded engine runs a count with $in as a
        # slow aggregation fallback; this reads only the matching ids of the range.
        return len([d async for d in self._messages.find(query, projection={"_id": 1})])

    async def last_seq(self, conversation_id: str) -> int:
        # Not a sort on seq (the embedded engine sorts a whole history in Python): the
        # conversation's last_seq, which is never ahead (a $max of stored seqs), then
        # whatever was stored past it and not yet recorded there.
        found = await self._by_id.submit((conversation_id,))
        base = int(found[0].get("last_seq", 0)) if found else 0
        cursor = self._messages.find(
            {"conversation_id": conversation_id, "seq": {"$gt": base}}, projection={"seq": 1}
        )
        return max([base, *[int(d["seq"]) async for d in cursor]])

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

    async def advance_read(self, conversation_id: str, user_id: str, seq: int) -> None:
        await self._update_read.submit(
            UpdateOne(
                {"_id": f"{conversation_id}:{user_id}"},
                {
                    "$max": {"seq": seq},
                    "$set": {"conversation_id": conversation_id, "user_id": user_id},
                },
                upsert=True,
            )
        )

    async def read_markers(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {c: {} for c in conversation_ids}
        if not conversation_ids:
            return out
        for d in await self._reads.submit(tuple(conversation_ids)):
            out.setdefault(d["conversation_id"], {})[d["user_id"]] = int(d["seq"])
        return out


@translate_errors
class MongoPresenceStore:
    """``PresenceStore`` on MongoDB: one counter per (user, process) plus process liveness.

    Counters are separate documents (no dotted paths), so every update is a
    plain ``$inc`` that behaves the same on MongoDB and the embedded engine.
    Concurrent connections' reads and counter updates are batched (``_Batcher``).
    """

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db
        self._counters = _finder(db.presence, "user_id")
        self._seen = _finder(db.last_seen, "_id")
        self._count = _writer(db.presence)
        self._last_seen = _writer(db.last_seen)

        async def alive(nows: list[float]) -> list[set[str]]:
            found = [d async for d in db.processes.find({"until": {"$gt": min(nows)}})]
            return [{d["_id"] for d in found if d["until"] > now} for now in nows]

        self._alive = _Batcher(alive)

    async def connected(self, user_id: str, process_id: str, delta: int, now: float) -> None:
        await self._count.submit(
            UpdateOne(
                {"_id": f"{user_id}:{process_id}"},
                {"$inc": {"count": delta}, "$set": {"user_id": user_id, "process_id": process_id}},
                upsert=True,
            )
        )
        if delta < 0:
            await self.seen(user_id, now)

    async def seen(self, user_id: str, at: float) -> None:
        # A replacement (with its _id, for the embedded engine): the engine's $set and $max
        # on an existing document round floats to 15 digits.
        await self._last_seen.submit(
            ReplaceOne({"_id": user_id}, {"_id": user_id, "at": at}, upsert=True)
        )

    async def process_alive(self, process_id: str, until: float) -> None:
        await self._db.processes.replace_one(
            {"_id": process_id}, {"_id": process_id, "until": until}, upsert=True
        )

    async def seen_at(self, user_ids: Sequence[str]) -> dict[str, float]:
        if not user_ids:
            return {}
        return {d["_id"]: d["at"] for d in await self._seen.submit(tuple(user_ids))}

    async def presence(self, user_ids: Sequence[str], now: float) -> dict[str, Presence]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        alive, counters, seen_docs = await asyncio.gather(
            self._alive.submit(now),
            self._counters.submit(tuple(ids)),
            self._seen.submit(tuple(ids)),
        )
        online = {d["user_id"] for d in counters if d["count"] > 0 and d["process_id"] in alive}
        seen = {d["_id"]: d["at"] for d in seen_docs}
        return {u: Presence(u, u in online, seen.get(u)) for u in ids}
