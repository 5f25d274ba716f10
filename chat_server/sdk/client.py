"""``Client``: logs in, keeps its device keys, encrypts, signs, verifies, decrypts.

It speaks the documented protocol (docs/protocol.md) over HTTP and one
WebSocket, with the scheme of docs/crypto-format.md. The server only ever
sees ciphertext. Used by the tests, the terminal client and the benchmark.

    client = await Client.login("http://127.0.0.1:8000", "jeune1.demo", "...")
    await client.connect()
    await client.send_text(conversation_id, "Bonjour")
    received = await client.next_message()
    await client.close()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import websockets

from chat_server.crypto.activation import (
    derive,
    is_client_code,
    new_code,
    open_box_contents,
    seal_box,
)
from chat_server.crypto.backup import (
    Backup,
    BackupContents,
    DeviceSecret,
    EpochKeyEntry,
    format_recovery_key,
    generate_recovery_key,
    open_backup,
    parse_recovery_key,
    seal_backup,
)
from chat_server.crypto.commitment import (
    epoch_commitment,
    key_matches_commitment,
    sign_commitment,
    verify_commitment_signature,
)
from chat_server.crypto.encoding import b64decode, b64encode
from chat_server.crypto.envelope import (
    Envelope,
    generate_epoch_key,
    open_envelope,
    wrap_epoch_key,
)
from chat_server.crypto.errors import CryptoError
from chat_server.crypto.keys import (
    DeviceKeys,
    DevicePublicKeys,
    sign_registration,
    verify_registration,
)
from chat_server.crypto.message import FORMAT_VERSION, decrypt_message, encrypt_message
from chat_server.crypto.safety import safety_number
from chat_server.sdk.structure import StructureKeyring

if TYPE_CHECKING:
    from chat_server.sdk.items import Draft


class ClientError(Exception):
    """The server refused a request; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class Received:
    """A decrypted message (``text`` is None if it could not be decrypted)."""

    conversation: str
    seq: int
    sender: str
    msg_type: str
    plaintext: bytes | None
    meta: dict[str, Any]
    error: str | None = None
    #: Format version: 2 authenticates ``meta``; a version 1 message (stored
    #: before version 2) decrypts, but its ``meta`` is not authenticated.
    version: int = 2

    @property
    def meta_authenticated(self) -> bool:
        """Whether ``meta`` is covered by the sender's signature (format version 2)."""
        return self.version >= 2 and self.plaintext is not None

    @property
    def text(self) -> str | None:
        """The ``text`` field of a text message's JSON plaintext."""
        if self.plaintext is None:
            return None
        try:
            doc = json.loads(self.plaintext)
        except ValueError:
            return None
        value = doc.get("text") if isinstance(doc, dict) else None
        return value if isinstance(value, str) else None

    @property
    def content(self) -> dict[str, Any] | None:
        """The decrypted JSON body (an item's title, note, answer...), or None."""
        if self.plaintext is None:
            return None
        try:
            doc = json.loads(self.plaintext)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None


#: Waits (seconds) before resending a message the store did not confirm in time.
_STORE_RETRY_WAITS = (0.2, 0.5, 1.0, 2.0)
#: Refusals ``send`` retries after those waits with the same ``client_id``: the store did not
#: answer in time, the signature checks are behind, or the connection is over its frame rate.
_RETRIED = frozenset({"store_unavailable", "store_outcome_unknown", "overloaded", "rate_limited"})


@dataclass
class _State:
    epoch_keys: dict[tuple[str, int], bytes] = field(default_factory=dict)
    # (conversation, epoch, sender device) of envelopes whose key failed the commitment.
    rejected_envelopes: list[tuple[str, int, str]] = field(default_factory=list)
    # The same, of envelopes sealed to the structure key (security events too).
    rejected_structure_envelopes: list[tuple[str, int, str]] = field(default_factory=list)
    device_keys: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> (user, sig)
    # structure id -> key id of the structure key first seen (pinned on first use).
    structure_pins: dict[str, str] = field(default_factory=dict)
    # conversation -> device id -> (user, sig_pub) of the other member's devices this
    # client saw listed (its counsellors'): their endorsements count (sdk/structure.py).
    peer_devices: dict[str, dict[str, tuple[str, bytes]]] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)


class Client:
    """One logged-in device."""

    def __init__(
        self, base_url: str, token: str, user: dict[str, Any], device_id: str, keys: DeviceKeys
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.user = user
        self.device_id = device_id
        self.keys = keys
        self.state = _State()
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers={"authorization": f"Bearer {token}"}, timeout=30
        )
        self.ws: websockets.ClientConnection | None = None
        self.messages: asyncio.Queue[Received] = asyncio.Queue()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.conversations: list[dict[str, Any]] = []
        self.transcript: list[str] | None = None  # set to a list to keep every raw frame
        #: The box key of the activation code this device proved (None otherwise).
        self.activation_key: bytes | None = None
        #: The structure key (docs/security.md): sealed to at each epoch, read after a transfer.
        self.structure = StructureKeyring(self)

    @property
    def user_id(self) -> str:
        """This account's id."""
        return str(self.user["id"])

    # ------------------------------------------------------------------ sessions

    @classmethod
    async def login(
        cls,
        base_url: str,
        login: str,
        password: str,
        *,
        keys: DeviceKeys | None = None,
        device_id: str | None = None,
        register: bool = True,
    ) -> Client:
        """Log in; generate device keys unless given; register the device."""
        data = await _post_json(
            base_url, "/api/login", {"login": login, "password": password, "device_id": device_id}
        )
        client = cls(
            base_url, data["token"], data["user"], data["device_id"], keys or DeviceKeys.generate()
        )
        if register:
            try:
                await client.register_device()
            except BaseException:
                await client.http.aclose()
                raise
        return client

    @classmethod
    async def activate(
        cls, base_url: str, code: str, password: str, *, register: bool = True
    ) -> Client:
        """Activate a beneficiary account with its one-time code; register a new device.

        A code the counsellor's client made is never sent: only its proof; its box
        key is kept to open the activation box (``open_activation_box``).
        """
        made = derive(code) if is_client_code(code) else None
        secret = {"proof": made.proof_text} if made else {"code": code}
        data = await _post_json(base_url, "/api/activate", {**secret, "password": password})
        client = cls(
            base_url, data["token"], data["user"], data["device_id"], DeviceKeys.generate()
        )
        client.activation_key = made.box_key if made else None
        if register:
            try:
                await client.register_device()
            except BaseException:
                await client.http.aclose()
                raise
        return client

    async def register_device(self) -> None:
        """Register this device's public keys, signed by the device itself."""
        pub = self.keys.public
        sig = sign_registration(self.keys, self.user_id, self.device_id)
        await self.request(
            "POST",
            "/api/devices",
            {
                "dh_pub": b64encode(pub.dh_pub),
                "sig_pub": b64encode(pub.sig_pub),
                "registration_sig": b64encode(sig),
            },
        )

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; raise ``ClientError`` with the server's error code."""
        r = await self.http.request(method, path, json=body)
        data = r.json() if r.content else {}
        if r.status_code >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            raise ClientError(err.get("code", "http_error"), err.get("message", ""), r.status_code)
        return data

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume this device later (secret: keep it private)."""
        return {
            "base_url": self.base_url,
            "token": self.token,
            "user": self.user,
            "device_id": self.device_id,
            "dh_priv": b64encode(self.keys.dh_priv),
            "sig_priv": b64encode(self.keys.sig_priv),
            "epoch_keys": [
                {"conversation": c, "epoch": e, "key": b64encode(k)}
                for (c, e), k in sorted(self.state.epoch_keys.items())
            ],
            "seqs": self.state.seqs,
            "structure_pins": self.state.structure_pins,
            "peer_devices": {
                c: {d: [u, b64encode(k)] for d, (u, k) in found.items()}
                for c, found in self.state.peer_devices.items()
            },
        }

    @classmethod
    def from_state(cls, doc: Mapping[str, Any]) -> Client:
        """A client restored from ``to_state()``."""
        keys = DeviceKeys.from_private_bytes(b64decode(doc["dh_priv"]), b64decode(doc["sig_priv"]))
        client = cls(doc["base_url"], doc["token"], doc["user"], doc["device_id"], keys)
        for e in doc.get("epoch_keys", []):
            client.state.epoch_keys[(e["conversation"], int(e["epoch"]))] = b64decode(e["key"])
        client.state.seqs.update(doc.get("seqs", {}))
        client.state.structure_pins.update(doc.get("structure_pins", {}))
        for c, found in doc.get("peer_devices", {}).items():
            client.state.peer_devices[c] = {d: (u, b64decode(k)) for d, (u, k) in found.items()}
        return client

    # ------------------------------------------------------------------ keys

    async def _device_sig_pub(self, device_id: str) -> tuple[str, bytes]:
        if device_id not in self.state.device_keys:
            d = await self.request("GET", f"/api/keys/devices/{device_id}")
            self._remember(d["device"])
        return self.state.device_keys[device_id]

    def _remember(self, d: Mapping[str, Any]) -> bool:
        pub = DevicePublicKeys(b64decode(d["dh_pub"]), b64decode(d["sig_pub"]))
        if not verify_registration(
            pub, d["user_id"], d["device_id"], b64decode(d["registration_sig"])
        ):
            return False
        known = self.state.device_keys.get(d["device_id"])
        if known is not None and known != (d["user_id"], pub.sig_pub):
            return False  # a device id names one registration for good: other keys are not believed
        self.state.device_keys[d["device_id"]] = (d["user_id"], pub.sig_pub)
        return True

    async def _commitments(self, data: Mapping[str, Any]) -> dict[tuple[str, int], bytes]:
        """The key commitments of a ``GET /api/keys/envelopes`` answer whose signature verifies."""
        commitments: dict[tuple[str, int], bytes] = {}
        for c in data.get("epochs", []):
            _, creator_sig = await self._device_sig_pub(c["creator_device"])
            commitment, sig = b64decode(c["commitment"]), b64decode(c["sig"])
            conv, epoch = c["conversation"], int(c["epoch"])
            if verify_commitment_signature(
                creator_sig, conv, epoch, c["creator_device"], commitment, sig
            ):
                commitments[(conv, epoch)] = commitment
        return commitments

    async def create_beneficiary(
        self, login: str, display_name: str, programme: str | None = None
    ) -> tuple[str, str]:
        """As a counsellor: create a beneficiary with a code made here, open the
        conversation's first epoch and leave its key in the activation box.
        Returns ``(code, conversation_id)``; the server never sees the code."""
        code = new_code()
        made = derive(code)
        body = {"login": login, "display_name": display_name, "programme": programme}
        created = await self.request(
            "POST", "/api/beneficiaries", {**body, "activation_proof": made.proof_text}
        )
        conversation = str(created["conversation_id"])
        epoch, key = await self.ensure_epoch(conversation)
        # The structure key this device sealed to (pinned): the phone pins it from the box.
        pinned = self.state.structure_pins.get(str(self.user.get("structure_id")))
        box = seal_box(made.box_key, conversation, {epoch: key}, structure_key=pinned)
        await self.request("PUT", f"/api/conversations/{conversation}/activation-box", box)
        return code, conversation

    async def open_activation_box(self, conversation: str) -> int:
        """Take the epoch keys left in the activation box, each only if it matches its
        epoch's signed commitment; then drop the box. Returns how many keys were taken."""
        if self.activation_key is None:
            raise ClientError("no_activation_code", "this device did not prove a client-made code")
        box = await self.request("GET", f"/api/conversations/{conversation}/activation-box")
        keys, structure_key = open_box_contents(self.activation_key, conversation, box)
        structure = self.user.get("structure_id")
        if structure_key is not None and structure:
            # The structure key the counsellor sealed to: the first one is not blind trust.
            self.state.structure_pins.setdefault(str(structure), structure_key)
        data = await self.request("GET", f"/api/keys/envelopes?conversation={conversation}")
        commitments = await self._commitments(data)
        taken = 0
        for epoch, raw in keys.items():
            committed = commitments.get((conversation, epoch))
            if committed is None or not key_matches_commitment(raw, conversation, epoch, committed):
                continue
            self.state.epoch_keys.setdefault((conversation, epoch), raw)
            taken += 1
        await self.request("DELETE", f"/api/conversations/{conversation}/activation-box")
        return taken

    async def fetch_envelopes(self, conversation: str | None = None) -> int:
        """Open every envelope addressed to this device; return how many keys are new."""
        path = "/api/keys/envelopes" + (f"?conversation={conversation}" if conversation else "")
        data = await self.request("GET", path)
        commitments = await self._commitments(data)
        new = 0
        for doc in data["envelopes"]:
            key = (doc["conversation"], int(doc["epoch"]))
            if key in self.state.epoch_keys:
                continue
            env = Envelope.from_json(doc)
            _, sig_pub = await self._device_sig_pub(env.sender_device)
            try:
                raw = open_envelope(env, self.keys, sig_pub)
            except CryptoError:
                continue
            committed = commitments.get(key)
            if committed is not None and not key_matches_commitment(raw, *key, committed):
                # A poisoned envelope: another one for this epoch may hold the right key.
                await self.reject_envelope(key[0], key[1], env.sender_device)
                continue
            self.state.epoch_keys[key] = raw
            new += 1
        if conversation is not None:
            new += await self.structure.open_envelopes(conversation, data, commitments)
            await self.structure.backfill(conversation, data)
        return new

    async def reject_envelope(
        self, conversation: str, epoch: int, sender_device: str, *, structure: bool = False
    ) -> None:
        """Record (once) and report an envelope whose key fails its epoch's commitment:
        one addressed to this device, or with ``structure`` one sealed to the structure key."""
        state = self.state
        seen = state.rejected_structure_envelopes if structure else state.rejected_envelopes
        bad = (conversation, epoch, sender_device)
        if bad in seen:
            return
        seen.append(bad)
        body: dict[str, Any] = {
            "conversation": conversation,
            "epoch": epoch,
            "sender_device": sender_device,
        }
        if structure:
            body["structure"] = True
        await self.request("POST", "/api/keys/report", body)

    async def devices(self, conversation: str) -> dict[str, Any]:
        """The conversation's authorised devices (checked registrations only)."""
        data: dict[str, Any] = await self.request(
            "GET", f"/api/conversations/{conversation}/devices"
        )
        for group in (*data["members"], *data.get("escrow", [])):
            group["devices"] = [d for d in group["devices"] if self._remember(d)]
        # The other member's devices, remembered for their endorsements of the structure
        # key (a previous counsellor's stay after a transfer); a current member's device
        # no longer listed (removed: lost or stolen) is forgotten.
        peers = self.state.peer_devices.setdefault(conversation, {})
        others = [g for g in data["members"] if g["user_id"] != self.user_id]
        listed = {d["device_id"] for g in others for d in g["devices"]}
        current = {str(g["user_id"]) for g in others}
        for device_id, (user_id, _) in list(peers.items()):
            if user_id in current and device_id not in listed:
                del peers[device_id]
        for group in others:
            for d in group["devices"]:
                peers.setdefault(d["device_id"], (str(group["user_id"]), b64decode(d["sig_pub"])))
        return data

    async def ensure_epoch(self, conversation: str) -> tuple[int, bytes]:
        """The current epoch and its key, creating a new epoch if the conversation needs one."""
        for _ in range(5):
            info = await self.devices(conversation)
            epoch = int(info["epoch"])
            if epoch > 0 and not info["rotation_required"]:
                key = self.state.epoch_keys.get((conversation, epoch))
                if key is None:
                    await self.fetch_envelopes(conversation)
                    key = self.state.epoch_keys.get((conversation, epoch))
                if key is not None:
                    return epoch, key
                raise ClientError("no_epoch_key", "this device has no key for the current epoch")
            new_epoch = epoch + 1
            structure_key = info.get("structure_key")
            own = str(self.user.get("structure_id"))
            if not structure_key and own in self.state.structure_pins:
                # A structure key was pinned: a listing without one is a downgrade (the
                # history would no longer follow a transfer), which the server alone decides.
                raise ClientError(
                    "structure_key_missing",
                    "the server lists no structure key after one was pinned: not sealed",
                )
            key = generate_epoch_key()
            # The members' devices only: never a device listed as `escrow` (supervisors'
            # devices the server alone decides on); the structure key below is the one
            # other recipient, and only once it verifies.
            groups = info["members"]
            envelopes = [
                wrap_epoch_key(
                    key,
                    sender=self.keys,
                    sender_device=self.device_id,
                    recipient_device=d["device_id"],
                    recipient_dh_pub=b64decode(d["dh_pub"]),
                    conversation=conversation,
                    epoch=new_epoch,
                ).to_json()
                for group in groups
                for d in group["devices"]
            ]
            if structure_key:
                # One more envelope, for the structure key, once it verifies (else refused).
                rid, pub = await self.structure.verified_public(structure_key, conversation)
                envelopes.append(
                    wrap_epoch_key(
                        key,
                        sender=self.keys,
                        sender_device=self.device_id,
                        recipient_device=rid,
                        recipient_dh_pub=pub,
                        conversation=conversation,
                        epoch=new_epoch,
                    ).to_json()
                )
            commitment = epoch_commitment(key, conversation, new_epoch)
            commitment_sig = sign_commitment(
                self.keys, conversation, new_epoch, self.device_id, commitment
            )
            try:
                await self.request(
                    "POST",
                    f"/api/conversations/{conversation}/epochs",
                    {
                        "epoch": new_epoch,
                        "envelopes": envelopes,
                        "commitment": b64encode(commitment),
                        "commitment_sig": b64encode(commitment_sig),
                    },
                )
            except ClientError as exc:
                if exc.code in ("epoch_conflict", "envelope_missing_recipient"):
                    continue
                raise
            self.state.epoch_keys[(conversation, new_epoch)] = key
            return new_epoch, key
        raise ClientError("epoch_conflict", "could not agree on an epoch")

    async def fulfil_requests(self) -> int:
        """Re-wrap the epoch keys this device holds for devices waiting for them: only
        for a device the conversation lists among its members' (never another one a
        request names)."""
        data = await self.request("GET", "/api/keys/requests")
        sent = 0
        for r in data["requests"]:
            if not r["approved"]:
                continue
            d = r["device"]
            if not self._remember(d):
                continue
            conv = r["conversation"]
            listing = await self.devices(conv)
            if not any(
                m["device_id"] == d["device_id"] and m["dh_pub"] == d["dh_pub"]
                for g in listing["members"]
                for m in g["devices"]
            ):
                continue  # only a member's listed device is re-wrapped for
            if any((conv, e) not in self.state.epoch_keys for e in r["missing_epochs"]):
                await self.fetch_envelopes(conv)
            envs = [
                wrap_epoch_key(
                    self.state.epoch_keys[(conv, e)],
                    sender=self.keys,
                    sender_device=self.device_id,
                    recipient_device=d["device_id"],
                    recipient_dh_pub=b64decode(d["dh_pub"]),
                    conversation=conv,
                    epoch=e,
                ).to_json()
                for e in r["missing_epochs"]
                if (conv, e) in self.state.epoch_keys
            ]
            if envs:
                await self.request(
                    "POST", f"/api/conversations/{conv}/envelopes", {"envelopes": envs}
                )
                sent += len(envs)
        return sent

    async def approve_device(self, conversation: str, device_id: str) -> None:
        """Counsellor: approve a beneficiary's new device, then re-wrap the history for it."""
        await self.request(
            "POST",
            "/api/keys/requests/approve",
            {"conversation": conversation, "device_id": device_id},
        )
        await self.fulfil_requests()

    async def safety_number(self, conversation: str) -> str:
        """The conversation's safety number from both members' device signing keys
        and the structure key's public half (as listed: a split view shows)."""
        info = await self.devices(conversation)
        a, b = info["members"]
        structure = info.get("structure_key")
        return safety_number(
            a["user_id"],
            [b64decode(d["sig_pub"]) for d in a["devices"]],
            b["user_id"],
            [b64decode(d["sig_pub"]) for d in b["devices"]],
            b64decode(structure["public_key"]) if structure else None,
        )

    async def backup(self, recovery_key: bytes | None = None) -> str:
        """Upload an encrypted backup of this device's keys and every epoch key it holds.

        Returns the recovery key as text, to show the user once.
        """
        key = recovery_key or generate_recovery_key()
        contents = BackupContents(
            self.user_id,
            (DeviceSecret(self.device_id, self.keys.dh_priv, self.keys.sig_priv),),
            tuple(EpochKeyEntry(c, e, k) for (c, e), k in sorted(self.state.epoch_keys.items())),
        )
        await self.request("PUT", "/api/keys/backup", seal_backup(contents, key).to_json())
        return format_recovery_key(key)

    @classmethod
    async def restore(cls, base_url: str, login: str, password: str, recovery_key: str) -> Client:
        """On a new phone: log in, open the backup, and take over the backed-up device."""
        probe = await cls.login(base_url, login, password, register=False)
        try:
            doc = await probe.request("GET", "/api/keys/backup")
            contents = open_backup(
                Backup.from_json(doc), parse_recovery_key(recovery_key), probe.user_id
            )
        finally:
            await probe.request("POST", "/api/logout")
            await probe.http.aclose()
        secret = contents.devices[0]
        keys = DeviceKeys.from_private_bytes(secret.dh_priv, secret.sig_priv)
        client = await cls.login(
            base_url, login, password, keys=keys, device_id=secret.device_id, register=False
        )
        for e in contents.epoch_keys:
            client.state.epoch_keys[(e.conversation, e.epoch)] = e.key
        await client.fetch_envelopes()
        return client

    # ------------------------------------------------------------------ realtime

    async def connect(self, resume: Mapping[str, int] | None = None) -> dict[str, Any]:
        """Open the WebSocket, authenticate, resume where this client stopped."""
        url = self.base_url.replace("http", "ws", 1) + "/ws"
        self.ws = await websockets.connect(url, max_size=2**22)
        positions = dict(self.state.seqs if resume is None else resume)
        await self.ws.send(json.dumps({"type": "auth", "token": self.token, "resume": positions}))
        first = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        if first.get("type") != "auth.ok":
            raise ClientError(first.get("code", "auth_failed"), first.get("message", ""))
        self.conversations = first["conversations"]
        for c in self.conversations:
            self.state.seqs.setdefault(c["id"], c["last_seq"] if resume is None else 0)
        self._reader = asyncio.create_task(self._read_loop())
        return dict(first)

    async def _read_loop(self) -> None:
        if self.ws is None:
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                if self.transcript is not None:
                    self.transcript.append(raw if isinstance(raw, str) else raw.decode())
                frame = json.loads(raw)
                kind = frame.get("type")
                fid = frame.get("id")
                if kind in ("ack", "error", "history", "pong") and fid in self._pending:
                    fut = self._pending.pop(fid)
                    if not fut.done():
                        fut.set_result(frame)
                    continue
                if kind == "message.created":
                    await self._deliver(frame["message"])
                elif kind == "sync":
                    for m in frame["messages"]:
                        await self._deliver(m)
                    self.state.seqs[frame["conversation"]] = max(
                        self.state.seqs.get(frame["conversation"], 0), frame["seq"]
                    )
                    await self.events.put(frame)
                elif kind == "keys.requested":
                    self._spawn(self._quiet_fulfil())
                    await self.events.put(frame)
                else:
                    await self.events.put(frame)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quiet_fulfil(self) -> None:
        with contextlib.suppress(ClientError, httpx.HTTPError):
            await self.fulfil_requests()

    async def _deliver(self, m: Mapping[str, Any]) -> None:
        conv = m["conversation"]
        self.state.seqs[conv] = max(self.state.seqs.get(conv, 0), m["seq"])
        await self.messages.put(await self.decrypt(m))

    async def decrypt(self, m: Mapping[str, Any]) -> Received:
        """Verify and decrypt one message as delivered by the server."""
        conv, epoch = m["conversation"], int(m["epoch"])
        version = m.get("v", 1)
        meta = dict(m.get("meta") or {})
        base = Received(conv, m["seq"], m["sender"], m["msg_type"], None, meta, version=version)
        if m["sender"] == "system":
            return base
        key = self.state.epoch_keys.get((conv, epoch))
        if key is None:
            await self.fetch_envelopes(conv)
            key = self.state.epoch_keys.get((conv, epoch))
        if key is None:
            base.error = "no_epoch_key"
            return base
        try:
            user, sig_pub = await self._device_sig_pub(m["device"])
            if user != m["sender"]:
                base.error = "device_user_mismatch"
                return base
            base.plaintext = decrypt_message(
                key,
                sig_pub,
                conversation=conv,
                epoch=epoch,
                sender_device=m["device"],
                client_id=m["client_id"],
                msg_type=m["msg_type"],
                nonce=base64.b64decode(m["nonce"]),
                ciphertext=base64.b64decode(m["body"]),
                sig=base64.b64decode(m["sig"]),
                meta=meta,
                version=version,
            )
        except (CryptoError, ClientError) as exc:
            base.error = type(exc).__name__
        return base

    async def _call(self, frame: dict[str, Any], timeout: float = 15) -> dict[str, Any]:
        if self.ws is None:
            raise ClientError("not_connected", "call connect() first")
        fid = secrets.token_hex(6)
        frame["id"] = fid
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[fid] = fut
        await self.ws.send(json.dumps(frame))
        return await asyncio.wait_for(fut, timeout)

    async def send(
        self,
        conversation: str,
        plaintext: bytes,
        msg_type: str = "text",
        meta: dict[str, Any] | None = None,
        client_id: str | None = None,
    ) -> dict[str, Any]:
        """Encrypt, sign and send; return the ack. Creates a new epoch when required.

        A store that did not answer in time (``store_unavailable``,
        ``store_outcome_unknown``), a server too busy checking signatures
        (``overloaded``) or a connection over its frame rate (``rate_limited``) is
        retried a few times with the same ``client_id`` after a short, growing wait:
        the server stores the message once.
        """
        client_id = client_id or secrets.token_hex(8)
        last: dict[str, Any] = {}
        waits = 0
        for _ in range(3 + len(_STORE_RETRY_WAITS)):
            epoch, key = await self.ensure_epoch(conversation)
            enc = encrypt_message(
                key,
                self.keys,
                conversation=conversation,
                epoch=epoch,
                sender_device=self.device_id,
                client_id=client_id,
                msg_type=msg_type,
                plaintext=plaintext,
                meta=meta or {},
            )
            last = await self._call(
                {
                    "type": "message.send",
                    "conversation": conversation,
                    "client_id": client_id,
                    "msg_type": msg_type,
                    "body": base64.b64encode(enc.ciphertext).decode(),
                    "nonce": base64.b64encode(enc.nonce).decode(),
                    "sig": base64.b64encode(enc.sig).decode(),
                    "epoch": epoch,
                    "meta": meta or {},
                    "v": FORMAT_VERSION,
                }
            )
            if last["type"] == "ack":
                self.state.seqs[conversation] = max(
                    self.state.seqs.get(conversation, 0), last["seq"]
                )
                return last
            code = last.get("code")
            if code in _RETRIED and waits < len(_STORE_RETRY_WAITS):
                await asyncio.sleep(_STORE_RETRY_WAITS[waits])
                waits += 1
                continue
            if code not in ("stale_epoch", "epoch_rotation_required"):
                break
        raise ClientError(last.get("code", "error"), last.get("message", ""))

    async def send_text(self, conversation: str, text: str, **kw: Any) -> dict[str, Any]:
        """Send a ``text`` message."""
        payload = json.dumps({"text": text}, ensure_ascii=False).encode()
        return await self.send(conversation, payload, "text", **kw)

    async def send_file(
        self, conversation: str, data: bytes, name: str, **kw: Any
    ) -> dict[str, Any]:
        """Encrypt, upload and send a file (``sdk/attachments.py``); return the ack."""
        from chat_server.sdk.attachments import send_file

        return await send_file(self, conversation, data, name, **kw)

    async def fetch_file(self, message: Received) -> tuple[Any, bytes]:
        """The body (name, type...) and the checked plaintext of an attachment message."""
        from chat_server.sdk.attachments import fetch_file

        return await fetch_file(self, message)

    async def scan_file(self, message: Received) -> dict[str, Any]:
        """The structure's scanning service's verdict on an attachment (``sdk/attachments.py``)."""
        from chat_server.sdk.attachments import scan_file

        return await scan_file(self, message)

    async def send_draft(self, conversation: str, draft: Draft) -> dict[str, Any]:
        """Send an item, a notice, an edit or a delete built by ``sdk.items``; return the ack."""
        return await self.send(
            conversation, draft.plaintext(), draft.msg_type, draft.meta, draft.client_id
        )

    async def items(self, conversation: str) -> dict[str, Any]:
        """``GET /api/conversations/{id}/items``: the server-visible state of the items."""
        data: dict[str, Any] = await self.request("GET", f"/api/conversations/{conversation}/items")
        return data

    async def mark_read(self, conversation: str, seq: int) -> None:
        """Move the read marker."""
        if self.ws is None:
            raise ClientError("not_connected", "call connect() first")
        await self.ws.send(
            json.dumps({"type": "read.mark", "conversation": conversation, "seq": seq})
        )

    async def history(
        self,
        conversation: str,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> tuple[list[Received], bool]:
        """A decrypted history page."""
        frame: dict[str, Any] = {
            "type": "history.get",
            "conversation": conversation,
            "limit": limit,
        }
        if before is not None:
            frame["before"] = before
        if after is not None:
            frame["after"] = after
        reply = await self._call(frame)
        if reply["type"] == "error":
            raise ClientError(reply["code"], reply["message"])
        return [await self.decrypt(m) for m in reply["messages"]], bool(reply["has_more"])

    async def all_history(self, conversation: str) -> list[Received]:
        """Every message of the conversation, decrypted, ascending."""
        out: list[Received] = []
        after = 0
        for _ in range(10_000):
            page, more = await self.history(conversation, after=after, limit=200)
            out.extend(page)
            if not more or not page:
                break
            after = page[-1].seq
        return out

    async def next_message(self, timeout: float = 10) -> Received:
        """The next received message (decrypted)."""
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def disconnect(self) -> None:
        """Close the WebSocket (the client can ``connect`` again and resume)."""
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self.ws = None
        self._reader = None

    async def close(self) -> None:
        """Disconnect and release the HTTP client."""
        await self.disconnect()
        for t in list(self._tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.http.aclose()


async def _post_json(base_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        r = await http.post(path, json={k: v for k, v in body.items() if v is not None})
    data: dict[str, Any] = r.json()
    if r.status_code >= 400:
        err = data.get("error", {})
        raise ClientError(err.get("code", "http_error"), err.get("message", ""), r.status_code)
    return data
