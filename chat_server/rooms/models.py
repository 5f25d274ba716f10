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


@dataclass(frozen=True, slots=True)
class Presence:
    """Whether a user has a live connection anywhere, and when they were last seen."""

    user_id: str
    online: bool
    last_seen: float | None
