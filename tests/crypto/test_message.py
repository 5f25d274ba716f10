"""Message encryption, the server's signature check, and recipients' decryption."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chat_server.crypto.encoding import lp
from chat_server.crypto.envelope import generate_epoch_key
from chat_server.crypto.errors import BadSignature, DecryptError, MalformedInput
from chat_server.crypto.keys import DeviceKeys
from chat_server.crypto.message import (
    EncryptedMessage,
    decrypt_message,
    encrypt_message,
    message_aad,
    read_text,
    signed_bytes,
    text_plaintext,
    verify_message_signature,
)

SENDER = DeviceKeys.generate()
KEY = generate_epoch_key()
HEADER: dict[str, Any] = {
    "conversation": "conv-1",
    "epoch": 2,
    "sender_device": "dev-c1",
    "client_id": "c1-0001",
    "msg_type": "appointment",
    "meta": {"item": "rdv-1", "event": "created", "starts_at": 1_795_000_000},
}
PLAINTEXT = text_plaintext("Ça marche, à jeudi ! Œuvre, naïveté 🙂")


def _encrypt(**header: Any) -> EncryptedMessage:
    return encrypt_message(KEY, SENDER, plaintext=PLAINTEXT, **(HEADER | header))


def _verify(message: EncryptedMessage, sig_pub: bytes | None = None, **header: Any) -> bool:
    h = HEADER | header
    return verify_message_signature(
        SENDER.public.sig_pub if sig_pub is None else sig_pub,
        h["conversation"],
        h["epoch"],
        h["sender_device"],
        h["client_id"],
        h["msg_type"],
        message.nonce,
        message.ciphertext,
        message.sig,
        meta=h["meta"],
        version=h.get("version", 2),
    )


def _decrypt(message: EncryptedMessage, key: bytes = KEY, **header: Any) -> bytes:
    return decrypt_message(
        key,
        SENDER.public.sig_pub,
        nonce=message.nonce,
        ciphertext=message.ciphertext,
        sig=message.sig,
        **(HEADER | header),
    )


def test_round_trip() -> None:
    message = _encrypt()
    assert len(message.nonce) == 12
    assert len(message.ciphertext) == len(PLAINTEXT) + 16
    assert _verify(message)
    assert read_text(_decrypt(message)) == "Ça marche, à jeudi ! Œuvre, naïveté 🙂"


def test_nonces_are_fresh() -> None:
    assert _encrypt().nonce != _encrypt().nonce


def test_aad_and_signed_bytes_follow_the_format() -> None:
    meta = {"starts_at": 1_795_000_000, "event": "created"}
    aad = message_aad("conv-1", 2, "dev-c1", "c1-0001", "appointment", meta=meta)
    assert aad == (
        lp("cejchat/msg/v2")
        + lp("conv-1")
        + lp("2")
        + lp("dev-c1")
        + lp("c1-0001")
        + lp("appointment")
        + lp("2")
        + lp(b'{"event":"created","starts_at":1795000000}')
    )
    assert signed_bytes(aad, b"n" * 12, b"ct") == (
        lp("cejchat/msg-sig/v2") + lp(aad) + lp(b"n" * 12) + lp(b"ct")
    )
    assert message_aad("c", 1, "d", "m", "text").endswith(lp("2") + lp(b"{}"))


def test_version_1_is_still_read_and_binds_no_meta() -> None:
    v1 = message_aad("conv-1", 2, "dev-c1", "c1-0001", "text", version=1, meta={"a": 1})
    assert v1 == (
        lp("cejchat/msg/v1")
        + lp("conv-1")
        + lp("2")
        + lp("dev-c1")
        + lp("c1-0001")
        + lp("text")
        + lp("1")
    )
    assert signed_bytes(v1, b"n", b"ct", version=1) == (
        lp("cejchat/msg-sig/v1") + lp(v1) + lp(b"n") + lp(b"ct")
    )
    old = _encrypt(version=1)
    assert read_text(_decrypt(old, version=1)) == read_text(PLAINTEXT)
    # Relabelling a version 1 message as version 2 (or back) does not verify.
    assert not _verify(old)
    with pytest.raises(BadSignature):
        _decrypt(old)
    assert not _verify(_encrypt(), version=1)
    with pytest.raises(MalformedInput):
        message_aad("c", 1, "d", "m", "text", version=3)


def test_text_plaintext_is_compact_utf8_json() -> None:
    assert text_plaintext("é") == '{"text":"é"}'.encode()
    with pytest.raises(MalformedInput):
        read_text(b'{"body": "x"}')
    with pytest.raises(MalformedInput):
        read_text(b"\xff")
    with pytest.raises(MalformedInput):
        text_plaintext("\ud800")


def test_tampered_ciphertext_is_refused() -> None:
    message = _encrypt()
    flipped = bytes([message.ciphertext[0] ^ 1]) + message.ciphertext[1:]
    tampered = dataclasses.replace(message, ciphertext=flipped)
    assert not _verify(tampered)
    with pytest.raises(BadSignature):
        _decrypt(tampered)
    resigned = dataclasses.replace(
        tampered,
        sig=SENDER.sign(signed_bytes(message_aad(**HEADER), message.nonce, flipped)),
    )
    assert _verify(resigned)
    with pytest.raises(DecryptError):
        _decrypt(resigned)


def test_forged_signature_is_refused() -> None:
    message = _encrypt()
    forger = DeviceKeys.generate()
    forged = dataclasses.replace(
        message,
        sig=forger.sign(signed_bytes(message_aad(**HEADER), message.nonce, message.ciphertext)),
    )
    assert not _verify(forged)
    assert not _verify(message, sig_pub=forger.public.sig_pub)
    with pytest.raises(BadSignature):
        _decrypt(forged)


@pytest.mark.parametrize(
    "changes",
    [
        {"epoch": 3},
        {"conversation": "conv-2"},
        {"sender_device": "dev-j1"},
        {"client_id": "c1-0002"},
        {"msg_type": "action"},
        {"meta": {"item": "rdv-1", "event": "cancelled", "starts_at": 1_795_000_000}},
        {"meta": {"item": "rdv-1", "event": "created", "starts_at": 1_795_003_600}},
        {"meta": {"item": "rdv-1", "event": "created"}},
        {"meta": {}},
    ],
)
def test_relabelled_message_is_refused(changes: dict[str, Any]) -> None:
    message = _encrypt()
    assert not _verify(message, **changes)
    with pytest.raises(BadSignature):
        _decrypt(message, **changes)
    # Even a sender signing the new labels over the old ciphertext cannot move it.
    resigned = dataclasses.replace(
        message,
        sig=SENDER.sign(
            signed_bytes(message_aad(**(HEADER | changes)), message.nonce, message.ciphertext)
        ),
    )
    assert _verify(resigned, **changes)
    with pytest.raises(DecryptError):
        _decrypt(resigned, **changes)


def test_wrong_epoch_key_is_refused() -> None:
    with pytest.raises(DecryptError):
        _decrypt(_encrypt(), key=generate_epoch_key())
    with pytest.raises(MalformedInput):
        _decrypt(_encrypt(), key=KEY[:16])


@pytest.mark.parametrize(
    "changes",
    [
        {"sig_pub": b"short"},
        {"sig_pub": "not bytes"},
        {"sig_pub": bytes(32)},
        {"epoch": -1},
        {"epoch": 2**53},
        {"epoch": "2"},
        {"epoch": True},
        {"epoch": None},
        {"conversation": None},
        {"client_id": "\udc00"},
        {"msg_type": 5},
        {"nonce": b"\x00" * 11},
        {"nonce": None},
        {"ciphertext": b"x" * 15},
        {"ciphertext": "text"},
        {"sig": b"\x00" * 63},
        {"sig": None},
        {"meta": {"item": "rdv-1", "event": "created", "starts_at": 1_795_000_000.0}},
        {"meta": {"bad key": 1}},
        {"meta": {"item": "\udc00"}},
        {"meta": ["not", "an", "object"]},
        {"version": 1},
        {"version": 3},
        {"version": True},
    ],
)
def test_server_check_never_raises(changes: dict[str, Any]) -> None:
    message = _encrypt()
    args: dict[str, Any] = {
        "sig_pub": SENDER.public.sig_pub,
        **HEADER,
        "nonce": message.nonce,
        "ciphertext": message.ciphertext,
        "sig": message.sig,
    }
    assert verify_message_signature(**args) is True
    assert verify_message_signature(**(args | changes)) is False


def test_explicit_nonce_must_be_12_bytes() -> None:
    with pytest.raises(MalformedInput):
        _encrypt(nonce=b"\x00" * 8)
    assert _encrypt(nonce=b"\x01" * 12).nonce == b"\x01" * 12
