"""Signatures verified off the loop keep the order and the durability of ``message.send``.

Each test runs with each ``VERIFIER`` (threads, child process, loop).

Many signed messages are sent into one conversation at once (as a busy
process would receive them within one loop turn): the ``seq`` order follows
the order they arrived in, one bad signature in the middle is refused alone,
and what is refused is not stored. When the checks fall behind, a send is
refused with ``overloaded`` before its check, and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator

import pytest

from chat_server import protocol as p
from chat_server.crypto import DeviceKeys, encrypt_message, sign_registration
from chat_server.crypto.keys import verify_signature
from chat_server.crypto.verify_pool import MIN_CHUNK, SignatureChecks
from chat_server.rooms.errors import E2EEError, Overloaded
from chat_server.rooms.keys import E2EEVerifier
from chat_server.rooms.models import Device, User
from chat_server.rooms.service import ConversationService
from chat_server.services import Services, build_services
from chat_server.settings import Settings
from tests.helpers import b64, fast_world

EPOCH_KEY = bytes(range(32))


@pytest.fixture(params=["threads", "process", "loop"])
async def svc(request: pytest.FixtureRequest) -> AsyncIterator[Services]:
    services = await build_services(
        Settings(store="memory", require_e2ee=True, verifier=request.param, retention_job="off")
    )
    try:
        yield services
    finally:
        await services.close()


async def _signed_frames(
    svc: Services, count: int, bad: set[int]
) -> tuple[list[p.MessageSend], str, str, User]:
    world = await fast_world(svc)
    conv = world.conv["b1"]
    ben = world.b1
    keys = DeviceKeys.generate()
    now = time.time()
    await svc.key_store.add_device(
        Device(
            ben.device_id,
            ben.user.id,
            keys.public.dh_pub,
            keys.public.sig_pub,
            sign_registration(keys, ben.user.id, ben.device_id),
            now,
        )
    )
    await svc.key_store.add_epoch(conv, 1, ben.device_id, [], now, counsellor_id=world.c1.user.id)
    frames = []
    for i in range(count):
        enc = encrypt_message(
            EPOCH_KEY,
            keys,
            conversation=conv,
            epoch=1,
            sender_device=ben.device_id,
            client_id=f"m{i:03d}",
            msg_type="text",
            plaintext=json.dumps({"text": f"n°{i}"}).encode(),
        )
        sig = enc.sig if i not in bad else enc.sig[:-1] + bytes([enc.sig[-1] ^ 1])
        raw = {
            "type": "message.send",
            "id": f"f{i}",
            "conversation": conv,
            "client_id": f"m{i:03d}",
            "msg_type": "text",
            "body": b64(enc.ciphertext),
            "nonce": b64(enc.nonce),
            "sig": b64(sig),
            "epoch": 1,
            "v": 2,
        }
        frame = p.parse_client_frame(json.dumps(raw))
        assert isinstance(frame, p.MessageSend)
        frames.append(frame)
    return frames, conv, ben.device_id, ben.user


async def test_seq_follows_arrival_and_a_bad_signature_is_refused_alone(svc: Services) -> None:
    count, bad = 60, 23
    frames, conv, device, user = await _signed_frames(svc, count, {bad})
    results = await asyncio.gather(
        *(svc.conversations.send(user, device, f, origin="t") for f in frames),
        return_exceptions=True,
    )
    refused = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert refused == [bad]
    err = results[bad]
    assert isinstance(err, E2EEError)
    assert err.code == "bad_signature"
    seqs = [r[0].seq for r in results if not isinstance(r, BaseException)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == count - 1
    stored = await svc.messages.messages_after(conv, 0, 1000)
    assert [m.client_id for m in stored] == [f"m{i:03d}" for i in range(count) if i != bad]


async def test_a_resend_after_the_refusal_is_checked_again(svc: Services) -> None:
    frames, conv, device, user = await _signed_frames(svc, 2, {0})
    with pytest.raises(E2EEError):
        await svc.conversations.send(user, device, frames[0], origin="t")
    stored, created = await svc.conversations.send(user, device, frames[1], origin="t")
    assert created
    assert stored.seq == 1
    assert [m.client_id for m in await svc.messages.messages_after(conv, 0, 10)] == ["m001"]


async def test_overloaded_when_the_checks_are_behind_and_nothing_is_stored(svc: Services) -> None:
    # The real verification, behind a gate that holds the pool's thread.
    gate = threading.Event()

    def held(pub: bytes, data: bytes, sig: bytes) -> bool:
        gate.wait(5)
        return verify_signature(pub, data, sig)

    checks = SignatureChecks(1, check=held, max_wait=0.05)
    convs = ConversationService(
        svc.messages,
        svc.accounts_store,
        svc.presence,
        svc.hub,
        time.time,
        E2EEVerifier(svc.key_store, checks),
        svc.settings.max_body_bytes,
    )
    # MIN_CHUNK sends at once go to the thread (fewer are verified on the loop).
    frames, conv, device, user = await _signed_frames(svc, MIN_CHUNK + 1, set())
    try:
        first = asyncio.ensure_future(
            asyncio.gather(*(convs.send(user, device, f, origin="t") for f in frames[:-1]))
        )
        refused: Overloaded | None = None
        deadline = time.monotonic() + 5
        while refused is None and time.monotonic() < deadline:
            await asyncio.sleep(0.06)  # the two are with the held thread by now
            try:
                await convs.send(user, device, frames[-1], origin="t")
            except Overloaded as exc:
                refused = exc
        assert refused is not None
        assert (refused.code, refused.status) == ("overloaded", 503)
        assert await svc.messages.messages_after(conv, 0, 10) == []
        gate.set()
        acked = await asyncio.wait_for(first, 5)
        assert [s.seq for s, _created in acked] == list(range(1, MIN_CHUNK + 1))
        # The refused message, resent once the backlog is gone, is checked and stored.
        stored, created = await convs.send(user, device, frames[-1], origin="t")
        assert created
        assert stored.seq == MIN_CHUNK + 1
    finally:
        gate.set()
        await checks.close()
