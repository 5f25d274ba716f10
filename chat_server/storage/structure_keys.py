"""The structure-key port: each structure's key (public half, signed) and its grants.

A *structure key* (docs/crypto-format.md, "Structure key") is an X25519 key
pair per structure; the server stores its public half with the creating
device's signature, and one *grant* per staff device (the private half
HPKE-sealed to that device). The server can open neither. Staff devices also
*endorse* the key (their signature over it, checked by young people's clients
before a first pin); the server keeps one endorsement per (key, device).

`MemoryStructureKeyStore` is the in-memory adapter (tests, ``STORE=memory``);
`chat_server.storage.mongo_structure_keys` the MongoDB one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from chat_server.storage.base import Conflict


@dataclass(frozen=True, slots=True)
class StructureKey:
    """A structure's key: its public half, signed by the device that made it."""

    structure_id: str
    key_id: str
    public_key: bytes
    creator_device: str
    creator_user: str
    sig: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """The structure's private key sealed to one device (docs/crypto-format.md)."""

    structure_id: str
    key_id: str
    recipient_device: str
    sender_device: str
    enc: bytes
    ct: bytes
    sig: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class EndorsementRecord:
    """One staff device's signature over the structure key (docs/crypto-format.md)."""

    structure_id: str
    key_id: str
    device_id: str
    user_id: str
    sig: bytes
    created_at: float


class StructureKeyStore(Protocol):
    """Structure keys and their grants."""

    async def create_key(self, key: StructureKey) -> None:
        """Store the structure's first key; raise ``Conflict`` if it already has one.

        Atomic: of concurrent creations exactly one wins.
        """

    async def current_key(self, structure_id: str) -> StructureKey | None:
        """The structure's key, or None."""

    async def add_grants(self, grants: Sequence[GrantRecord]) -> int:
        """Store grants; one per (key, recipient device): a second one is ignored.

        Returns how many were new. Durable before it returns.
        """

    async def grants_for(self, key_id: str, device_ids: Sequence[str]) -> list[GrantRecord]:
        """The grants of this key to these devices, in no particular order."""

    async def add_endorsement(self, endorsement: EndorsementRecord) -> bool:
        """Store an endorsement; one per (key, device): a second one is ignored.

        Returns whether it was new. Durable before it returns.
        """

    async def endorsements_for(
        self, key_id: str, device_ids: Sequence[str]
    ) -> list[EndorsementRecord]:
        """The endorsements of this key by these devices, sorted by device id."""

    async def count_endorsements(self, key_id: str) -> int:
        """How many endorsements this key has."""

    async def remove_endorsements(self, device_id: str) -> int:
        """Delete every endorsement by this device (it was removed); how many."""

    async def remove_grant(self, key_id: str, recipient_device: str) -> bool:
        """Delete the grant of this key to this device; True if there was one.

        Only for a grant written ahead of a key that was then not stored (a
        creation that lost the race): a stored key's grants are never removed.
        """

    async def delete_structure(self, structure_id: str) -> int:
        """Delete the structure's keys, grants and endorsements (erasure of a structure);
        how many."""


class MemoryStructureKeyStore:
    """``StructureKeyStore`` in this process's memory."""

    def __init__(self) -> None:
        self._keys: dict[str, StructureKey] = {}
        self._grants: dict[tuple[str, str], GrantRecord] = {}
        self._endorsements: dict[tuple[str, str], EndorsementRecord] = {}

    async def create_key(self, key: StructureKey) -> None:
        if key.structure_id in self._keys:
            raise Conflict(f"structure {key.structure_id} already has a key")
        self._keys[key.structure_id] = key

    async def current_key(self, structure_id: str) -> StructureKey | None:
        return self._keys.get(structure_id)

    async def add_grants(self, grants: Sequence[GrantRecord]) -> int:
        added = 0
        for g in grants:
            slot = (g.key_id, g.recipient_device)
            if slot not in self._grants:
                self._grants[slot] = g
                added += 1
        return added

    async def grants_for(self, key_id: str, device_ids: Sequence[str]) -> list[GrantRecord]:
        return [g for d in device_ids if (g := self._grants.get((key_id, d))) is not None]

    async def add_endorsement(self, endorsement: EndorsementRecord) -> bool:
        slot = (endorsement.key_id, endorsement.device_id)
        if slot in self._endorsements:
            return False
        self._endorsements[slot] = endorsement
        return True

    async def endorsements_for(
        self, key_id: str, device_ids: Sequence[str]
    ) -> list[EndorsementRecord]:
        found = (self._endorsements.get((key_id, d)) for d in sorted(set(device_ids)))
        return [e for e in found if e is not None]

    async def count_endorsements(self, key_id: str) -> int:
        return sum(1 for k, _ in self._endorsements if k == key_id)

    async def remove_endorsements(self, device_id: str) -> int:
        gone = [s for s in self._endorsements if s[1] == device_id]
        for s in gone:
            del self._endorsements[s]
        return len(gone)
    async def remove_grant(self, key_id: str, recipient_device: str) -> bool:
        return self._grants.pop((key_id, recipient_device), None) is not None

    async def delete_structure(self, structure_id: str) -> int:
        gone = [s for s, g in self._grants.items() if g.structure_id == structure_id]
        for s in gone:
            del self._grants[s]
        ends = [s for s, e in self._endorsements.items() if e.structure_id == structure_id]
        for s in ends:
            del self._endorsements[s]
        return len(gone) + len(ends) + (self._keys.pop(structure_id, None) is not None)
