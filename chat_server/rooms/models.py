"""Plain records the domain and the stores exchange. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """What an account is allowed to do."""

    BENEFICIARY = "beneficiary"
    COUNSELLOR = "counsellor"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Structure:
    """A Mission Locale or a France Travail agency."""

    id: str
    name: str
    kind: str
    programmes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class User:
    """An account. ``password_hash`` is None until a beneficiary activates."""

    id: str
    role: Role
    login: str
    display_name: str
    structure_id: str | None
    programme: str | None = None
    password_hash: str | None = None
    created_at: float = 0.0
    #: Last login (or creation): the inactivity clock of the retention policy.
    active_at: float = 0.0
    #: When the inactivity warning was given (None: not warned since the last login).
    notice_at: float | None = None
    #: Set while the account is being erased: the pseudonym its audit records get.
    erasing: str | None = None

    def public(self) -> dict[str, object]:
        """What other users and the client may see of this account."""
        return {
            "id": self.id,
            "role": self.role.value,
            "login": self.login,
            "display_name": self.display_name,
            "structure_id": self.structure_id,
            "programme": self.programme,
        }


@dataclass(frozen=True, slots=True)
class Session:
    """A login on one device; the token itself is never stored, only its hash."""

    token_hash: str
    user_id: str
    device_id: str
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Conversation:
    """One per beneficiary; members are the beneficiary and the current counsellor."""

    id: str
    beneficiary_id: str
    counsellor_id: str
    structure_id: str | None
    last_seq: int = 0
    last_at: float = 0.0
    flagged: bool = False
    epoch: int = 0
    created_at: float = 0.0
    previous_counsellor_id: str | None = None
    temporary_until: float | None = None
    rotation_required: bool = False
    #: Archived by the counsellor (read-only for both): when, by whom, why (a reason code).
    archived_at: float | None = None
    archived_by: str | None = None
    archive_reason: str | None = None
    #: The beneficiary's account was erased: this is a tombstone ("compte supprimé").
    deleted_at: float | None = None

    @property
    def members(self) -> tuple[str, str]:
        """The two people who may read and write this conversation."""
        return (self.beneficiary_id, self.counsellor_id)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message as the sender submitted it, before it has a ``seq``."""

    conversation_id: str
    client_id: str
    sender_id: str
    device_id: str
    msg_type: str
    body: bytes
    meta: dict[str, object] = field(default_factory=dict)
    epoch: int = 0
    nonce: bytes = b""
    sig: bytes = b""
    #: End-to-end format version (docs/crypto-format.md): 2 binds ``meta``.
    version: int = 1
    #: Key housekeeping (a server event that is not news): it moves the
    #: conversation's ``last_seq`` but not its ``last_at``, so it never reorders a list.
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A durably stored message with its position in the conversation."""

    conversation_id: str
    seq: int
    client_id: str
    sender_id: str
    device_id: str
    msg_type: str
    body: bytes
    meta: dict[str, object]
    epoch: int
    nonce: bytes
    sig: bytes
    created_at: float
    #: End-to-end format version; messages stored before version 2 read as 1.
    version: int = 1


@dataclass(frozen=True, slots=True)
class Presence:
    """Whether a user has a live connection anywhere, and when they were last seen."""

    user_id: str
    online: bool
    last_seen: float | None


@dataclass(frozen=True, slots=True)
class Device:
    """A device's public keys (raw 32 bytes each) and its self-signed registration."""

    id: str
    user_id: str
    dh_pub: bytes
    sig_pub: bytes
    registration_sig: bytes
    created_at: float
    removed_at: float | None = None
    #: Chosen by the device at registration ("Firefox sur Android"); shown only to its owner.
    name: str = ""


@dataclass(frozen=True, slots=True)
class EnvelopeRecord:
    """An epoch key wrapped (HPKE) for one device, signed by the sending device."""

    conversation_id: str
    epoch: int
    recipient_device: str
    sender_device: str
    enc: bytes
    ct: bytes
    sig: bytes


@dataclass(frozen=True, slots=True)
class EpochCommitment:
    """An epoch's commitment to its key, signed by the device that created the epoch."""

    conversation_id: str
    epoch: int
    creator_device: str
    commitment: bytes
    sig: bytes


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """A device that should receive the conversation's earlier epoch keys.

    ``approved`` requests are shown to the devices that hold the keys; a
    beneficiary's new phone waits for the counsellor's approval.
    """

    conversation_id: str
    recipient_device: str
    recipient_user: str
    reason: str
    approved: bool
    created_at: float
    done: bool = False


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who did what to a conversation's membership, and when."""

    conversation_id: str
    actor_id: str
    action: str
    details: dict[str, object]
    at: float
