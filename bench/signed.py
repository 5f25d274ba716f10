"""``--signed``: real end-to-end encrypted, signed messages, checked by the server.

Each seeded user has one registered device whose keys are derived from the
user id (so the seeding side and the load generator agree without talking),
and each conversation has epoch 1 with an HPKE envelope for both devices.
Clients encrypt and sign every message with ``chat_server.crypto`` before the
measurement starts (about 0.1 ms each), so the load generator's core is not
spent on Ed25519 while the server is measured.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
import time
from typing import TYPE_CHECKING

from bench.workload import TEXT_CHARS, conversation_id, device_of, user_ids
from chat_server.crypto import DeviceKeys, encrypt_message, sign_registration, text_plaintext
from chat_server.crypto.envelope import wrap_epoch_key
from chat_server.rooms.models import Device, EnvelopeRecord
from chat_server.storage.base import Conflict, KeyStore

if TYPE_CHECKING:
    from bench.loadgen import Generator

EPOCH = 1
_LETTERS = "abcdefghijklmnopqrstuvwxyz     éèàçê,.'ABCDEFGHIJ0123456789"


def device_keys(user_id: str) -> DeviceKeys:
    """The bench device keys of ``user_id`` (deterministic; never use this outside a bench)."""
    dh = hashlib.sha256(b"bench-dh:" + user_id.encode()).digest()
    sig = hashlib.sha256(b"bench-sig:" + user_id.encode()).digest()
    return DeviceKeys.from_private_bytes(dh, sig)


def epoch_key(conversation: str) -> bytes:
    """The bench key of epoch 1 of ``conversation``."""
    return hashlib.sha256(b"bench-epoch:" + conversation.encode()).digest()


async def seed_keys(keys: KeyStore, first: int, count: int) -> None:
    """Register both devices of each pair and create epoch 1 with both envelopes."""
    now = time.time()
    for pair in range(first, first + count):
        ids = user_ids(pair)
        conv = conversation_id(pair)
        pubs = {}
        for uid in ids:
            k = device_keys(uid)
            pubs[uid] = k.public
            dev = device_of(uid)
            with contextlib.suppress(Conflict):
                await keys.add_device(
                    Device(
                        dev,
                        uid,
                        k.public.dh_pub,
                        k.public.sig_pub,
                        sign_registration(k, uid, dev),
                        now,
                    )
                )
        sender = device_keys(ids[1])
        envelopes = []
        for uid in ids:
            e = wrap_epoch_key(
                epoch_key(conv),
                sender=sender,
                sender_device=device_of(ids[1]),
                recipient_device=device_of(uid),
                recipient_dh_pub=pubs[uid].dh_pub,
                conversation=conv,
                epoch=EPOCH,
            )
            envelopes.append(
                EnvelopeRecord(conv, EPOCH, e.recipient_device, e.sender_device, e.enc, e.ct, e.sig)
            )
        with contextlib.suppress(Conflict):
            await keys.add_epoch(
                conv, EPOCH, device_of(ids[1]), envelopes, now, counsellor_id=ids[1]
            )


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_LETTERS) for _ in range(rng.randint(*TEXT_CHARS)))


def presign(gen: Generator) -> None:
    """Encrypt and sign ``job.signed_messages`` messages per client, ahead of the run."""
    job = gen.job
    if gen.dialect.name != "chat":
        return
    rng = random.Random(job.seed)
    texts = [text_plaintext(_text(rng)) for _ in range(64)]
    for c in gen.clients:
        keys = device_keys(c.user)
        key = epoch_key(c.conv)
        out = []
        for n in range(job.signed_messages, 0, -1):
            client_id = f"{gen.tag}{c.idx:x}.s{n:x}"
            m = encrypt_message(
                key,
                keys,
                conversation=c.conv,
                epoch=EPOCH,
                sender_device=device_of(c.user),
                client_id=client_id,
                msg_type="text",
                plaintext=texts[n % len(texts)],
            )
            frame = gen.dialect.message(
                c.conv,
                client_id,
                base64.b64encode(m.ciphertext),
                base64.b64encode(m.nonce),
                base64.b64encode(m.sig),
                EPOCH,
            )
            out.append((client_id, frame))
        c.presigned = out
