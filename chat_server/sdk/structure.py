"""The structure key in the Python client (docs/security.md, "The structure key").

A supervisor's device creates it and hands it to the structure's staff
devices; every client seals each new epoch to it too (after checking that the
key is signed by the registered device that made it); a staff device that
holds it reads a conversation it was given by a transfer from the structure
envelopes, with nobody else online.

Endorsements (docs/security.md, "Endorsements"): a counsellor's or
supervisor's device that verifies and pins the key signs it
(``POST /api/structure-key/endorsements``), once per key and device; a young
person's client pins a key for the first time only if a device of another
member of the conversation (her counsellor) endorsed it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chat_server.crypto.commitment import key_matches_commitment
from chat_server.crypto.encoding import b64decode, b64encode
from chat_server.crypto.envelope import Envelope, wrap_epoch_key
from chat_server.crypto.errors import CryptoError
from chat_server.crypto.structure_key import (
    StructureGrant,
    open_grant,
    open_structure_envelope,
    sign_endorsement,
    sign_structure_key,
    structure_key_id,
    structure_recipient,
    verify_endorsement,
    verify_structure_key,
    wrap_grant,
)

if TYPE_CHECKING:
    from chat_server.sdk.client import Client

STAFF_ROLES = frozenset({"counsellor", "supervisor"})

log = logging.getLogger(__name__)


class StructureKeyring:
    """One device's view of its structure key: the verified public half, and the
    private half once a grant to this device was opened."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.private: X25519PrivateKey | None = None
        self.key_id: str | None = None
        #: Key ids this device endorsed (or saw its endorsement of), this session.
        self.endorsed: set[str] = set()

    async def verified_public(
        self, key: Mapping[str, Any], conversation: str | None = None
    ) -> tuple[str, bytes]:
        """``(recipient id, public key)`` of a structure key JSON whose signature verifies
        under its creator's registered device (a device of ``creator_user``), which names
        this user's own structure, and which is the key this client pinned for it (the
        first one it saw); ``ClientError`` otherwise (``structure_key_unverified``,
        ``structure_key_changed``): never wrapped for.

        A young person's client pins a key for the first time only if one of its
        ``endorsements`` verifies under a device of the other member of ``conversation``
        that this client saw listed (``Client.devices``, registrations checked: her
        counsellor's, or her previous counsellor's before a transfer): else
        ``structure_key_unendorsed``, nothing pinned. A staff device endorses the key
        once it is pinned (``endorse``)."""
        from chat_server.sdk.client import ClientError

        pub = b64decode(key["public_key"])
        owner, creator_sig = await self._client._device_sig_pub(key["creator_device"])
        if (
            structure_key_id(pub) != key["key_id"]
            or owner != key.get("creator_user")
            or not verify_structure_key(
                creator_sig, key["structure"], pub, key["creator_device"], b64decode(key["sig"])
            )
        ):
            raise ClientError(
                "structure_key_unverified", "the structure key is not signed by its creator"
            )
        own = self._client.user.get("structure_id")
        if own is not None and str(key["structure"]) != str(own):
            # A key naming another structure is no way around this user's pin.
            raise ClientError(
                "structure_key_changed",
                f"the structure key names structure {key['structure']!r}, not this user's",
            )
        pins = self._client.state.structure_pins
        pinned = pins.get(str(key["structure"]))
        if pinned is None:
            if self._client.user.get("role") not in STAFF_ROLES and not self._endorsed_by_peer(
                key, pub, conversation
            ):
                raise ClientError(
                    "structure_key_unendorsed",
                    "no device of the counsellor endorsed this structure key: not sealed to",
                )
            pinned = pins.setdefault(str(key["structure"]), str(key["key_id"]))
        if pinned != key["key_id"]:
            raise ClientError(
                "structure_key_changed",
                f"the structure key changed from {pinned} to {key['key_id']}: not sealed to",
            )
        if self._client.user.get("role") in STAFF_ROLES:
            try:
                await self.endorse(key, pub)
            except ClientError as exc:
                # Sealing does not depend on it (as in the browser): the next use retries.
                log.warning("structure key not endorsed: %s: %s", exc.code, exc)
        return structure_recipient(key["key_id"]), pub

    def _endorsed_by_peer(
        self, key: Mapping[str, Any], pub: bytes, conversation: str | None
    ) -> bool:
        """Whether an endorsement of ``key`` verifies under a device this client saw listed
        as the other member's in ``conversation``."""
        devices = self._client.state.peer_devices.get(conversation or "", {})
        for e in key.get("endorsements") or []:
            found = devices.get(str(e.get("device_id")))
            if found is None or found[0] != e.get("user_id"):
                continue
            try:
                sig = b64decode(e["sig"])
            except (KeyError, ValueError):
                continue
            if verify_endorsement(
                found[1], str(key["structure"]), str(key["key_id"]), pub, e["device_id"], sig
            ):
                return True
        return False

    async def endorse(self, key: Mapping[str, Any], pub: bytes) -> bool:
        """As a staff device that pinned ``key``: sign it for the young people's clients
        (once per key; nothing if the listing shows this device's endorsement already).
        Returns whether a request was made."""
        c = self._client
        key_id = str(key["key_id"])
        mine = {str(e.get("device_id")) for e in key.get("endorsements") or []}
        if key_id in self.endorsed or key.get("endorsed") or c.device_id in mine:
            self.endorsed.add(key_id)
            return False
        structure = str(key["structure"])
        body = {
            "structure": structure,
            "key_id": key_id,
            "device_id": c.device_id,
            "sig": b64encode(sign_endorsement(c.keys, structure, pub, c.device_id)),
        }
        await c.request("POST", "/api/structure-key/endorsements", body)
        self.endorsed.add(key_id)
        return True

    async def create(self) -> str:
        """As a supervisor's device: make the structure key (with its own grant); its id."""
        c = self._client
        private = X25519PrivateKey.generate()
        pub = private.public_key().public_bytes_raw()
        structure = str(c.user["structure_id"])
        grant = wrap_grant(
            private,
            structure=structure,
            sender=c.keys,
            sender_device=c.device_id,
            recipient_device=c.device_id,
            recipient_dh_pub=c.keys.public.dh_pub,
        )
        body = {
            "public_key": b64encode(pub),
            "sig": b64encode(sign_structure_key(c.keys, structure, pub, c.device_id)),
            "grant": grant.to_json(),
        }
        await c.request("POST", "/api/structure-key", body)
        self.private, self.key_id = private, structure_key_id(pub)
        return self.key_id

    async def load(self) -> dict[str, Any]:
        """Fetch ``GET /api/structure-key``, verify, pin and endorse the key (``ClientError``
        as ``verified_public``), and open this device's grant if there is one."""
        c = self._client
        view: dict[str, Any] = await c.request("GET", "/api/structure-key")
        key, grant = view.get("key"), view.get("grant")
        if key is None:
            return view
        _, pub = await self.verified_public(key)
        if grant is None:
            return view
        _, sender_sig = await c._device_sig_pub(grant["sender_device"])
        try:
            self.private = open_grant(StructureGrant.from_json(grant), c.keys, sender_sig, pub)
        except CryptoError:
            return view
        self.key_id = key["key_id"]
        return view

    async def hand_out(self) -> int:
        """As a supervisor's holder device: hand the key to every staff device waiting."""
        c = self._client
        view = await self.load()
        if self.private is None:
            return 0
        grants = []
        for d in view.get("waiting", []):
            if not c._remember(d):
                continue  # a registration that does not verify gets nothing
            grants.append(
                wrap_grant(
                    self.private,
                    structure=view["structure"],
                    sender=c.keys,
                    sender_device=c.device_id,
                    recipient_device=d["device_id"],
                    recipient_dh_pub=b64decode(d["dh_pub"]),
                ).to_json()
            )
        if not grants:
            return 0
        answer = await c.request("POST", "/api/structure-key/grants", {"grants": grants})
        return int(answer["added"])

    async def open_envelopes(
        self, conversation: str, data: Mapping[str, Any], commitments: dict[tuple[str, int], bytes]
    ) -> int:
        """Take the epoch keys this device lacks from the structure envelopes of a
        ``GET /api/keys/envelopes`` answer, each only if it matches its commitment.

        Every structure envelope of an epoch it lacks is tried (there may be one
        per member and device): the first that matches gives the key, and each
        one whose key fails the commitment is reported (``Client.reject_envelope``),
        whichever came first.
        """
        c = self._client
        found = data.get("structure") or {}
        envs = found.get("envelopes") or []
        if envs and self.private is None:
            await self.load()
        if self.private is None:
            return 0
        lacking = {
            int(doc["epoch"])
            for doc in envs
            if (conversation, int(doc["epoch"])) not in c.state.epoch_keys
        }
        new = 0
        for doc in envs:
            key = (conversation, int(doc["epoch"]))
            committed = commitments.get(key)
            if key[1] not in lacking or committed is None:
                continue
            env = Envelope.from_json(doc)
            _, sig_pub = await c._device_sig_pub(env.sender_device)
            try:
                raw = open_structure_envelope(env, self.private, sig_pub)
            except (CryptoError, ValueError):
                continue
            if not key_matches_commitment(raw, *key, committed):
                await c.reject_envelope(conversation, key[1], env.sender_device, structure=True)
            elif key not in c.state.epoch_keys:
                c.state.epoch_keys[key] = raw
                new += 1
        return new

    async def backfill(self, conversation: str, data: Mapping[str, Any]) -> int:
        """Seal to the structure key the epochs it lacks that this device holds (none
        while a young person's client may not pin the key yet: not endorsed)."""
        c = self._client
        found = data.get("structure") or {}
        held = c.state.epoch_keys
        missing = [e for e in found.get("missing_epochs", []) if (conversation, e) in held]
        if not missing:
            return 0
        from chat_server.sdk.client import ClientError

        if c.user.get("role") not in STAFF_ROLES:
            await c.devices(conversation)  # the counsellor's devices, to check endorsements
        try:
            rid, pub = await self.verified_public(found["key"], conversation)
        except ClientError as exc:
            if exc.code != "structure_key_unendorsed":
                raise
            return 0  # not endorsed yet: sealed later, once the counsellor's device endorsed it
        envelopes = [
            wrap_epoch_key(
                c.state.epoch_keys[(conversation, e)],
                sender=c.keys,
                sender_device=c.device_id,
                recipient_device=rid,
                recipient_dh_pub=pub,
                conversation=conversation,
                epoch=e,
            ).to_json()
            for e in missing
        ]
        answer = await c.request(
            "POST", f"/api/conversations/{conversation}/envelopes", {"envelopes": envelopes}
        )
        return int(answer["added"])
