"""Storage ports. Each method's docstring is its contract; every adapter passes
the contract suite in ``tests/contract/test_store_contract.py``.

History, ``seq`` and read state live here; best-effort fan-out lives in the
broker port, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

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


class StoreError(Exception):
    """The store could not complete an operation; nothing was written
    (except for ``StoreOutcomeUnknown``)."""


class StoreUnavailable(StoreError):
    """The store could not be reached in time (or refused the operation); nothing was written."""


class StoreOutcomeUnknown(StoreError):
    """A write was sent but not confirmed in time: it may or may not be stored.

    Only raised by writes that are safe to repeat (a message resent with the
    same client id is stored once).
    """


class Conflict(StoreError):
    """A uniqueness rule was violated (for example a login already taken)."""


class NonceReused(Conflict):
    """The sending device already used this nonce in a stored message."""


class AccountStore(Protocol):
    """Structures, accounts, sessions, activation codes and login throttling."""

    async def add_structure(self, structure: Structure) -> None:
        """Insert; raise ``Conflict`` if the id exists."""

    async def get_structure(self, structure_id: str) -> Structure | None:
        """Return the structure or None."""

    async def list_structures(self) -> list[Structure]:
        """All structures, by name."""

    async def add_user(self, user: User) -> None:
        """Insert; raise ``Conflict`` if the id or the login (case-insensitive) exists."""

    async def get_user(self, user_id: str) -> User | None:
        """Return the user or None."""

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, User]:
        """Return the users that exist among ``user_ids``, keyed by id."""

    async def find_user_by_login(self, login: str) -> User | None:
        """Case-insensitive lookup by login."""

    async def users_in_structure(self, structure_id: str, role: Role) -> list[User]:
        """Users of a structure with a role, by login."""

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace the stored hash (after activation, a change, or a rehash)."""

    async def set_activation(self, user_id: str, code_hash: str, expires_at: float) -> None:
        """Store the hash of a one-time activation code, replacing any previous one."""

    async def consume_activation(self, code_hash: str, now: float) -> User | None:
        """Atomically remove an unexpired activation code and return its user.

        A code can be consumed once; an expired or unknown code returns None.
        """

    async def claim_first_device(self, user_id: str, device_id: str, *, claim: bool = True) -> bool:
        """True iff ``device_id`` is the account's first trusted device; if ``claim``
        and the account has none yet, atomically make it so first.

        Of any number of concurrent claims for one account, exactly one wins. The
        claim outlives the device (a removed first device is not replaced).
        """

    async def set_activation_box(self, user_id: str, box: dict[str, Any] | None) -> None:
        """Keep (replace) or, with None, drop the account's activation box
        (``chat_server.rooms.activation``); it goes with the account."""

    async def activation_box(self, user_id: str) -> dict[str, Any] | None:
        """The account's activation box, or None."""

    async def add_session(self, session: Session) -> None:
        """Store a session (keyed by the token hash)."""

    async def get_session(self, token_hash: str, now: float) -> Session | None:
        """Return the session if it exists and has not expired."""

    async def delete_session(self, token_hash: str) -> None:
        """Remove one session; removing an unknown one is not an error."""

    async def delete_user_sessions(self, user_id: str) -> int:
        """Remove every session of a user; return how many."""

    async def delete_device_sessions(self, user_id: str, device_id: str) -> int:
        """Remove the user's sessions bound to one device; return how many."""

    async def record_login_failure(
        self, key: str, now: float, window: float, delta: int = 1
    ) -> int:
        """Count a failed attempt for ``key`` in a window starting at its first failure.

        Returns the number of failures in the current window (a window older than
        ``window`` seconds restarts at ``delta``). Atomic: concurrent calls each get
        a different count, in every process. ``delta`` -1 takes one back (an
        attempt counted before its check, which then succeeded). Keys are opaque
        (the caller hashes what identifies a person).
        """

    async def login_failures(self, key: str, now: float, window: float) -> int:
        """Failures for ``key`` in the current window (0 if the window has passed)."""

    async def last_login_failure(self, key: str, now: float, window: float) -> float | None:
        """When the latest failure of ``key``'s current window was recorded (None if none)."""

    async def clear_login_failures(self, key: str) -> None:
        """Forget failures after a successful login."""

    async def purge_login_failures(self, now: float, window: float) -> int:
        """Delete every window that has passed; return how many (nothing is kept longer)."""


class MessageStore(Protocol):
    """Conversations, their messages (with a contiguous ``seq``) and read markers."""

    async def add_conversation(self, conversation: Conversation) -> None:
        """Insert; raise ``Conflict`` if the beneficiary already has a conversation."""

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """Return the conversation or None."""

    async def conversations_for(self, user_id: str) -> list[Conversation]:
        """Conversations where ``user_id`` is the beneficiary or the current counsellor."""

    async def conversations_previously_with(self, user_id: str) -> list[Conversation]:
        """Conversations whose previous counsellor (before a transfer) is ``user_id``."""

    async def conversations_in_structure(self, structure_id: str) -> list[Conversation]:
        """Every conversation of a structure."""

    async def expired_temporary(self, now: float) -> list[Conversation]:
        """Conversations whose temporary transfer ended before ``now``."""

    async def set_flag(self, conversation_id: str, flagged: bool) -> None:
        """Set the counsellor's flag."""

    async def set_counsellor(
        self,
        conversation_id: str,
        counsellor_id: str,
        previous_counsellor_id: str | None,
        temporary_until: float | None,
    ) -> Conversation | None:
        """Change the current counsellor and, in the same atomic update, require a
        new epoch (``rotation_required``); return the updated conversation."""

    async def append(self, message: NewMessage, now: float) -> tuple[StoredMessage, bool]:
        """Store ``message`` durably with the next ``seq`` of its conversation.

        Returns ``(stored, created)``. Guarantees: ``seq`` values of a
        conversation are 1, 2, 3... with no hole and no repeat, even with
        several writers in several processes; the write is acknowledged by the
        database with majority and journal before this returns; a message whose
        ``(conversation, sender, client_id)`` was already stored is not stored
        again and the first stored copy is returned with ``created=False``.
        A non-empty ``nonce`` already stored for the same sending device (in
        another message) raises ``NonceReused``. On failure it raises
        ``StoreError`` and nothing is stored.
        """

    async def messages_after(
        self, conversation_id: str, after_seq: int, limit: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages with ``seq > after_seq``, ascending."""

    async def messages_before(
        self, conversation_id: str, before_seq: int, limit: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages with ``seq < before_seq``, the newest ones, ascending."""

    async def messages_by_meta(
        self, conversation_id: str, key: str, value: str | int, limit: int
    ) -> list[StoredMessage]:
        """The first ``limit`` messages of the conversation whose ``meta[key] == value``,
        ascending by ``seq`` (an item's events: ``key="item"``; the edits and deletes of a
        message: ``key="target_seq"``). ``key`` is one of ``meta``'s field names."""

    async def messages_of_types(
        self, conversation_id: str, msg_types: Sequence[str], limit: int
    ) -> list[StoredMessage]:
        """The newest ``limit`` messages of the conversation whose ``msg_type`` is one of
        ``msg_types``, ascending by ``seq``."""

    async def count_types_after(
        self, conversation_id: str, after_seq: int, msg_types: Sequence[str]
    ) -> int:
        """How many messages with ``seq > after_seq`` have a ``msg_type`` in ``msg_types``
        (the key housekeeping left out of a member's unread count). Reads only the
        range after ``after_seq``."""

    async def message_by_client_id(
        self, conversation_id: str, sender_id: str, client_id: str
    ) -> StoredMessage | None:
        """The message ``sender_id`` stored in the conversation under ``client_id`` (the
        key ``append`` keeps unique), or None if there is none (yet)."""

    async def last_seq(self, conversation_id: str) -> int:
        """The highest stored ``seq`` (0 if none), read from the messages themselves."""

    async def set_read(self, conversation_id: str, user_id: str, seq: int) -> int:
        """Move the user's read marker forward to ``seq`` (never backward); return it."""

    async def advance_read(self, conversation_id: str, user_id: str, seq: int) -> None:
        """``set_read`` without the result, so a store may batch it with others."""

    async def read_markers(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """``{conversation_id: {user_id: seq}}`` for the given conversations."""


class PresenceStore(Protocol):
    """Who is connected, across processes; survives a process crash."""

    async def connected(self, user_id: str, process_id: str, delta: int, now: float) -> None:
        """Add ``delta`` (+1 or -1) to the user's connection count in this process."""

    async def process_alive(self, process_id: str, until: float) -> None:
        """Declare this process alive until ``until``; a dead process's counts are ignored."""

    async def seen(self, user_id: str, at: float) -> None:
        """Record that the user was last seen at ``at`` (the latest record wins)."""

    async def seen_at(self, user_ids: Sequence[str]) -> dict[str, float]:
        """When each user was last seen, for those who were (``seen``)."""

    async def presence(self, user_ids: Sequence[str], now: float) -> dict[str, Presence]:
        """Presence of each user: online if a live process holds a connection of theirs."""


class KeyStore(Protocol):
    """Device public keys, epochs and their HPKE envelopes, key requests, backups, audit."""

    async def add_device(self, device: Device) -> None:
        """Register; raise ``Conflict`` if the device id exists (removed or not)."""

    async def get_device(self, device_id: str) -> Device | None:
        """The device, removed or not, or None."""

    async def devices_of(self, user_ids: Sequence[str]) -> list[Device]:
        """Registered, not removed devices of these users, oldest first."""

    async def remove_device(self, device_id: str, now: float) -> bool:
        """Mark removed; True if it was registered and not yet removed."""

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
        """Create epoch ``epoch`` with its envelopes (and its signed key
        commitment, kept with it) in one atomic write.

        Raise ``Conflict`` if that epoch already exists (another client rotated
        first); the conversation's ``epoch`` is then brought up to it, which
        repairs an earlier call interrupted between its two writes. On success
        the conversation's ``epoch`` becomes ``epoch`` (if higher), and its
        ``rotation_required`` flag is cleared only if its counsellor is still
        ``counsellor_id``: a transfer in between keeps the rotation due.
        """

    async def ever_registered(self, user_id: str) -> int:
        """How many devices the user has registered, removed ones included."""

    async def add_envelopes(self, envelopes: Sequence[EnvelopeRecord]) -> int:
        """Add re-wrapped envelopes of existing epochs. Every envelope offered is
        kept, one per (conversation, epoch, recipient, sender device): a second
        one from the same sender for the same slot is skipped, so nobody's
        envelope can push out another sender's. Returns how many were added.
        """

    async def count_envelopes(self, conversation_id: str, epoch: int, recipient: str) -> int:
        """How many envelopes (the epoch's own and re-wraps) ``recipient`` has for the epoch."""

    async def commitments(self, conversation_ids: Sequence[str]) -> list[EpochCommitment]:
        """The key commitments of these conversations' epochs that have one, by epoch."""

    async def envelopes_for(
        self, device_id: str, conversation_id: str | None
    ) -> list[EnvelopeRecord]:
        """Every envelope addressed to ``device_id`` (optionally in one conversation):
        each epoch's own, then every re-wrap, ordered by (conversation, epoch)."""

    async def epochs_held(
        self, conversation_id: str, device_ids: Sequence[str]
    ) -> dict[str, set[int]]:
        """For each device, the epochs of the conversation it has an envelope for."""

    async def require_rotation(self, conversation_id: str) -> None:
        """Flag the conversation: no message is accepted until a new epoch exists."""

    async def put_key_request(self, request: KeyRequest) -> None:
        """Insert or replace the request for (conversation, recipient device)."""

    async def key_requests(self, conversation_ids: Sequence[str]) -> list[KeyRequest]:
        """Open (not done) requests in these conversations."""

    async def close_key_request(self, conversation_id: str, device_id: str) -> None:
        """Mark the request done."""

    async def put_backup(self, user_id: str, backup: dict[str, str], now: float) -> None:
        """Store (replace) the user's encrypted key backup."""

    async def get_backup(self, user_id: str) -> dict[str, str] | None:
        """The user's encrypted key backup, or None."""

    async def swap_backup(
        self,
        user_id: str,
        expected: dict[str, str] | None,
        backup: dict[str, str],
        now: float,
    ) -> bool:
        """Replace the user's backup with ``backup`` only if the stored one is still
        ``expected`` (compared by its ``nonce``, fresh for every backup a client makes;
        None: there must be no backup), atomically. False, and nothing changed, when
        another write came first."""

    async def add_audit(self, record: AuditRecord) -> None:
        """Append an audit record (never updated, never deleted)."""

    async def audit_for(self, conversation_id: str) -> list[AuditRecord]:
        """Audit records of a conversation, oldest first."""


class LifecycleStore(Protocol):
    """Retention, erasure, archiving and access requests (``docs/privacy.md``).

    Every purge takes a ``limit`` and removes at most that many records, so a
    job works in bounded batches; every method is idempotent (running it again
    removes or changes nothing more).
    """

    async def record_login(self, user_id: str, at: float) -> None:
        """The user logged in at ``at``: restart their inactivity clock and clear any warning."""

    async def inactive_users(
        self, active_before: float, limit: int, *, unwarned_only: bool
    ) -> list[User]:
        """Up to ``limit`` users, not being erased, whose last login (or creation, if they
        never logged in) is before ``active_before``; with ``unwarned_only``, only those
        not warned since. Oldest activity first."""

    async def mark_warned(self, user_id: str, at: float) -> bool:
        """Record the inactivity warning; False if the user was already warned (or is gone)."""

    async def begin_erasure(self, user_id: str, pseudonym: str) -> str | None:
        """Mark the account as being erased (it can no longer log in) and end its sessions.

        Returns the pseudonym its records get: ``pseudonym`` on the first call, the one
        stored by an earlier, interrupted call otherwise; None if the user does not exist.
        """

    async def pending_erasures(self, limit: int) -> list[User]:
        """Accounts whose erasure began and did not finish (a crash in between)."""

    async def erase_conversation(self, conversation_id: str, pseudonym: str, now: float) -> int:
        """Delete a conversation's messages, read markers, epochs with their envelopes and
        key requests, and turn the conversation into a tombstone: its beneficiary becomes
        ``pseudonym``, its ``last_seq`` 0, ``deleted_at`` is set, any archive is cleared.
        Returns how many records were deleted (0 on a second call)."""

    async def erase_account(self, user_id: str) -> int:
        """Delete the account's sessions, devices, key backup, presence, last-seen record and
        finally the account itself. Returns how many records were deleted."""

    async def pseudonymise_audit(self, user_id: str, pseudonym: str) -> int:
        """Replace ``user_id`` by ``pseudonym`` wherever it appears in audit records (actor,
        detail values); returns how many records changed."""

    async def audit_involving(self, user_id: str) -> list[AuditRecord]:
        """Audit records where ``user_id`` is the actor or a detail value, oldest first."""

    async def sessions_of(self, user_id: str) -> list[Session]:
        """The user's sessions (expired ones included), oldest first."""

    async def archive(
        self, conversation_id: str, by: str, reason: str, at: float
    ) -> Conversation | None:
        """Archive a live conversation (atomic); None if it is unknown, already archived or
        a tombstone."""

    async def restore(self, conversation_id: str) -> Conversation | None:
        """Clear the archive (atomic); None if the conversation is not archived."""

    async def archived_before(self, before: float, limit: int) -> list[Conversation]:
        """Up to ``limit`` conversations archived before ``before``, oldest first."""

    async def purge_sessions(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` sessions that expired before ``now``."""

    async def purge_activations(self, now: float, limit: int) -> int:
        """Forget up to ``limit`` activation codes that expired before ``now``."""

    async def purge_audit(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` audit records written before ``before``."""

    async def purge_tombstones(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` conversation tombstones made before ``before``."""

    async def purge_dead_processes(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` server processes whose liveness ended before ``before``,
        with their connection counters (``PresenceStore``); returns the records deleted."""

    async def take_lease(self, name: str, holder: str, now: float, seconds: float) -> bool:
        """Hold the lease ``name`` until ``now + seconds`` if it is free, expired (its end
        is ``now`` or earlier) or already ``holder``'s (a renewal); False, and nothing
        changed, while another holder has it. Atomic across processes: two holders never
        both get True for overlapping periods."""

    async def release_lease(self, name: str, holder: str) -> None:
        """Free the lease ``name`` if ``holder`` has it (else nothing changes)."""
