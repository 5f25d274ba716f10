"""Epoch-key envelopes: HPKE to one device, signed by the sender."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chat_server.crypto import hpke
from chat_server.crypto.encoding import b64encode, lp
from chat_server.crypto.envelope import (
    Envelope,
    envelope_info,
    generate_epoch_key,
    open_envelope,
    verify_envelope_signature,
    wrap_epoch_key,
)
from chat_server.crypto.errors import BadSignature, DecryptError, MalformedInput
from chat_server.crypto.keys import DeviceKeys

SENDER = DeviceKeys.generate()
RECIPIENT = DeviceKeys.generate()
KEY = generate_epoch_key()


def _wrap(epoch: int = 3, recipient_device: str = "dev-r") -> Envelope:
    return wrap_epoch_key(
        KEY,
        sender=SENDER,
        sender_device="dev-s",
        recipient_device=recipient_device,
        recipient_dh_pub=RECIPIENT.public.dh_pub,
        conversation="conv-é",
        epoch=epoch,
    )


def _resign(envelope: Envelope, **changes: object) -> Envelope:
    """What a sender (or anyone holding its key) could produce: changed fields, valid sig."""
    changed = dataclasses.replace(envelope, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(changed, sig=SENDER.sign(changed.signed_bytes()))


def test_round_trip() -> None:
    envelope = _wrap()
    assert len(envelope.enc) == 32
    assert len(envelope.ct) == 48
    assert verify_envelope_signature(envelope, SENDER.public.sig_pub)
    assert open_envelope(envelope, RECIPIENT, SENDER.public.sig_pub) == KEY


def test_info_and_signed_bytes_follow_the_format() -> None:
    envelope = _wrap()
    info = lp("cejchat/envelope/v1") + lp("conv-é") + lp(b"3") + lp("dev-r")
    assert envelope.info == envelope_info("conv-é", 3, "dev-r") == info
    assert envelope.aad == lp("dev-s")
    assert envelope.signed_bytes() == (
        lp("cejchat/envelope-sig/v1")
        + lp(info)
        + lp(lp("dev-s"))
        + lp(envelope.enc)
        + lp(envelope.ct)
    )
    sk_r = RECIPIENT.dh_private_key
    assert hpke.open_base(envelope.enc, sk_r, info, lp("dev-s"), envelope.ct) == KEY


def test_json_round_trip() -> None:
    envelope = _wrap()
    doc = envelope.to_json()
    assert set(doc) == {
        "conversation",
        "epoch",
        "recipient_device",
        "sender_device",
        "enc",
        "ct",
        "sig",
    }
    assert doc["epoch"] == 3
    assert Envelope.from_json(doc) == envelope


def test_deterministic_with_fixed_ephemeral() -> None:
    ephemeral = X25519PrivateKey.generate()
    kwargs = {
        "sender": SENDER,
        "sender_device": "s",
        "recipient_device": "r",
        "recipient_dh_pub": RECIPIENT.public.dh_pub,
        "conversation": "c",
        "epoch": 1,
        "ephemeral": ephemeral,
    }
    assert wrap_epoch_key(KEY, **kwargs) == wrap_epoch_key(KEY, **kwargs)  # type: ignore[arg-type]


def test_tampered_ciphertext_is_refused() -> None:
    envelope = _wrap()
    flipped = bytes([envelope.ct[0] ^ 1]) + envelope.ct[1:]
    with pytest.raises(BadSignature):
        open_envelope(dataclasses.replace(envelope, ct=flipped), RECIPIENT, SENDER.public.sig_pub)
    with pytest.raises(DecryptError):
        open_envelope(_resign(envelope, ct=flipped), RECIPIENT, SENDER.public.sig_pub)


def test_forged_signature_is_refused() -> None:
    envelope = _wrap()
    forger = DeviceKeys.generate()
    forged = dataclasses.replace(envelope, sig=forger.sign(envelope.signed_bytes()))
    assert not verify_envelope_signature(forged, SENDER.public.sig_pub)
    with pytest.raises(BadSignature):
        open_envelope(forged, RECIPIENT, SENDER.public.sig_pub)
    with pytest.raises(BadSignature):
        open_envelope(envelope, RECIPIENT, forger.public.sig_pub)


@pytest.mark.parametrize(
    "changes",
    [
        {"recipient_device": "dev-other"},
        {"epoch": 4},
        {"conversation": "conv-other"},
        {"sender_device": "dev-other"},
    ],
)
def test_relabelled_envelope_does_not_open(changes: dict[str, object]) -> None:
    envelope = _wrap()
    with pytest.raises(BadSignature):  # relabelled by the server: signature breaks
        open_envelope(dataclasses.replace(envelope, **changes), RECIPIENT, SENDER.public.sig_pub)  # type: ignore[arg-type]
    with pytest.raises(DecryptError):  # even re-signed, HPKE info / aad bind the labels
        open_envelope(_resign(envelope, **changes), RECIPIENT, SENDER.public.sig_pub)


def test_wrong_recipient_key_does_not_open() -> None:
    with pytest.raises(DecryptError):
        open_envelope(_wrap(), DeviceKeys.generate(), SENDER.public.sig_pub)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("enc", "not base64!"),
        ("enc", b64encode(bytes(31))),
        ("ct", b64encode(bytes(48)) + "="),
        ("sig", b64encode(bytes(63))),
        ("epoch", "3"),
        ("epoch", -1),
        ("epoch", True),
        ("conversation", 7),
        ("sender_device", None),
    ],
)
def test_from_json_refuses_malformed_fields(field: str, value: object) -> None:
    doc: dict[str, object] = dict(_wrap().to_json())
    doc[field] = value
    with pytest.raises(MalformedInput, match=field):
        Envelope.from_json(doc)


def test_wrap_refuses_bad_inputs() -> None:
    with pytest.raises(MalformedInput):
        wrap_epoch_key(
            KEY[:16],
            sender=SENDER,
            sender_device="s",
            recipient_device="r",
            recipient_dh_pub=RECIPIENT.public.dh_pub,
            conversation="c",
            epoch=1,
        )
    with pytest.raises(MalformedInput):
        _wrap(epoch=-1)
