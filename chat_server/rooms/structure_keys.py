"""The structure key on the server side: who may create it, hand it on, and read it.

One X25519 key pair per structure (docs/security.md, "The structure key").
The server stores its public half, signed by the supervisor's device that
made it, and one grant per staff device (the private half sealed to that
device); it can open neither. Every epoch of a conversation of the structure
then carries one more envelope, sealed to the structure key, which the
epoch checks of `chat_server.rooms.keys` require.

Rules:
- only a supervisor's device creates the key (once per structure: the
  first creation wins, a second one is ``structure_key_exists``);
- a grant is handed by a supervisor's device that holds the key (its
  supervisor's client handing it *is* the approval), only to a registered
  device of a counsellor or supervisor of the same structure;
- a device sees its own grant; a supervisor's holder device also sees the
  staff devices still waiting for one;
- a staff device *endorses* the key it verified and pinned (its signature
  over it): only its own endorsement, for its own structure's current key,
  one per device and key, at most ``MAX_ENDORSEMENTS`` per key. The
  conversation listing carries the endorsements by the members' devices,
  which a young person's client checks before its first pin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from chat_server import protocol as p
from chat_server.crypto.encoding import b64decode, b64encode
from chat_server.crypto.errors import MalformedInput
from chat_server.crypto.keys import KEY_LEN
from chat_server.crypto.structure_key import (
    StructureGrant,
    structure_key_id,
    verify_endorsement,
    verify_structure_key,
)
from chat_server.hub import Hub
from chat_server.rooms.errors import E2EEError, Forbidden, InvalidInput
from chat_server.rooms.models import Device, Role, User
from chat_server.storage.base import AccountStore, Conflict, KeyStore
from chat_server.storage.structure_keys import (
    EndorsementRecord,
    GrantRecord,
    StructureKey,
    StructureKeyStore,
)

log = logging.getLogger(__name__)

STAFF = (Role.COUNSELLOR, Role.SUPERVISOR)
#: Grants accepted in one request (a structure's staff devices: 10 per person).
MAX_GRANTS = 500
#: Endorsements kept per key (one per staff device: 100 people with 10 devices each).
MAX_ENDORSEMENTS = 1000


def structure_key_json(key: StructureKey) -> dict[str, Any]:
    """The structure key's public JSON (docs/protocol.md)."""
    return {
        "structure": key.structure_id,
        "key_id": key.key_id,
        "public_key": b64encode(key.public_key),
        "creator_device": key.creator_device,
        "creator_user": key.creator_user,
        "sig": b64encode(key.sig),
        "created_at": key.created_at,
    }


def endorsement_json(e: EndorsementRecord) -> dict[str, Any]:
    """An endorsement as listed with the key (docs/protocol.md)."""
    return {"device_id": e.device_id, "user_id": e.user_id, "sig": b64encode(e.sig)}


def grant_json(g: GrantRecord) -> dict[str, Any]:
    """A grant's JSON (docs/crypto-format.md)."""
    return StructureGrant(
        g.structure_id, g.key_id, g.recipient_device, g.sender_device, g.enc, g.ct, g.sig
    ).to_json()


class StructureKeyService:
    """Create the structure key, hand it to staff devices, and show each device its grant."""

    def __init__(
        self,
        store: StructureKeyStore,
        keys: KeyStore,
        accounts: AccountStore,
        hub: Hub,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._keys = keys
        self._accounts = accounts
        self._hub = hub
        self._clock = clock

    async def current(self, structure_id: str | None) -> StructureKey | None:
        """The structure's key, or None (no structure, or no key yet)."""
        return None if structure_id is None else await self._store.current_key(structure_id)

    async def listed(self, key: StructureKey, device_ids: Sequence[str]) -> dict[str, Any]:
        """The key's JSON with ``endorsements``: those by these devices, by device id."""
        out = structure_key_json(key)
        found = await self._store.endorsements_for(key.key_id, device_ids)
        out["endorsements"] = [endorsement_json(e) for e in found]
        return out

    async def _staff_device(self, user: User, device_id: str) -> tuple[str, Device]:
        if user.role not in STAFF or user.structure_id is None:
            raise Forbidden("only a structure's counsellors and supervisors hold its key")
        device = await self._keys.get_device(device_id)
        if device is None or device.removed_at is not None or device.user_id != user.id:
            raise E2EEError("unknown_device", "register this device's keys first")
        return user.structure_id, device

    async def holds(self, key: StructureKey, device_id: str) -> bool:
        """Whether this device was handed the key."""
        return bool(await self._store.grants_for(key.key_id, [device_id]))

    async def view(self, user: User, device_id: str) -> dict[str, Any]:
        """The structure key, this device's grant (with its sender's keys), and, for a
        supervisor's holder device, the staff devices waiting for a grant."""
        structure_id, device = await self._staff_device(user, device_id)
        key = await self._store.current_key(structure_id)
        out: dict[str, Any] = {
            "structure": structure_id,
            "key": None,
            "grant": None,
            "waiting": [],
        }
        if key is None:
            return out
        out["key"] = structure_key_json(key)
        out["key"]["endorsed"] = bool(await self._store.endorsements_for(key.key_id, [device.id]))
        creator = await self._keys.get_device(key.creator_device)
        if creator is not None:
            out["key"]["creator_sig_pub"] = b64encode(creator.sig_pub)
        mine = await self._store.grants_for(key.key_id, [device.id])
        if mine:
            item = grant_json(mine[0])
            sender = await self._keys.get_device(mine[0].sender_device)
            if sender is not None:
                item["sender_user"] = sender.user_id
                item["sender_sig_pub"] = b64encode(sender.sig_pub)
            out["grant"] = item
        if user.role is Role.SUPERVISOR and mine:
            out["waiting"] = await self._waiting(structure_id, key)
        return out

    async def _staff_devices(self, structure_id: str) -> list[tuple[User, Device]]:
        people: dict[str, User] = {}
        for role in STAFF:
            for u in await self._accounts.users_in_structure(structure_id, role):
                people[u.id] = u
        return [
            (people[d.user_id], d)
            for d in await self._keys.devices_of(sorted(people))
            if d.removed_at is None
        ]

    async def _waiting(self, structure_id: str, key: StructureKey) -> list[dict[str, Any]]:
        devices = await self._staff_devices(structure_id)
        held = {
            g.recipient_device
            for g in await self._store.grants_for(key.key_id, [d.id for _, d in devices])
        }
        return [
            {
                "device_id": d.id,
                "user_id": u.id,
                "role": u.role.value,
                "dh_pub": b64encode(d.dh_pub),
                "sig_pub": b64encode(d.sig_pub),
                "registration_sig": b64encode(d.registration_sig),
            }
            for u, d in devices
            if d.id not in held
        ]

    def _grant(self, doc: Any) -> StructureGrant:
        try:
            return StructureGrant.from_json(doc)
        except MalformedInput as exc:
            raise InvalidInput(f"bad grant: {exc}") from None

    async def create(
        self, user: User, device_id: str, public_key: str, sig: str, grant: Any
    ) -> StructureKey:
        """A supervisor's device makes the structure key, with its own grant.

        ``structure_key_exists`` (409) if the structure has one already. The
        grant is stored before the key, so the key never exists without its
        creator's grant; a creation that loses a race removes its grant again.
        """
        structure_id, device = await self._staff_device(user, device_id)
        if user.role is not Role.SUPERVISOR:
            raise Forbidden("only a supervisor creates the structure key")
        try:
            pub = b64decode(public_key, length=KEY_LEN, what="public_key")
            signature = b64decode(sig, length=64, what="sig")
        except MalformedInput as exc:
            raise InvalidInput(str(exc)) from None
        if not verify_structure_key(device.sig_pub, structure_id, pub, device.id, signature):
            raise E2EEError(
                "bad_structure_key_signature",
                "the structure key must be signed by the creating device",
            )
        key_id = structure_key_id(pub)
        own = self._grant(grant)
        if (
            own.structure != structure_id
            or own.key_id != key_id
            or own.recipient_device != device.id
            or own.sender_device != device.id
            or not own.verify(device.sig_pub)
        ):
            raise E2EEError(
                "bad_grant", "the creating device's own grant must be for itself, signed by it"
            )
        now = self._clock()
        key = StructureKey(structure_id, key_id, pub, device.id, user.id, signature, now)
        # The creator's grant is written first, so a stored key always has one
        # (a key nobody holds could never be handed on). A failure after this
        # write leaves at most a grant of a key id no structure has: it opens
        # nothing anyone is served, and the structure's erasure deletes it.
        await self._store.add_grants([_record(own, now)])
        try:
            await self._store.create_key(key)
        except Conflict:
            # Another creation won: this grant's key will never exist, drop it;
            # unless the stored key is this very one (a retry of a creation
            # whose answer was lost), whose grant it is.
            winner = await self._store.current_key(structure_id)
            if winner is None or winner.key_id != key_id:
                await self._store.remove_grant(key_id, device.id)
            raise StructureKeyExists() from None
        log.info("structure key created", extra={"user_id": user.id, "device_id": device.id})
        await self.announce(structure_id)
        return key

    async def add_grants(self, user: User, device_id: str, docs: Sequence[Any]) -> int:
        """A supervisor's holder device hands the key to staff devices; how many were new."""
        structure_id, device = await self._staff_device(user, device_id)
        if user.role is not Role.SUPERVISOR:
            raise Forbidden("the structure key is handed on by a supervisor's device")
        key = await self._store.current_key(structure_id)
        if key is None or not await self.holds(key, device.id):
            raise E2EEError("structure_key_not_held", "this device does not hold the structure key")
        staff = {d.id: d for _, d in await self._staff_devices(structure_id)}
        grants = [self._grant(doc) for doc in docs]
        for g in grants:
            if g.structure != structure_id or g.key_id != key.key_id:
                raise E2EEError("bad_grant", "a grant names another structure or key")
            if g.recipient_device not in staff:
                raise E2EEError(
                    "grant_recipient_not_staff",
                    f"device {g.recipient_device} is not a staff device of the structure",
                )
            if g.sender_device != device.id or not g.verify(device.sig_pub):
                raise E2EEError("bad_grant", "grants must be signed by this device")
        now = self._clock()
        added = await self._store.add_grants([_record(g, now) for g in grants])
        if added:
            await self.announce(structure_id)
        return added

    async def endorse(
        self, user: User, device_id: str, structure: str, key_id: str, endorser: str, sig: str
    ) -> bool:
        """This staff device endorses its structure's current key; whether it was new.

        ``endorser`` must be this session's device and ``sig`` (base64url) its
        signature (docs/crypto-format.md, "Structure key"). Refusals:
        ``forbidden`` (not staff, or another structure), ``unknown_device``,
        ``bad_endorsement`` (another device than this session's),
        ``unknown_structure_key`` (not the current key), ``bad_endorsement_signature``,
        ``too_many_endorsements``. Nothing is stored on a refusal; a second
        endorsement of the same key by the same device stores nothing either.
        """
        structure_id, device = await self._staff_device(user, device_id)
        try:
            signature = b64decode(sig, length=64, what="sig")
        except MalformedInput as exc:
            raise InvalidInput(str(exc)) from None
        if structure != structure_id:
            raise Forbidden("the structure key of another structure is not yours to endorse")
        if endorser != device.id:
            raise E2EEError("bad_endorsement", "a device endorses the key for itself only")
        key = await self._store.current_key(structure_id)
        if key is None or key.key_id != key_id:
            raise E2EEError("unknown_structure_key", "this is not the structure's current key")
        if not verify_endorsement(
            device.sig_pub, structure_id, key.key_id, key.public_key, device.id, signature
        ):
            raise E2EEError(
                "bad_endorsement_signature", "the endorsement must be signed by this device"
            )
        if await self._store.endorsements_for(key.key_id, [device.id]):
            return False
        if await self._store.count_endorsements(key.key_id) >= MAX_ENDORSEMENTS:
            raise TooManyEndorsements()
        added = await self._store.add_endorsement(
            EndorsementRecord(
                structure_id, key.key_id, device.id, user.id, signature, self._clock()
            )
        )
        if added:
            log.info("structure key endorsed", extra={"user_id": user.id, "device_id": device.id})
        return added

    async def forget_device(self, device_id: str) -> None:
        """Delete the endorsements of a device being removed (``KeyService.remove_device``):
        the cap of ``MAX_ENDORSEMENTS`` per key counts only devices that still exist."""
        if await self._store.remove_endorsements(device_id):
            log.info(
                "structure key endorsements of a removed device deleted",
                extra={"device_id": device_id},
            )

    async def announce(self, structure_id: str) -> None:
        """Tell the structure's staff to fetch ``GET /api/structure-key`` again."""
        people: set[str] = set()
        for role in STAFF:
            people.update(u.id for u in await self._accounts.users_in_structure(structure_id, role))
        frame = p.encode_text(p.StructureKeyUpdated(structure=structure_id))
        await self._hub.publish(sorted(people), frame)


class StructureKeyExists(E2EEError):
    """The structure has a key already."""

    status = 409

    def __init__(self) -> None:
        super().__init__("structure_key_exists", "this structure has a key: fetch it")


class TooManyEndorsements(E2EEError):
    """The key has ``MAX_ENDORSEMENTS`` already."""

    status = 409

    def __init__(self) -> None:
        super().__init__(
            "too_many_endorsements", f"a structure key keeps at most {MAX_ENDORSEMENTS}"
        )


def _record(g: StructureGrant, now: float) -> GrantRecord:
    return GrantRecord(
        g.structure, g.key_id, g.recipient_device, g.sender_device, g.enc, g.ct, g.sig, now
    )
