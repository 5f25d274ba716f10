"""End-to-end keys on the server side: devices, epochs, envelopes, re-shares, transfers.

The server never holds a key that opens anything. It stores device public
keys, epoch envelopes (HPKE-sealed to one device each), encrypted backups,
and it checks signatures so that nobody can store a message or an envelope
in another device's name.

Who may receive envelopes of a conversation (the *authorised devices*): the
registered devices of its two members, and the structure key
(`chat_server.rooms.structure_keys`) once the structure has one. Nobody else:
the supervisors' devices, which the server alone lists, are not sealed to (the
*escrow* of earlier versions, before the structure key; the envelopes they got
then are still served to them). A beneficiary's additional device is held back
until the counsellor approves it: it is listed nowhere and gets nothing before that.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chat_server import protocol as p
from chat_server.crypto.commitment import COMMITMENT_LEN, verify_commitment_signature
from chat_server.crypto.encoding import b64encode
from chat_server.crypto.envelope import Envelope, verify_envelope_signature
from chat_server.crypto.errors import MalformedInput
from chat_server.crypto.keys import DevicePublicKeys, verify_registration
from chat_server.crypto.message import FORMAT_VERSION, aad_head_v2, signed_bytes_v2
from chat_server.crypto.meta import canonical_meta
from chat_server.crypto.structure_key import structure_recipient
from chat_server.crypto.verify_pool import Backlogged, SignatureChecks
from chat_server.hub import Hub
from chat_server.rooms.errors import (
    ConversationDeleted,
    E2EEError,
    Forbidden,
    InvalidInput,
    NotFound,
    NotMember,
    Overloaded,
)
from chat_server.rooms.models import (
    AuditRecord,
    Conversation,
    Device,
    EnvelopeRecord,
    EpochCommitment,
    KeyRequest,
    NewMessage,
    Role,
    User,
)
from chat_server.rooms.service import ConversationService
from chat_server.rooms.structure_keys import StructureKeyService
from chat_server.storage.base import AccountStore, Conflict, KeyStore, MessageStore
from chat_server.storage.structure_keys import StructureKey

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_DEVICE_CACHE_SECONDS = 2.0
MAX_DEVICES_PER_USER = 10
#: Envelopes kept for one (recipient device, epoch): the epoch's own and every re-wrap.
MAX_ENVELOPES_PER_DEVICE_EPOCH = 32
#: Structure envelopes kept for one epoch *per sending user* (one per sending device, as
#: many devices as an account may have): one party's envelopes never fill the slot
#: against another's. The parties that may send them are few (the two members, the
#: previous counsellor, the structure's supervisors), which bounds the total.
MAX_STRUCTURE_ENVELOPES_PER_USER = MAX_DEVICES_PER_USER


class E2EEVerifier:
    """The checks of ``message.send`` when end-to-end encryption is required.

    Refuses, each with its own code: an unknown or removed device, a device
    of someone who is not a member, a conversation waiting for a new epoch,
    an epoch that is not the current one, a malformed ciphertext, and a bad
    signature. (A reused nonce is refused by the store's unique index.)

    The signature itself is verified by ``checks`` (a thread pool, see
    `chat_server.crypto.verify_pool`; inline when None): the coroutine waits
    for it, so nothing is stored or acknowledged before it says yes. When the
    pool is too far behind it refuses with ``overloaded`` (`Overloaded`).
    """

    def __init__(self, keys: KeyStore, checks: SignatureChecks | None = None) -> None:
        self._keys = keys
        self._checks = SignatureChecks(0) if checks is None else checks
        self._cache: dict[str, tuple[float, Device | None]] = {}
        # aad_head_v2 per (conversation, epoch, device): the same for all their messages.
        self._heads: dict[tuple[str, int, str], bytes] = {}
        self._cleared: set[tuple[str, str]] = set()

    async def _is_pending(self, conversation_id: str, device_id: str) -> bool:
        """Whether the device waits for approval in this conversation.

        A device is pending only from its registration until its approval and
        never again, so "not pending" is remembered; "pending" is re-read.
        """
        key = (conversation_id, device_id)
        if key in self._cleared:
            return False
        pending = any(
            r.recipient_device == device_id and not r.approved and r.reason == "new_device"
            for r in await self._keys.key_requests([conversation_id])
        )
        if not pending:
            if len(self._cleared) > 200_000:
                self._cleared.clear()
            self._cleared.add(key)
        return pending

    def _cached_device(self, device_id: str) -> Device | None:
        """The device if the cache has it from the last ``_DEVICE_CACHE_SECONDS``."""
        hit = self._cache.get(device_id)
        if hit is not None and time.monotonic() - hit[0] < _DEVICE_CACHE_SECONDS:
            return hit[1]
        return None

    async def _device(self, device_id: str) -> Device | None:
        device = self._cached_device(device_id)
        if device is not None:
            return device
        now = time.monotonic()
        device = await self._keys.get_device(device_id)
        if len(self._cache) > 50_000:
            self._cache.clear()
        if device is not None:  # an unknown device may register any moment: never cached
            self._cache[device_id] = (now, device)
        return device

    def _signed_bytes(
        self, conversation_id: str, device_id: str, message: NewMessage, meta: bytes
    ) -> bytes | None:
        """What the device signed (format version 2); None if a field cannot be encoded."""
        key = (conversation_id, message.epoch, device_id)
        try:
            head = self._heads.get(key)
            if head is None:
                if len(self._heads) > 50_000:
                    self._heads.clear()
                head = self._heads[key] = aad_head_v2(conversation_id, message.epoch, device_id)
            return signed_bytes_v2(
                head, message.client_id, message.msg_type, meta, message.nonce, message.body
            )
        except MalformedInput:
            return None

    async def check_message(self, conversation: Conversation, message: NewMessage) -> None:
        # The device from the cache without a coroutine when it is there (every message
        # but the first of a device in _DEVICE_CACHE_SECONDS), else from the store.
        device = self._cached_device(message.device_id) or await self._device(message.device_id)
        if device is None or device.removed_at is not None:
            raise E2EEError("unknown_device", "this device has no registered keys")
        if device.user_id != message.sender_id or device.user_id not in conversation.members:
            raise E2EEError("device_not_in_conversation", "this device does not belong to a member")
        if (conversation.id, device.id) not in self._cleared and await self._is_pending(
            conversation.id, device.id
        ):
            raise E2EEError(
                "device_pending_approval",
                "this new device is waiting for the counsellor's approval",
            )
        if conversation.rotation_required or conversation.epoch == 0:
            raise E2EEError(
                "epoch_rotation_required",
                f"create epoch {conversation.epoch + 1} before sending",
            )
        if message.epoch != conversation.epoch:
            raise E2EEError(
                "stale_epoch",
                f"epoch {message.epoch} is not the current epoch {conversation.epoch}",
            )
        if len(message.nonce) != 12 or len(message.body) < 16:
            raise E2EEError("malformed_ciphertext", "nonce must be 12 bytes, body at least 16")
        if message.version != FORMAT_VERSION:
            raise E2EEError(
                "unsupported_format_version",
                f"messages are written in format version {FORMAT_VERSION} ('v': {FORMAT_VERSION})",
            )
        try:
            meta = canonical_meta(message.meta)
        except MalformedInput as exc:
            raise E2EEError("meta_not_canonical", str(exc)) from None
        signed = self._signed_bytes(conversation.id, device.id, message, meta)
        try:
            valid = signed is not None and await self._checks.verify(
                device.sig_pub, signed, message.sig
            )
        except Backlogged:
            raise Overloaded(
                "the server is busy checking signatures; nothing was stored; retry in a moment"
            ) from None
        if not valid:
            raise E2EEError(
                "bad_signature",
                "the signature does not verify with this device's key over these fields "
                "(conversation, epoch, client_id, msg_type, meta, body)",
            )


def device_json(d: Device) -> dict[str, Any]:
    """A device's public part, in the key API's encoding (base64url)."""
    return {
        "device_id": d.id,
        "user_id": d.user_id,
        "dh_pub": b64encode(d.dh_pub),
        "sig_pub": b64encode(d.sig_pub),
        "registration_sig": b64encode(d.registration_sig),
        "created_at": d.created_at,
    }


def envelope_record(e: Envelope, conversation_id: str) -> EnvelopeRecord:
    """Store form of a checked envelope."""
    return EnvelopeRecord(
        conversation_id, e.epoch, e.recipient_device, e.sender_device, e.enc, e.ct, e.sig
    )


def envelope_json(e: EnvelopeRecord) -> dict[str, Any]:
    """The envelope JSON of docs/crypto-format.md."""
    return Envelope(
        e.conversation_id, e.epoch, e.recipient_device, e.sender_device, e.enc, e.ct, e.sig
    ).to_json()


@dataclass(frozen=True, slots=True)
class DeviceSets:
    """The devices of a conversation: members' and held-back ones, and the structure key."""

    members: dict[str, list[Device]]
    pending: set[str]
    #: The structure's key: every epoch has one more envelope, sealed to it.
    structure: StructureKey | None = None

    def authorised(self) -> dict[str, Device]:
        """Every recipient that must get an envelope, by id (the structure key's
        recipient id included, as a pseudo-device holding its public half)."""
        out: dict[str, Device] = {}
        for devices in self.members.values():
            for d in devices:
                if d.id not in self.pending:
                    out[d.id] = d
        if self.structure is not None:
            rid = structure_recipient(self.structure.key_id)
            out[rid] = Device(
                rid,
                "structure:" + self.structure.structure_id,
                self.structure.public_key,
                b"",
                self.structure.sig,
                self.structure.created_at,
            )
        return out


class KeyService:
    """Device registration, epochs, envelopes, key requests, backups and transfers."""

    def __init__(
        self,
        keys: KeyStore,
        messages: MessageStore,
        accounts: AccountStore,
        conversations: ConversationService,
        hub: Hub,
        clock: Clock,
    ) -> None:
        self._keys = keys
        self._messages = messages
        self._accounts = accounts
        self._conversations = conversations
        self._hub = hub
        self._clock = clock
        #: Called when a device waits for the counsellor's approval (the push outbox).
        self.on_key_request: Callable[[Conversation, str], Awaitable[None]] | None = None
        #: The structure keys (set by the wiring); None: no structure envelopes.
        self.structure: StructureKeyService | None = None

    # ------------------------------------------------------------------ devices

    async def register_device(
        self,
        user: User,
        device_id: str,
        dh_pub: bytes,
        sig_pub: bytes,
        registration_sig: bytes,
        *,
        name: str = "",
        vouched: bool = False,
    ) -> tuple[Device, bool]:
        """Register the session's device; returns ``(device, created)``.

        The registration must be signed by the device's own Ed25519 key. A
        second registration with the same keys is a no-op; other keys for a
        known device id are refused (``device_exists``). ``vouched``: a device
        the caller's own approved device made for itself (a recovery-key
        renewal, ``chat_server.tools.devices``): approved at once, and nobody
        is asked for keys, because the vouching device re-wraps them.
        """
        public = DevicePublicKeys(dh_pub, sig_pub) if _sizes_ok(dh_pub, sig_pub) else None
        if public is None or not verify_registration(public, user.id, device_id, registration_sig):
            raise E2EEError("bad_registration_signature", "the registration signature is invalid")
        existing = await self._keys.get_device(device_id)
        if existing is not None:
            if (
                existing.user_id == user.id
                and existing.sig_pub == sig_pub
                and (existing.dh_pub == dh_pub and existing.removed_at is None)
            ):
                return existing, False
            raise E2EEError("device_exists", "this device id is already registered")
        if len(await self._keys.devices_of([user.id])) >= MAX_DEVICES_PER_USER:
            raise E2EEError(
                "too_many_devices",
                f"at most {MAX_DEVICES_PER_USER} devices per account: remove one first",
            )
        # A beneficiary's one trusted first device is the one that proved the
        # activation code (claimed at activation), or for an account given a
        # password, the first to claim it, atomically: of concurrent registrations
        # exactly one is trusted. Any other (even after removing the old ones)
        # waits for the counsellor. Its pending requests are written before the
        # device exists, so it is never seen un-pending.
        approved = (
            vouched
            or user.role is not Role.BENEFICIARY
            or await self._accounts.claim_first_device(
                user.id, device_id, claim=await self._keys.ever_registered(user.id) == 0
            )
        )
        convs = await self._conversations_of(user)
        now = self._clock()
        if not approved:
            for conv in convs:
                await self._keys.put_key_request(
                    KeyRequest(conv.id, device_id, user.id, "new_device", False, now)
                )
        device = Device(device_id, user.id, dh_pub, sig_pub, registration_sig, now, name=name)
        try:
            await self._keys.add_device(device)
        except Conflict:
            raise E2EEError("device_exists", "this device id is already registered") from None
        # The first phone of an account whose counsellor left the activation box
        # takes its keys from the box: nobody is asked to re-wrap for it.
        carried = vouched or (
            approved
            and user.role is Role.BENEFICIARY
            and await self._accounts.activation_box(user.id) is not None
        )
        await self._device_changed(user, device, "added", convs, approved, ask=not carried)
        if self.structure is not None and user.role is not Role.BENEFICIARY and user.structure_id:
            # A new staff device waits for the structure key: the supervisors' consoles hand it.
            await self.structure.announce(user.structure_id)
        return device, True

    async def _conversations_of(self, user: User) -> list[Conversation]:
        """Where a change of this user's devices is announced: as a member, or, for a
        supervisor, every conversation of the structure (her devices may hold its
        structure key, and the escrow envelopes of earlier versions)."""
        if user.role is Role.SUPERVISOR and user.structure_id:
            return await self._messages.conversations_in_structure(user.structure_id)
        return await self._messages.conversations_for(user.id)

    async def _device_changed(
        self,
        user: User,
        device: Device,
        change: str,
        convs: Sequence[Conversation],
        approved: bool = True,
        ask: bool = True,
    ) -> None:
        """Post the change in every conversation the device reads; rotate or ask for keys."""
        for conv in convs:
            await self._conversations.post_system(
                conv,
                "system.device_changed",
                {"user": user.id, "device": device.id, "change": change},
                client_id=f"device-{change}-{device.id}",
                actor=user.id,
            )
            if change == "removed":
                await self._keys.require_rotation(conv.id)
                await self._announce(conv.id)
                continue
            if conv.epoch == 0 or not ask or user.id not in conv.members:
                continue  # only a member's device is given the epoch keys
            await self._request_keys(conv, user, device.id, "new_device", approved)

    async def list_devices(self, user: User) -> list[Device]:
        """The caller's registered devices."""
        return await self._keys.devices_of([user.id])

    async def remove_device(self, user: User, device_id: str) -> None:
        """Remove one of the caller's devices and end its sessions.

        Every conversation of the user then needs a new epoch, which the
        removed device does not get.
        """
        device = await self._keys.get_device(device_id)
        if device is None or device.user_id != user.id:
            raise NotFound("no such device")
        if self.structure is not None:
            # First, so that a retry after a failure cleans up too: a removed device's
            # endorsements no longer count against the key's cap, and are never listed.
            await self.structure.forget_device(device_id)
        if await self._keys.remove_device(device_id, self._clock()):
            await self._accounts.delete_device_sessions(user.id, device_id)
            await self._hub.revoke(user.id, "device:" + device_id)
            convs = await self._conversations_of(user)
            await self._device_changed(user, device, "removed", convs)

    async def device_sets(self, conv: Conversation) -> DeviceSets:
        """Members' and held-back devices of a conversation, and its structure key.

        The supervisors' devices are not among them (no escrow): a supervisor
        reads a conversation with the structure key, handed by a supervisor's
        click, so a "supervisor" device the server adds receives nothing, with
        or without a structure key.
        """
        members = list(conv.members)
        structure = None
        if self.structure is not None:
            structure = await self.structure.current(conv.structure_id)
        devices = await self._keys.devices_of(members)
        by_user: dict[str, list[Device]] = {}
        for d in devices:
            by_user.setdefault(d.user_id, []).append(d)
        pending = {
            r.recipient_device
            for r in await self._keys.key_requests([conv.id])
            if not r.approved and r.reason == "new_device"
        }
        return DeviceSets({u: by_user.get(u, []) for u in members}, pending, structure)

    async def readable_conversation(self, user: User, conversation_id: str) -> Conversation:
        """A conversation the caller may see keys of: a member, or a supervisor of its structure."""
        conv = await self._messages.get_conversation(conversation_id)
        if conv is None:
            raise NotMember("you are not a member of this conversation")
        if user.id in conv.members:
            return conv
        if (
            user.role is Role.SUPERVISOR
            and conv.structure_id is not None
            and conv.structure_id == user.structure_id
        ):
            return conv
        raise NotMember("you are not a member of this conversation")

    async def conversation_devices(self, user: User, conversation_id: str) -> dict[str, Any]:
        """What a client needs to wrap an epoch: every authorised device, grouped.

        The previous counsellor, who still holds the earlier epochs' keys, may
        read it too: to re-wrap them for the new counsellor after a transfer.
        """
        conv = await self._messages.get_conversation(conversation_id)
        if conv is None or user.id != conv.previous_counsellor_id:
            conv = await self.readable_conversation(user, conversation_id)
        sets = await self.device_sets(conv)
        users = await self._accounts.get_users(list(sets.members))
        members = [
            {
                "user_id": uid,
                "role": users[uid].role.value if uid in users else None,
                "devices": [device_json(d) for d in ds if d.id not in sets.pending],
            }
            for uid, ds in sets.members.items()
        ]
        return {
            "conversation": conv.id,
            "epoch": conv.epoch,
            "rotation_required": conv.rotation_required,
            "members": members,
            # Always empty (kept for clients of earlier versions): nobody outside the
            # members is sealed to, except the structure key.
            "escrow": [],
            "pending": sorted(sets.pending),
            "structure_key": await self._structure_listed(conv, sets),
        }

    async def _structure_listed(
        self, conv: Conversation, sets: DeviceSets
    ) -> dict[str, Any] | None:
        """The structure key's JSON with the endorsements by the members' devices and the
        previous counsellor's (a young person's client that knew them as her counsellor's
        accepts those too: a transfer to someone who never logged in)."""
        key = sets.structure
        if key is None or self.structure is None:
            return None
        ids = [d.id for ds in sets.members.values() for d in ds if d.id not in sets.pending]
        previous = conv.previous_counsellor_id
        if previous is not None and previous not in sets.members:
            ids += [d.id for d in await self._keys.devices_of([previous])]
        return await self.structure.listed(key, ids)

    # ------------------------------------------------------------------ epochs

    async def _sender_device(self, user: User, device_id: str) -> Device:
        device = await self._keys.get_device(device_id)
        if device is None or device.removed_at is not None or device.user_id != user.id:
            raise E2EEError("unknown_device", "register this device's keys first")
        return device

    def _parse(self, conv: Conversation, sender: Device, docs: Sequence[Any]) -> list[Envelope]:
        out = []
        for doc in docs:
            try:
                env = Envelope.from_json(doc)
            except ValueError as exc:
                raise InvalidInput(f"bad envelope: {exc}") from None
            if env.conversation != conv.id:
                raise InvalidInput("an envelope names another conversation")
            if env.sender_device != sender.id:
                raise E2EEError("bad_envelope_signature", "envelopes must be sent by this device")
            if not verify_envelope_signature(env, sender.sig_pub):
                raise E2EEError("bad_envelope_signature", "an envelope's signature is invalid")
            out.append(env)
        return out

    async def create_epoch(
        self,
        user: User,
        device_id: str,
        conversation_id: str,
        epoch: int,
        docs: Sequence[Any],
        commitment: bytes = b"",
        commitment_sig: bytes = b"",
    ) -> int:
        """Create epoch ``epoch`` (= current + 1) with one envelope per authorised device
        and the creator's signed commitment to the key (docs/crypto-format.md).

        Safe under races: the epoch is one atomic insert; the loser gets
        ``epoch_conflict`` (HTTP 409) and should fetch the winner's envelope.
        """
        conv = await self._conversations.member_conversation(user.id, conversation_id)
        sender = await self._sender_device(user, device_id)
        if epoch != conv.epoch + 1:
            raise EpochConflict(conv.epoch)
        envs = self._parse(conv, sender, docs)
        if any(e.epoch != epoch for e in envs):
            raise InvalidInput("every envelope must be for the new epoch")
        sets = await self.device_sets(conv)
        _refuse_pending(sets, sender)
        authorised = sets.authorised()
        recipients = [e.recipient_device for e in envs]
        extra = sorted(set(recipients) - set(authorised))
        if extra:
            raise E2EEError(
                "envelope_recipient_not_authorised",
                f"devices outside the conversation: {', '.join(extra)}",
            )
        missing = sorted(set(authorised) - set(recipients))
        if missing or len(recipients) != len(set(recipients)):
            raise E2EEError(
                "envelope_missing_recipient",
                f"one envelope per device is required; missing: {', '.join(missing)}",
            )
        if len(commitment) != COMMITMENT_LEN or not verify_commitment_signature(
            sender.sig_pub, conv.id, epoch, sender.id, commitment, commitment_sig
        ):
            raise E2EEError(
                "bad_commitment",
                "an epoch needs the key commitment signed by the creating device",
            )
        try:
            await self._keys.add_epoch(
                conv.id,
                epoch,
                sender.id,
                [envelope_record(e, conv.id) for e in envs],
                self._clock(),
                conv.counsellor_id,
                EpochCommitment(conv.id, epoch, sender.id, commitment, commitment_sig),
            )
        except Conflict:
            current = await self._messages.get_conversation(conv.id)
            raise EpochConflict(current.epoch if current else conv.epoch) from None
        await self._conversations.post_system(
            conv,
            "system.epoch_rotated",
            {"epoch": epoch, "by": user.id, "device": sender.id},
            client_id=f"epoch-{epoch}",
            actor=user.id,
        )
        await self._announce(conv.id)
        return epoch

    async def add_envelopes(
        self, user: User, device_id: str, conversation_id: str, docs: Sequence[Any]
    ) -> int:
        """Re-wrap earlier epochs for authorised devices (a transfer, a new phone)."""
        conv = await self._messages.get_conversation(conversation_id)
        if conv is None:
            raise NotMember("you are not a member of this conversation")
        holders = set(conv.members)
        if conv.previous_counsellor_id:
            holders.add(conv.previous_counsellor_id)
        if user.id not in holders:
            await self.readable_conversation(user, conversation_id)
        sender = await self._sender_device(user, device_id)
        envs = self._parse(conv, sender, docs)
        sets = await self.device_sets(conv)
        _refuse_pending(sets, sender)
        authorised = sets.authorised()
        held = (await self._keys.epochs_held(conv.id, [sender.id]))[sender.id]
        for e in envs:
            if e.recipient_device not in authorised:
                raise E2EEError(
                    "envelope_recipient_not_authorised",
                    f"device {e.recipient_device} is not in the conversation",
                )
            if not 1 <= e.epoch <= conv.epoch:
                raise InvalidInput(f"epoch {e.epoch} does not exist")
            if e.epoch not in held:
                # Only a device that was given an epoch key may pass it on.
                raise E2EEError(
                    "epoch_not_held", f"this device never received the key of epoch {e.epoch}"
                )
        structure_rid = sets.structure and structure_recipient(sets.structure.key_id)
        sealers: dict[int, dict[str, int]] | None = None
        for slot in sorted({(e.epoch, e.recipient_device) for e in envs}):
            if slot[1] == structure_rid:
                if sealers is None:
                    sealers = await self._structure_sealers(conv.id, structure_rid)
                if sealers.get(slot[0], {}).get(user.id, 0) >= MAX_STRUCTURE_ENVELOPES_PER_USER:
                    raise E2EEError(
                        "too_many_envelopes",
                        f"your devices already sealed epoch {slot[0]} to the structure key "
                        f"{MAX_STRUCTURE_ENVELOPES_PER_USER} times",
                    )
                continue
            if await self._keys.count_envelopes(conv.id, *slot) >= MAX_ENVELOPES_PER_DEVICE_EPOCH:
                raise E2EEError(
                    "too_many_envelopes",
                    f"device {slot[1]} already has {MAX_ENVELOPES_PER_DEVICE_EPOCH} envelopes "
                    f"for epoch {slot[0]}",
                )
        added = await self._keys.add_envelopes([envelope_record(e, conv.id) for e in envs])
        await self._close_satisfied(conv, {e.recipient_device for e in envs})
        for recipient in sorted({e.recipient_device for e in envs}):
            frame = p.KeysAvailable(conversation=conv.id, device=recipient)
            await self._hub.publish([authorised[recipient].user_id], p.encode_text(frame))
        return added

    async def _close_satisfied(self, conv: Conversation, devices: set[str]) -> None:
        if not devices:
            return
        held = await self._keys.epochs_held(conv.id, sorted(devices))
        want = set(range(1, conv.epoch + 1))
        for device_id, epochs in held.items():
            if want <= epochs:
                await self._keys.close_key_request(conv.id, device_id)

    async def commitments_for(self, conversation_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The signed key commitments of these conversations' epochs, in JSON."""
        return [
            {
                "conversation": c.conversation_id,
                "epoch": c.epoch,
                "creator_device": c.creator_device,
                "commitment": b64encode(c.commitment),
                "sig": b64encode(c.sig),
            }
            for c in await self._keys.commitments(sorted(set(conversation_ids)))
        ]

    async def envelopes_for(
        self, device_id: str, conversation_id: str | None
    ) -> list[dict[str, Any]]:
        """Envelopes addressed to this device, each with its sender's user and signing key.

        Every envelope offered is listed (several per epoch when re-wrapped by
        several holders); the client keeps the one whose key matches the
        epoch's commitment.
        """
        envs = await self._keys.envelopes_for(device_id, conversation_id)
        senders: dict[str, Device | None] = {}
        out = []
        for e in envs:
            if e.sender_device not in senders:
                senders[e.sender_device] = await self._keys.get_device(e.sender_device)
            sender = senders[e.sender_device]
            item = envelope_json(e)
            if sender is not None:
                item["sender_user"] = sender.user_id
                item["sender_sig_pub"] = b64encode(sender.sig_pub)
            out.append(item)
        return out

    async def structure_envelopes(
        self, user: User, device_id: str, conversation_id: str
    ) -> dict[str, Any] | None:
        """A member's view of its conversation's structure envelopes, or None (no key).

        ``missing_epochs``: the epochs this device was given (it has an
        envelope for them, so it may pass them on) that no device of *this
        user* has sealed to the structure key yet (created before the key
        existed, or sealed only by someone else); the member's client seals
        them. Per user, so that a junk structure envelope from one member (a
        hostile party, a poisoned re-wrap) never stops the other from adding
        the right one: a reader tries each against the epoch's commitment.
        ``envelopes``: the structure envelopes themselves, only for a member's
        device that holds the structure key (a grant): ciphertext to members only.
        """
        if self.structure is None:
            return None
        conv = await self._messages.get_conversation(conversation_id)
        if conv is None or user.id not in conv.members:
            return None
        key = await self.structure.current(conv.structure_id)
        if key is None:
            return None
        rid = structure_recipient(key.key_id)
        sealers = await self._structure_sealers(conv.id, rid)
        sealed = {epoch for epoch, users in sealers.items() if user.id in users}
        held = (await self._keys.epochs_held(conv.id, [device_id]))[device_id]
        out: dict[str, Any] = {
            "key": await self._structure_listed(conv, await self.device_sets(conv)),
            "missing_epochs": sorted(held - sealed),
            "envelopes": [],
        }
        if await self.structure.holds(key, device_id):
            out["envelopes"] = await self.envelopes_for(rid, conv.id)
        return out

    async def _structure_sealers(self, conversation_id: str, rid: str) -> dict[int, dict[str, int]]:
        """Per epoch, how many envelopes each user's devices sealed to the structure key."""
        owners: dict[str, str] = {}
        out: dict[int, dict[str, int]] = {}
        for e in await self._keys.envelopes_for(rid, conversation_id):
            if e.sender_device not in owners:
                sender = await self._keys.get_device(e.sender_device)
                owners[e.sender_device] = sender.user_id if sender else ""
            users = out.setdefault(e.epoch, {})
            users[owners[e.sender_device]] = users.get(owners[e.sender_device], 0) + 1
        return out

    # ------------------------------------------------------------------ key requests

    async def _request_keys(
        self, conv: Conversation, user: User, device_id: str, reason: str, approved: bool
    ) -> None:
        await self._keys.put_key_request(
            KeyRequest(conv.id, device_id, user.id, reason, approved, self._clock())
        )
        await self._announce(conv.id, requested=device_id, reason=reason, approved=approved)

    async def _announce(
        self,
        conversation_id: str,
        requested: str | None = None,
        reason: str = "",
        approved: bool = True,
    ) -> None:
        """Tell the holders the conversation changed, and that a device waits for keys.

        An approved request goes to every holder (the first online re-wraps);
        one waiting for approval goes to the counsellor only, who decides.
        """
        conv = await self._messages.get_conversation(conversation_id)
        if conv is None:
            return
        holders = set(conv.members)
        if conv.previous_counsellor_id:
            holders.add(conv.previous_counsellor_id)
        if conv.structure_id:
            sups = await self._accounts.users_in_structure(conv.structure_id, Role.SUPERVISOR)
            holders.update(u.id for u in sups)
        summary = {
            "id": conv.id,
            "beneficiary_id": conv.beneficiary_id,
            "counsellor_id": conv.counsellor_id,
            "epoch": conv.epoch,
            "rotation_required": conv.rotation_required,
            "last_seq": conv.last_seq,
        }
        await self._hub.publish(holders, p.encode_text(p.ConversationUpdated(summary)))
        if requested is not None:
            device = await self._keys.get_device(requested)
            frame = p.encode_text(
                p.KeysRequested(
                    conversation=conv.id,
                    recipient_device=requested,
                    recipient_user=device.user_id if device else "",
                    reason=reason,
                    approved=approved,
                )
            )
            await self._hub.publish(holders if approved else [conv.counsellor_id], frame)
            if not approved and self.on_key_request is not None:
                await self.on_key_request(conv, requested)

    async def open_requests(self, user: User, device_id: str) -> list[dict[str, Any]]:
        """Requests this device could fulfil: approved, open, in conversations it can read."""
        convs = {c.id: c for c in await self._messages.conversations_for(user.id)}
        for c in await self._messages.conversations_previously_with(user.id):
            convs.setdefault(c.id, c)
        if user.role is Role.SUPERVISOR and user.structure_id:
            for c in await self._messages.conversations_in_structure(user.structure_id):
                convs.setdefault(c.id, c)
        out = []
        for r in await self._keys.key_requests(sorted(convs)):
            if r.recipient_device == device_id:
                continue
            device = await self._keys.get_device(r.recipient_device)
            if device is None or device.removed_at is not None:
                continue
            conv = convs[r.conversation_id]
            if device.user_id not in conv.members:
                continue  # not an authorised recipient (a request of the escrow days)
            held = await self._keys.epochs_held(conv.id, [r.recipient_device])
            missing = sorted(set(range(1, conv.epoch + 1)) - held[r.recipient_device])
            if r.reason == "bad_envelope":
                # The device holds an envelope per epoch, one of which was bad: ask for all.
                missing = list(range(1, conv.epoch + 1))
            if r.approved and not missing:
                await self._keys.close_key_request(conv.id, r.recipient_device)
                continue
            out.append(
                {
                    "conversation": r.conversation_id,
                    "recipient_device": r.recipient_device,
                    "recipient_user": r.recipient_user,
                    "reason": r.reason,
                    "approved": r.approved,
                    "missing_epochs": missing,
                    "device": device_json(device),
                }
            )
        return out

    async def report_envelope(
        self,
        user: User,
        device_id: str,
        conversation_id: str,
        epoch: int,
        sender_device: str,
        *,
        structure: bool = False,
    ) -> None:
        """The caller's device found an envelope whose key fails the epoch's commitment.

        Kept as an audit record (``envelope.rejected``). For an envelope to the
        device itself, its key request is opened again (reason ``bad_envelope``)
        so that the other holders re-wrap the epoch keys for it. ``structure``:
        the envelope was sealed to the structure key (the caller's device holds
        it); no request is opened, since each member is asked to seal every
        epoch it has not sealed itself (``missing_epochs``).
        """
        conv = await self.readable_conversation(user, conversation_id)
        device = await self._sender_device(user, device_id)
        recipient = device.id
        if structure:
            key = None
            if self.structure is not None:
                key = await self.structure.current(conv.structure_id)
            if key is None or not await self.structure_holds(key, device.id):
                raise NotFound("this device holds no structure key of this conversation")
            recipient = structure_recipient(key.key_id)
        envs = await self._keys.envelopes_for(recipient, conv.id)
        if not any(e.epoch == epoch and e.sender_device == sender_device for e in envs):
            raise NotFound("this device has no envelope from that sender for that epoch")
        await self._keys.add_audit(
            AuditRecord(
                conv.id,
                user.id,
                "envelope.rejected",
                {
                    "device": device.id,
                    "recipient": recipient,
                    "epoch": epoch,
                    "sender_device": sender_device,
                },
                self._clock(),
            )
        )
        log.warning(
            "envelope rejected by its recipient (key commitment mismatch)",
            extra={"conversation_id": conv.id, "device_id": sender_device, "user_id": user.id},
        )
        if not structure:
            await self._request_keys(conv, user, device.id, "bad_envelope", True)

    async def structure_holds(self, key: StructureKey, device_id: str) -> bool:
        """Whether this device was handed the structure key."""
        return self.structure is not None and await self.structure.holds(key, device_id)

    async def approve_device(self, user: User, conversation_id: str, device_id: str) -> None:
        """The counsellor approves a beneficiary's new device; holders then re-wrap for it."""
        conv = await self._conversations.member_conversation(user.id, conversation_id)
        if user.id != conv.counsellor_id:
            raise Forbidden("only the conversation's counsellor approves a new device")
        device = await self._keys.get_device(device_id)
        if device is None or device.user_id != conv.beneficiary_id or device.removed_at:
            raise NotFound("no such device of this beneficiary")
        beneficiary = await self._accounts.get_user(conv.beneficiary_id)
        if beneficiary is None:
            raise NotFound("no such beneficiary")
        await self._request_keys(conv, beneficiary, device_id, "new_device", True)

    # ------------------------------------------------------------------ backups

    async def put_backup(self, user: User, backup: dict[str, str]) -> None:
        """Store the caller's encrypted key backup (opaque to the server)."""
        await self._keys.put_backup(user.id, backup, self._clock())

    async def get_backup(self, user: User) -> dict[str, str]:
        """The caller's encrypted key backup."""
        b = await self._keys.get_backup(user.id)
        if b is None:
            raise NotFound("no key backup stored")
        return b

    # ------------------------------------------------------------------ transfer

    async def transfer(
        self, actor: User, conversation_id: str, to: str | None, mode: str, until: float | None
    ) -> Conversation:
        """A supervisor moves a beneficiary to another counsellor (or takes them back).

        Posts a system event, writes an audit record, requires a new epoch
        (so the previous counsellor's devices get nothing written after it),
        and asks every key holder to re-wrap the history for the new
        counsellor's devices.
        """
        if actor.role is not Role.SUPERVISOR:
            raise Forbidden("only a supervisor can transfer a beneficiary")
        conv = await self._messages.get_conversation(conversation_id)
        # A supervisor without a structure supervises nothing (None == None is no match).
        if conv is None or actor.structure_id is None or conv.structure_id != actor.structure_id:
            raise NotMember("this conversation is not in your structure")
        if conv.deleted_at is not None:
            raise ConversationDeleted("the beneficiary's account was deleted")
        return await self._apply_transfer(actor.id, conv, to, mode, until)

    async def expire_temporary(self) -> int:
        """Give back every conversation whose temporary transfer has ended; return how many."""
        done = 0
        for conv in await self._messages.expired_temporary(self._clock()):
            try:
                await self._apply_transfer("system", conv, None, "take_back", None)
            except (InvalidInput, NotFound):
                continue  # another process took it back first
            done += 1
        return done

    async def _apply_transfer(
        self, actor_id: str, conv: Conversation, to: str | None, mode: str, until: float | None
    ) -> Conversation:
        if mode == "take_back":
            if not conv.previous_counsellor_id:
                raise InvalidInput("there is no previous counsellor to take the beneficiary back")
            target_id, previous, temp = conv.previous_counsellor_id, None, None
        elif mode in ("permanent", "temporary"):
            if not to:
                raise InvalidInput("'to' (the new counsellor) is required")
            if mode == "temporary" and (until is None or until <= self._clock()):
                raise InvalidInput("a temporary transfer needs 'until' in the future")
            target_id, previous = to, conv.counsellor_id
            temp = until if mode == "temporary" else None
        else:
            raise InvalidInput("mode must be permanent, temporary or take_back")
        target = await self._accounts.get_user(target_id)
        if (
            target is None
            or target.role is not Role.COUNSELLOR
            or target.structure_id != conv.structure_id
        ):
            raise InvalidInput("the new counsellor must be a counsellor of the same structure")
        if target.id == conv.counsellor_id:
            raise InvalidInput("this counsellor already follows the beneficiary")
        old = conv.counsellor_id
        updated = await self._messages.set_counsellor(conv.id, target.id, previous, temp)
        if updated is None:
            raise NotFound("no such conversation")
        now = self._clock()
        await self._keys.add_audit(
            AuditRecord(
                conv.id,
                actor_id,
                f"transfer.{mode}",
                {"from": old, "to": target.id, "until": temp},
                now,
            )
        )
        kind = "system.temporary_counsellor" if mode == "temporary" else "system.counsellor_changed"
        await self._conversations.post_system(
            updated,
            kind,
            {"from": old, "to": target.id, "mode": mode, "by": actor_id, "until": temp},
            client_id=f"transfer-{secrets.token_hex(8)}",
        )
        # The previous counsellor hears about it too, then stops receiving.
        await self._hub.publish(
            [old],
            p.encode_text(p.ConversationUpdated({"id": conv.id, "counsellor_id": target.id})),
        )
        await self._announce(conv.id)
        for d in await self._keys.devices_of([target.id]):
            await self._request_keys(updated, target, d.id, "transfer", True)
        final = await self._messages.get_conversation(conv.id)
        return final or updated


def _refuse_pending(sets: DeviceSets, sender: Device) -> None:
    if sender.id in sets.pending:
        raise E2EEError(
            "device_pending_approval",
            "this new device is waiting for the counsellor's approval",
        )


class EpochConflict(E2EEError):
    """Another client created this epoch first."""

    status = 409

    def __init__(self, current: int) -> None:
        super().__init__("epoch_conflict", f"the current epoch is {current}; fetch it and retry")
        self.current = current


def _sizes_ok(dh_pub: bytes, sig_pub: bytes) -> bool:
    return len(dh_pub) == 32 and len(sig_pub) == 32
