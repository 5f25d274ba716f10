"""In-memory adapters of every storage port, for benchmarks and tests.

NOT DURABLE: everything lives in this process's dictionaries and is gone when
the process stops. ``append`` "acknowledges" a message that no disk has seen,
so this store does not meet the durability contract of ``MessageStore`` and
must never be used for real conversations. Use it (``STORE=memory``) to measure
the server's own cost without a database, or in unit tests.

Each method runs to completion without awaiting, so on one event loop every
operation is atomic, which is what the contracts' uniqueness and
"at most once" rules need. The behaviour otherwise mirrors the MongoDB
adapters (``storage/mongo.py``, ``storage/mongo_keys.py``). Records handed
out are immutable dataclasses; mutable fields (``meta``, backups, audit
details) are copied on the way in and out so a caller cannot change what is
stored.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chat_server.rooms.models import (
    AuditRecord,
    Conversation,
    Device,
    EnvelopeRecord,
    EpochCommitment,
    KeyRequest,
    NewMessage,
    Presence,
    Role,
    Session,
    StoredMessage,
    Structure,
    User,
)
from chat_server.storage.base import Conflict, NonceReused
from chat_server.storage.blobs_memory import MemoryBlobStore
from chat_server.storage.structure_keys import MemoryStructureKeyStore
from chat_server.tools.broadcast import MemoryBroadcastStore
from notifications.store import MemoryPushStore

_CONVERSATION_FIELDS = tuple(f.name for f in dataclasses.fields(Conversation))
_set = object.__setattr__


def _with_last(c: Conversation, last_seq: int, last_at: float) -> Conversation:
    """``dataclasses.replace(c, last_seq=..., last_at=...)`` at a third of its cost (once
    per message: a copy field by field, without ``replace``'s keyword checks)."""
    new: Conversation = object.__new__(Conversation)
    for name in _CONVERSATION_FIELDS:
        _set(new, name, getattr(c, name))
    _set(new, "last_seq", last_seq)
    _set(new, "last_at", last_at)
    return new


@dataclass
class _Activation:
    user_id: str
    expires_at: float


@dataclass
class _Failures:
    count: int
    start: float
    last: float


@dataclass
class _Presence:
    procs: dict[str, int] = field(default_factory=dict)
    last_seen: float | None = None


@dataclass
class _Epoch:
    creator_device: str
    created_at: float
    envelopes: tuple[EnvelopeRecord, ...]
    commitment: EpochCommitment | None = None


@dataclass
class _State:
    """Everything one ``MemoryDatabase`` holds; shared by its adapters."""

    structures: dict[str, Structure] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    login_index: dict[str, str] = field(default_factory=dict)  # login.lower() -> user id
    activations: dict[str, _Activation] = field(default_factory=dict)  # code hash -> ...
    activation_of: dict[str, str] = field(default_factory=dict)  # user id -> code hash
    first_device: dict[str, str] = field(default_factory=dict)  # user id -> device id
    activation_boxes: dict[str, dict[str, Any]] = field(default_factory=dict)  # user id -> box
    sessions: dict[str, Session] = field(default_factory=dict)
    user_sessions: dict[str, set[str]] = field(default_factory=dict)
    failures: dict[str, _Failures] = field(default_factory=dict)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    by_beneficiary: dict[str, str] = field(default_factory=dict)
    by_counsellor: dict[str, dict[str, None]] = field(default_factory=dict)
    # Messages of a conversation: index i holds seq i + 1, so seq stays contiguous.
    messages: dict[str, list[StoredMessage]] = field(default_factory=dict)
    by_client_id: dict[tuple[str, str, str], StoredMessage] = field(default_factory=dict)
    nonces: set[tuple[str, bytes]] = field(default_factory=set)
    reads: dict[str, dict[str, int]] = field(default_factory=dict)
    presence: dict[str, _Presence] = field(default_factory=dict)
    processes: dict[str, float] = field(default_factory=dict)
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> holder, until
    devices: dict[str, Device] = field(default_factory=dict)
    epochs: dict[tuple[str, int], _Epoch] = field(default_factory=dict)
    # (conversation, epoch, recipient, sender device) -> envelope
    rewraps: dict[tuple[str, int, str, str], EnvelopeRecord] = field(default_factory=dict)
    key_requests: dict[tuple[str, str], KeyRequest] = field(default_factory=dict)
    backups: dict[str, dict[str, str]] = field(default_factory=dict)
    audit: list[AuditRecord] = field(default_factory=list)

    def put_conversation(self, conversation: Conversation) -> None:
        """Replace a stored conversation, keeping the counsellor index right."""
        old = self.conversations.get(conversation.id)
        if old is not None and old.counsellor_id != conversation.counsellor_id:
            self.by_counsellor.get(old.counsellor_id, {}).pop(old.id, None)
        self.conversations[conversation.id] = conversation
        self.by_counsellor.setdefault(conversation.counsellor_id, {})[conversation.id] = None


class MemoryDatabase:
    """Holds the state and hands out the adapters. Not durable (see the module doc)."""

    def __init__(self) -> None:
        self._state = _State()
        self._push: MemoryPushStore | None = None
        self._broadcasts = MemoryBroadcastStore()
        self._blobs = MemoryBlobStore()
        self._structure_keys = MemoryStructureKeyStore()

    def structure_keys(self) -> MemoryStructureKeyStore:
        """The structure-key store on this database."""
        return self._structure_keys

    def blobs(self) -> MemoryBlobStore:
        """The attachment blob store on this database."""
        return self._blobs

    def accounts(self) -> MemoryAccountStore:
        """The account store on this database."""
        return MemoryAccountStore(self._state)

    def messages(self) -> MemoryMessageStore:
        """The message store on this database."""
        return MemoryMessageStore(self._state)

    def presence(self) -> MemoryPresenceStore:
        """The presence store on this database."""
        return MemoryPresenceStore(self._state)

    def keys(self) -> MemoryKeyStore:
        """The key store on this database."""
        return MemoryKeyStore(self._state)

    def lifecycle(self) -> MemoryLifecycleStore:
        """The lifecycle store on this database."""
        return MemoryLifecycleStore(self._state)

    def push(self) -> MemoryPushStore:
        """The push store (subscriptions, outbox) of this database."""
        if self._push is None:
            self._push = MemoryPushStore()
        return self._push

    def broadcasts(self) -> MemoryBroadcastStore:
        """The broadcast store (lists, records) of this database."""
        return self._broadcasts

    async def ping(self) -> bool:
        """Always True: the store is this process's memory."""
        return True

    async def close(self) -> None:
        """Nothing to release; the data stays readable until the object is dropped."""


class MemoryAccountStore:
    """``AccountStore`` in memory."""

    def __init__(self, state: _State) -> None:
        self._s = state

    async def add_structure(self, structure: Structure) -> None:
        if structure.id in self._s.structures:
            raise Conflict(f"structure {structure.id} exists")
        self._s.structures[structure.id] = structure

    async def get_structure(self, structure_id: str) -> Structure | None:
        return self._s.structures.get(structure_id)

    async def list_structures(self) -> list[Structure]:
        return sorted(self._s.structures.values(), key=lambda s: s.name)

    async def add_user(self, user: User) -> None:
        low = user.login.lower()
        if user.id in self._s.users or low in self._s.login_index:
            raise Conflict(f"login {user.login!r} is taken")
        self._s.users[user.id] = user
        self._s.login_index[low] = user.id

    async def get_user(self, user_id: str) -> User | None:
        return self._s.users.get(user_id)

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, User]:
        users = self._s.users
        return {u: users[u] for u in user_ids if u in users}

    async def find_user_by_login(self, login: str) -> User | None:
        uid = self._s.login_index.get(login.lower())
        return self._s.users.get(uid) if uid is not None else None

    async def users_in_structure(self, structure_id: str, role: Role) -> list[User]:
        found = [
            u for u in self._s.users.values() if u.structure_id == structure_id and u.role is role
        ]
        return sorted(found, key=lambda u: u.login.lower())

    async def delete_device_sessions(self, user_id: str, device_id: str) -> int:
        hashes = [
            h
            for h in self._s.user_sessions.get(user_id, set())
            if (sess := self._s.sessions.get(h)) is not None and sess.device_id == device_id
        ]
        for h in hashes:
            self._s.sessions.pop(h, None)
            self._s.user_sessions.get(user_id, set()).discard(h)
        return len(hashes)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        user = self._s.users.get(user_id)
        if user is not None:
            self._s.users[user_id] = dataclasses.replace(user, password_hash=password_hash)

    async def set_activation(self, user_id: str, code_hash: str, expires_at: float) -> None:
        if user_id not in self._s.users:
            return
        holder = self._s.activations.get(code_hash)
        if holder is not None and holder.user_id != user_id:
            raise Conflict("activation code already in use")
        previous = self._s.activation_of.pop(user_id, None)
        if previous is not None:
            self._s.activations.pop(previous, None)
        self._s.activations[code_hash] = _Activation(user_id, expires_at)
        self._s.activation_of[user_id] = code_hash

    async def consume_activation(self, code_hash: str, now: float) -> User | None:
        act = self._s.activations.get(code_hash)
        if act is None or act.expires_at <= now:
            return None
        del self._s.activations[code_hash]
        self._s.activation_of.pop(act.user_id, None)
        return self._s.users.get(act.user_id)

    async def claim_first_device(self, user_id: str, device_id: str, *, claim: bool = True) -> bool:
        if user_id not in self._s.users:
            return False
        if claim:
            self._s.first_device.setdefault(user_id, device_id)
        return self._s.first_device.get(user_id) == device_id

    async def set_activation_box(self, user_id: str, box: dict[str, Any] | None) -> None:
        if box and user_id in self._s.users:
            self._s.activation_boxes[user_id] = copy.deepcopy(box)
        else:
            self._s.activation_boxes.pop(user_id, None)

    async def activation_box(self, user_id: str) -> dict[str, Any] | None:
        box = self._s.activation_boxes.get(user_id)
        return copy.deepcopy(box) if box is not None else None

    async def add_session(self, session: Session) -> None:
        if session.token_hash in self._s.sessions:
            raise Conflict("session exists")
        self._s.sessions[session.token_hash] = session
        self._s.user_sessions.setdefault(session.user_id, set()).add(session.token_hash)

    async def get_session(self, token_hash: str, now: float) -> Session | None:
        session = self._s.sessions.get(token_hash)
        if session is None or session.expires_at <= now:
            return None
        return session

    async def delete_session(self, token_hash: str) -> None:
        session = self._s.sessions.pop(token_hash, None)
        if session is not None:
            self._s.user_sessions.get(session.user_id, set()).discard(token_hash)

    async def delete_user_sessions(self, user_id: str) -> int:
        hashes = self._s.user_sessions.pop(user_id, set())
        for h in hashes:
            self._s.sessions.pop(h, None)
        return len(hashes)

    async def record_login_failure(
        self, key: str, now: float, window: float, delta: int = 1
    ) -> int:
        f = self._s.failures.get(key)
        if f is not None and f.start > now - window:
            f.count += delta
            f.last = max(f.last, now) if delta > 0 else f.last
            return f.count
        self._s.failures[key] = _Failures(delta, now, now)
        return delta

    async def login_failures(self, key: str, now: float, window: float) -> int:
        f = self._s.failures.get(key)
        return f.count if f is not None and f.start > now - window else 0

    async def last_login_failure(self, key: str, now: float, window: float) -> float | None:
        f = self._s.failures.get(key)
        return f.last if f is not None and f.start > now - window else None

    async def clear_login_failures(self, key: str) -> None:
        self._s.failures.pop(key, None)

    async def purge_login_failures(self, now: float, window: float) -> int:
        old = [k for k, f in self._s.failures.items() if f.start <= now - window]
        for k in old:
            del self._s.failures[k]
        return len(old)


class MemoryMessageStore:
    """``MessageStore`` in memory: a list per conversation, index = ``seq`` - 1."""

    def __init__(self, state: _State) -> None:
        self._s = state

    async def add_conversation(self, conversation: Conversation) -> None:
        c = conversation
        if c.id in self._s.conversations or c.beneficiary_id in self._s.by_beneficiary:
            raise Conflict("this beneficiary already has a conversation")
        self._s.put_conversation(c)
        self._s.by_beneficiary[c.beneficiary_id] = c.id

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        return self._s.conversations.get(conversation_id)

    async def conversations_for(self, user_id: str) -> list[Conversation]:
        convs = self._s.conversations
        ids = list(self._s.by_counsellor.get(user_id, ()))
        own = self._s.by_beneficiary.get(user_id)
        if own is not None and own not in ids:
            ids.append(own)
        return [convs[i] for i in ids]

    async def conversations_previously_with(self, user_id: str) -> list[Conversation]:
        return [c for c in self._s.conversations.values() if c.previous_counsellor_id == user_id]

    async def conversations_in_structure(self, structure_id: str) -> list[Conversation]:
        return [c for c in self._s.conversations.values() if c.structure_id == structure_id]

    async def expired_temporary(self, now: float) -> list[Conversation]:
        return [
            c
            for c in self._s.conversations.values()
            if c.temporary_until is not None and c.temporary_until <= now
        ]

    async def set_flag(self, conversation_id: str, flagged: bool) -> None:
        c = self._s.conversations.get(conversation_id)
        if c is not None:
            self._s.put_conversation(dataclasses.replace(c, flagged=flagged))

    async def set_counsellor(
        self,
        conversation_id: str,
        counsellor_id: str,
        previous_counsellor_id: str | None,
        temporary_until: float | None,
    ) -> Conversation | None:
        c = self._s.conversations.get(conversation_id)
        if c is None:
            return None
        updated = dataclasses.replace(
            c,
            counsellor_id=counsellor_id,
            previous_counsellor_id=previous_counsellor_id,
            temporary_until=temporary_until,
            rotation_required=True,
        )
        self._s.put_conversation(updated)
        return updated

    def _touch(self, conversation_id: str, seq: int, at: float) -> None:
        c = self._s.conversations.get(conversation_id)
        if c is not None and (seq > c.last_seq or at > c.last_at):
            self._s.conversations[conversation_id] = _with_last(
                c, max(c.last_seq, seq), max(c.last_at, at)
            )

    async def append(self, message: NewMessage, now: float) -> tuple[StoredMessage, bool]:
        m = message
        key = (m.conversation_id, m.sender_id, m.client_id)
        existing = self._s.by_client_id.get(key)
        if existing is not None:
            at = 0.0 if m.quiet else existing.created_at
            self._touch(existing.conversation_id, existing.seq, at)
            return existing, False
        nonce_key = (m.device_id, m.nonce)
        if m.nonce and nonce_key in self._s.nonces:
            raise NonceReused("this device already used this nonce")
        history = self._s.messages.setdefault(m.conversation_id, [])
        stored = StoredMessage(
            conversation_id=m.conversation_id,
            seq=len(history) + 1,
            client_id=m.client_id,
            sender_id=m.sender_id,
            device_id=m.device_id,
            msg_type=m.msg_type,
            body=bytes(m.body),
            meta=copy.deepcopy(m.meta) if m.meta else {},
            epoch=m.epoch,
            nonce=bytes(m.nonce),
            sig=bytes(m.sig),
            created_at=now,
            version=m.version,
        )
        history.append(stored)
        self._s.by_client_id[key] = stored
        if m.nonce:
            self._s.nonces.add(nonce_key)
        self._touch(m.conversation_id, stored.seq, 0.0 if m.quiet else now)
        return stored, True

    async def messages_after(
        self, conversation_id: str, after_seq: int, limit: int
    ) -> list[StoredMessage]:
        history = self._s.messages.get(conversation_id, [])
        start = max(after_seq, 0)
        return history[start : start + max(limit, 0)]

    async def messages_before(
        self, conversation_id: str, before_seq: int, limit: int
    ) -> list[StoredMessage]:
        history = self._s.messages.get(conversation_id, [])
        end = min(max(before_seq - 1, 0), len(history))
        return history[max(end - max(limit, 0), 0) : end]

    async def message_by_client_id(
        self, conversation_id: str, sender_id: str, client_id: str
    ) -> StoredMessage | None:
        return self._s.by_client_id.get((conversation_id, sender_id, client_id))

    async def messages_by_meta(
        self, conversation_id: str, key: str, value: str | int, limit: int
    ) -> list[StoredMessage]:
        history = self._s.messages.get(conversation_id, [])
        found = [m for m in history if key in m.meta and m.meta[key] == value]
        return found[: max(limit, 0)]

    async def messages_of_types(
        self, conversation_id: str, msg_types: Sequence[str], limit: int
    ) -> list[StoredMessage]:
        history = self._s.messages.get(conversation_id, [])
        found = [m for m in history if m.msg_type in msg_types]
        return found[-limit:] if limit > 0 else []

    async def count_types_after(
        self, conversation_id: str, after_seq: int, msg_types: Sequence[str]
    ) -> int:
        history = self._s.messages.get(conversation_id, [])
        return sum(1 for m in history[max(after_seq, 0) :] if m.msg_type in msg_types)

    async def last_seq(self, conversation_id: str) -> int:
        return len(self._s.messages.get(conversation_id, ()))

    async def set_read(self, conversation_id: str, user_id: str, seq: int) -> int:
        markers = self._s.reads.setdefault(conversation_id, {})
        value = max(markers.get(user_id, seq), seq)
        markers[user_id] = value
        return value

    async def advance_read(self, conversation_id: str, user_id: str, seq: int) -> None:
        markers = self._s.reads.setdefault(conversation_id, {})
        current = markers.get(user_id)
        if current is None or current < seq:
            markers[user_id] = seq

    async def read_markers(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        reads = self._s.reads
        return {c: dict(reads.get(c, {})) for c in conversation_ids}


class MemoryPresenceStore:
    """``PresenceStore`` in memory: per-process connection counts plus process liveness."""

    def __init__(self, state: _State) -> None:
        self._s = state

    async def connected(self, user_id: str, process_id: str, delta: int, now: float) -> None:
        p = self._s.presence.setdefault(user_id, _Presence())
        p.procs[process_id] = p.procs.get(process_id, 0) + delta
        if delta < 0:
            await self.seen(user_id, now)

    async def seen(self, user_id: str, at: float) -> None:
        p = self._s.presence.setdefault(user_id, _Presence())
        p.last_seen = at

    async def seen_at(self, user_ids: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for u in user_ids:
            p = self._s.presence.get(u)
            if p is not None and p.last_seen is not None:
                out[u] = p.last_seen
        return out

    async def process_alive(self, process_id: str, until: float) -> None:
        self._s.processes[process_id] = until

    async def presence(self, user_ids: Sequence[str], now: float) -> dict[str, Presence]:
        processes = self._s.processes
        out: dict[str, Presence] = {}
        for u in user_ids:
            p = self._s.presence.get(u)
            if p is None:
                out[u] = Presence(u, False, None)
                continue
            online = any(n > 0 and processes.get(proc, 0.0) > now for proc, n in p.procs.items())
            out[u] = Presence(u, online, p.last_seen)
        return out


class MemoryKeyStore:
    """``KeyStore`` in memory. An epoch and its envelopes are stored in one step."""

    def __init__(self, state: _State) -> None:
        self._s = state

    async def add_device(self, device: Device) -> None:
        if device.id in self._s.devices:
            raise Conflict("device already registered")
        self._s.devices[device.id] = dataclasses.replace(device, removed_at=None)

    async def get_device(self, device_id: str) -> Device | None:
        return self._s.devices.get(device_id)

    async def devices_of(self, user_ids: Sequence[str]) -> list[Device]:
        wanted = set(user_ids)
        found = [
            d for d in self._s.devices.values() if d.user_id in wanted and d.removed_at is None
        ]
        found.sort(key=lambda d: d.created_at)
        return found

    async def remove_device(self, device_id: str, now: float) -> bool:
        d = self._s.devices.get(device_id)
        if d is None or d.removed_at is not None:
            return False
        self._s.devices[device_id] = dataclasses.replace(d, removed_at=now)
        return True

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
        key = (conversation_id, epoch)
        if key in self._s.epochs:
            raise Conflict(f"epoch {epoch} already exists")
        self._s.epochs[key] = _Epoch(creator_device, now, tuple(envelopes), commitment)
        c = self._s.conversations.get(conversation_id)
        if c is not None:
            still = c.counsellor_id == counsellor_id and epoch >= c.epoch
            self._s.put_conversation(
                dataclasses.replace(
                    c,
                    epoch=max(c.epoch, epoch),
                    rotation_required=c.rotation_required and not still,
                )
            )

    async def ever_registered(self, user_id: str) -> int:
        return sum(1 for d in self._s.devices.values() if d.user_id == user_id)

    async def add_envelopes(self, envelopes: Sequence[EnvelopeRecord]) -> int:
        added = 0
        for e in envelopes:
            key = (e.conversation_id, e.epoch, e.recipient_device, e.sender_device)
            if key not in self._s.rewraps:
                self._s.rewraps[key] = e
                added += 1
        return added

    async def count_envelopes(self, conversation_id: str, epoch: int, recipient: str) -> int:
        ep = self._s.epochs.get((conversation_id, epoch))
        own = sum(1 for e in ep.envelopes if e.recipient_device == recipient) if ep else 0
        slot = (conversation_id, epoch, recipient)
        return own + sum(1 for (c, n, r, _) in self._s.rewraps if (c, n, r) == slot)

    async def commitments(self, conversation_ids: Sequence[str]) -> list[EpochCommitment]:
        wanted = set(conversation_ids)
        found = [
            ep.commitment
            for (conv, _), ep in self._s.epochs.items()
            if conv in wanted and ep.commitment is not None
        ]
        found.sort(key=lambda c: (c.conversation_id, c.epoch))
        return found

    async def envelopes_for(
        self, device_id: str, conversation_id: str | None
    ) -> list[EnvelopeRecord]:
        out: list[EnvelopeRecord] = []
        for (conv, _), ep in self._s.epochs.items():
            if conversation_id is None or conv == conversation_id:
                out.extend(e for e in ep.envelopes if e.recipient_device == device_id)
        for (conv, _, recipient, _), e in self._s.rewraps.items():
            if recipient == device_id and (conversation_id is None or conv == conversation_id):
                out.append(e)
        out.sort(key=lambda e: (e.conversation_id, e.epoch))
        return out

    async def epochs_held(
        self, conversation_id: str, device_ids: Sequence[str]
    ) -> dict[str, set[int]]:
        held: dict[str, set[int]] = {d: set() for d in device_ids}
        for (conv, epoch), ep in self._s.epochs.items():
            if conv == conversation_id:
                for e in ep.envelopes:
                    if e.recipient_device in held:
                        held[e.recipient_device].add(epoch)
        for conv, epoch, recipient, _ in self._s.rewraps:
            if conv == conversation_id and recipient in held:
                held[recipient].add(epoch)
        return held

    async def require_rotation(self, conversation_id: str) -> None:
        c = self._s.conversations.get(conversation_id)
        if c is not None:
            self._s.put_conversation(dataclasses.replace(c, rotation_required=True))

    async def put_key_request(self, request: KeyRequest) -> None:
        self._s.key_requests[(request.conversation_id, request.recipient_device)] = request

    async def key_requests(self, conversation_ids: Sequence[str]) -> list[KeyRequest]:
        wanted = set(conversation_ids)
        return [r for (conv, _), r in self._s.key_requests.items() if conv in wanted and not r.done]

    async def close_key_request(self, conversation_id: str, device_id: str) -> None:
        key = (conversation_id, device_id)
        r = self._s.key_requests.get(key)
        if r is not None:
            self._s.key_requests[key] = dataclasses.replace(r, done=True)

    async def put_backup(self, user_id: str, backup: dict[str, str], now: float) -> None:
        self._s.backups[user_id] = dict(backup)

    async def get_backup(self, user_id: str) -> dict[str, str] | None:
        b = self._s.backups.get(user_id)
        return dict(b) if b is not None else None

    async def swap_backup(
        self,
        user_id: str,
        expected: dict[str, str] | None,
        backup: dict[str, str],
        now: float,
    ) -> bool:
        current = self._s.backups.get(user_id)
        if (current is None) != (expected is None):
            return False
        if (
            current is not None
            and expected is not None
            and current.get("nonce") != expected.get("nonce")
        ):
            return False
        self._s.backups[user_id] = dict(backup)
        return True

    async def add_audit(self, record: AuditRecord) -> None:
        self._s.audit.append(dataclasses.replace(record, details=copy.deepcopy(record.details)))

    async def audit_for(self, conversation_id: str) -> list[AuditRecord]:
        found = [r for r in self._s.audit if r.conversation_id == conversation_id]
        found.sort(key=lambda r: r.at)
        return [dataclasses.replace(r, details=copy.deepcopy(r.details)) for r in found]


def _replace_id(value: object, user_id: str, pseudonym: str) -> object:
    """``value`` with every string equal to ``user_id`` replaced (in lists and dicts too)."""
    if value == user_id:
        return pseudonym
    if isinstance(value, list):
        return [_replace_id(v, user_id, pseudonym) for v in value]
    if isinstance(value, dict):
        return {k: _replace_id(v, user_id, pseudonym) for k, v in value.items()}
    return value


def _mentions(value: object, user_id: str) -> bool:
    return _replace_id(value, user_id, "\0") != value


class MemoryLifecycleStore:
    """``LifecycleStore`` in memory."""

    def __init__(self, state: _State) -> None:
        self._s = state

    async def record_login(self, user_id: str, at: float) -> None:
        u = self._s.users.get(user_id)
        if u is not None:
            self._s.users[user_id] = dataclasses.replace(
                u, active_at=max(u.active_at, at), notice_at=None
            )

    async def inactive_users(
        self, active_before: float, limit: int, *, unwarned_only: bool
    ) -> list[User]:
        found = [
            u
            for u in self._s.users.values()
            if u.erasing is None
            and (u.active_at or u.created_at) < active_before
            and not (unwarned_only and u.notice_at is not None)
        ]
        found.sort(key=lambda u: u.active_at or u.created_at)
        return found[: max(limit, 0)]

    async def mark_warned(self, user_id: str, at: float) -> bool:
        u = self._s.users.get(user_id)
        if u is None or u.notice_at is not None:
            return False
        self._s.users[user_id] = dataclasses.replace(u, notice_at=at)
        return True

    async def begin_erasure(self, user_id: str, pseudonym: str) -> str | None:
        u = self._s.users.get(user_id)
        if u is None:
            return None
        if u.erasing is None:
            u = dataclasses.replace(u, erasing=pseudonym)
            self._s.users[user_id] = u
        for h in self._s.user_sessions.pop(user_id, set()):
            self._s.sessions.pop(h, None)
        return u.erasing

    async def pending_erasures(self, limit: int) -> list[User]:
        return [u for u in self._s.users.values() if u.erasing is not None][: max(limit, 0)]

    async def erase_conversation(self, conversation_id: str, pseudonym: str, now: float) -> int:
        s = self._s
        c = s.conversations.get(conversation_id)
        removed = 0
        history = s.messages.pop(conversation_id, [])
        for m in history:
            s.by_client_id.pop((m.conversation_id, m.sender_id, m.client_id), None)
            s.nonces.discard((m.device_id, m.nonce))
        removed += len(history)
        removed += len(s.reads.pop(conversation_id, {}))
        for key in [k for k in s.epochs if k[0] == conversation_id]:
            del s.epochs[key]
            removed += 1
        for key3 in [k for k in s.rewraps if k[0] == conversation_id]:
            del s.rewraps[key3]
            removed += 1
        for key2 in [k for k in s.key_requests if k[0] == conversation_id]:
            del s.key_requests[key2]
            removed += 1
        if c is not None and c.deleted_at is None:
            s.by_beneficiary.pop(c.beneficiary_id, None)
            s.by_beneficiary[pseudonym] = c.id
            s.put_conversation(
                dataclasses.replace(
                    c,
                    beneficiary_id=pseudonym,
                    last_seq=0,
                    previous_counsellor_id=None,
                    temporary_until=None,
                    archived_at=None,
                    archived_by=None,
                    archive_reason=None,
                    deleted_at=now,
                )
            )
        return removed

    async def erase_account(self, user_id: str) -> int:
        s = self._s
        removed = 0
        for h in s.user_sessions.pop(user_id, set()):
            removed += s.sessions.pop(h, None) is not None
        for d in [d for d in s.devices.values() if d.user_id == user_id]:
            del s.devices[d.id]
            removed += 1
        removed += s.backups.pop(user_id, None) is not None
        removed += s.presence.pop(user_id, None) is not None
        code = s.activation_of.pop(user_id, None)
        if code is not None:
            s.activations.pop(code, None)
        s.first_device.pop(user_id, None)
        s.activation_boxes.pop(user_id, None)
        u = s.users.pop(user_id, None)
        if u is not None:
            s.login_index.pop(u.login.lower(), None)
            removed += 1
        return removed

    async def pseudonymise_audit(self, user_id: str, pseudonym: str) -> int:
        changed = 0
        for i, r in enumerate(self._s.audit):
            if r.actor_id == user_id or _mentions(r.details, user_id):
                details = {k: _replace_id(v, user_id, pseudonym) for k, v in r.details.items()}
                actor = pseudonym if r.actor_id == user_id else r.actor_id
                self._s.audit[i] = dataclasses.replace(r, actor_id=actor, details=details)
                changed += 1
        return changed

    async def audit_involving(self, user_id: str) -> list[AuditRecord]:
        found = [
            dataclasses.replace(r, details=copy.deepcopy(r.details))
            for r in self._s.audit
            if r.actor_id == user_id or _mentions(r.details, user_id)
        ]
        found.sort(key=lambda r: r.at)
        return found

    async def sessions_of(self, user_id: str) -> list[Session]:
        found = [self._s.sessions[h] for h in self._s.user_sessions.get(user_id, set())]
        found.sort(key=lambda x: x.created_at)
        return found

    async def archive(
        self, conversation_id: str, by: str, reason: str, at: float
    ) -> Conversation | None:
        c = self._s.conversations.get(conversation_id)
        if c is None or c.archived_at is not None or c.deleted_at is not None:
            return None
        updated = dataclasses.replace(c, archived_at=at, archived_by=by, archive_reason=reason)
        self._s.put_conversation(updated)
        return updated

    async def restore(self, conversation_id: str) -> Conversation | None:
        c = self._s.conversations.get(conversation_id)
        if c is None or c.archived_at is None:
            return None
        updated = dataclasses.replace(c, archived_at=None, archived_by=None, archive_reason=None)
        self._s.put_conversation(updated)
        return updated

    async def archived_before(self, before: float, limit: int) -> list[Conversation]:
        found = [
            c
            for c in self._s.conversations.values()
            if c.archived_at is not None and c.archived_at < before
        ]
        found.sort(key=lambda c: c.archived_at or 0.0)
        return found[: max(limit, 0)]

    async def purge_sessions(self, now: float, limit: int) -> int:
        old = [h for h, x in self._s.sessions.items() if x.expires_at <= now][: max(limit, 0)]
        for h in old:
            x = self._s.sessions.pop(h)
            self._s.user_sessions.get(x.user_id, set()).discard(h)
        return len(old)

    async def purge_activations(self, now: float, limit: int) -> int:
        old = [c for c, a in self._s.activations.items() if a.expires_at <= now][: max(limit, 0)]
        for code in old:
            a = self._s.activations.pop(code)
            self._s.activation_of.pop(a.user_id, None)
        return len(old)

    async def purge_audit(self, before: float, limit: int) -> int:
        keep, gone = [], 0
        for r in self._s.audit:
            if r.at < before and gone < limit:
                gone += 1
            else:
                keep.append(r)
        self._s.audit = keep
        return gone

    async def purge_dead_processes(self, before: float, limit: int) -> int:
        dead = [p for p, until in self._s.processes.items() if until < before][: max(limit, 0)]
        removed = 0
        for pid in dead:
            del self._s.processes[pid]
            removed += 1
            for user_id, pres in list(self._s.presence.items()):
                if pres.procs.pop(pid, None) is not None:
                    removed += 1
                    if not pres.procs and pres.last_seen is None:
                        del self._s.presence[user_id]
        return removed

    async def take_lease(self, name: str, holder: str, now: float, seconds: float) -> bool:
        held = self._s.leases.get(name)
        if held is not None and held[0] != holder and held[1] > now:
            return False
        self._s.leases[name] = (holder, now + seconds)
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        held = self._s.leases.get(name)
        if held is not None and held[0] == holder:
            del self._s.leases[name]

    async def purge_tombstones(self, before: float, limit: int) -> int:
        old = [
            c
            for c in self._s.conversations.values()
            if c.deleted_at is not None and c.deleted_at < before
        ][: max(limit, 0)]
        for c in old:
            del self._s.conversations[c.id]
            self._s.by_beneficiary.pop(c.beneficiary_id, None)
            self._s.by_counsellor.get(c.counsellor_id, {}).pop(c.id, None)
        return len(old)
