"""HPKE against the RFC 9180 A.1.1 vector and against cryptography's own HPKE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from chat_server.crypto import hpke
from chat_server.crypto.errors import CryptoError, DecryptError, MalformedInput

# A verbatim copy of the project's shared RFC 9180 A.1.1 vector file.
VECTOR_PATH = Path(__file__).with_name("hpke-rfc9180-a1-base.json")


def _load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(VECTOR_PATH.read_text("utf-8"))
    return doc


V = _load()


def h(name: str) -> bytes:
    return bytes.fromhex(V[name])


def test_vector_is_the_suite_we_implement() -> None:
    assert (V["mode"], V["kem_id"], V["kdf_id"], V["aead_id"]) == ("0", "32", "1", "1")
    assert len(V["encryptions"]) == 6
    assert len(V["exports"]) == 3


def test_derive_key_pair() -> None:
    sk_e = hpke.derive_key_pair(h("ikmE"))
    sk_r = hpke.derive_key_pair(h("ikmR"))
    assert sk_e.private_bytes_raw() == h("skEm")
    assert sk_e.public_key().public_bytes_raw() == h("pkEm")
    assert sk_r.private_bytes_raw() == h("skRm")
    assert sk_r.public_key().public_bytes_raw() == h("pkRm")


def _sender() -> tuple[bytes, hpke.Context]:
    ephemeral = X25519PrivateKey.from_private_bytes(h("skEm"))
    return hpke.setup_sender(h("pkRm"), h("info"), ephemeral=ephemeral)


def _recipient() -> hpke.Context:
    return hpke.setup_recipient(h("enc"), X25519PrivateKey.from_private_bytes(h("skRm")), h("info"))


@pytest.mark.parametrize("side", ["sender", "recipient"])
def test_key_schedule(side: str) -> None:
    if side == "sender":
        enc, ctx = _sender()
        assert enc == h("enc")
    else:
        ctx = _recipient()
    s = ctx.schedule
    assert s.shared_secret == h("shared_secret")
    assert s.key_schedule_context == h("key_schedule_context")
    assert s.secret == h("secret")
    assert s.key == h("key")
    assert s.base_nonce == h("base_nonce")
    assert s.exporter_secret == h("exporter_secret")


def test_every_encryption_seals_and_opens() -> None:
    wanted = {int(e["sequence_number"]): e for e in V["encryptions"]}
    _, sender = _sender()
    recipient = _recipient()
    checked = []
    for seq in range(max(wanted) + 1):
        assert sender.seq == recipient.seq == seq
        entry = wanted.get(seq)
        if entry is None:  # advance both contexts through the unlisted numbers
            recipient.open(b"", sender.seal(b"", b"filler"))
            continue
        pt, aad, ct = (bytes.fromhex(entry[k]) for k in ("pt", "aad", "ct"))
        assert sender._nonce() == bytes.fromhex(entry["nonce"])
        assert sender.seal(aad, pt) == ct
        assert recipient.open(aad, ct) == pt
        checked.append(seq)
    assert checked == [0, 1, 2, 4, 255, 256]


def test_single_shot_matches_sequence_zero() -> None:
    first = V["encryptions"][0]
    pt, aad, ct = (bytes.fromhex(first[k]) for k in ("pt", "aad", "ct"))
    ephemeral = X25519PrivateKey.from_private_bytes(h("skEm"))
    assert hpke.seal_base(h("pkRm"), h("info"), aad, pt, ephemeral=ephemeral) == (h("enc"), ct)
    sk_r = X25519PrivateKey.from_private_bytes(h("skRm"))
    assert hpke.open_base(h("enc"), sk_r, h("info"), aad, ct) == pt


@pytest.mark.parametrize("index", range(3))
def test_every_export(index: int) -> None:
    entry = V["exports"][index]
    context, length = bytes.fromhex(entry["exporter_context"]), int(entry["L"])
    expected = bytes.fromhex(entry["exported_value"])
    _, sender = _sender()
    assert sender.export(context, length) == expected
    assert _recipient().export(context, length) == expected


def test_open_refuses_tampering_and_wrong_context() -> None:
    sk_r = X25519PrivateKey.generate()
    pk_r = sk_r.public_key().public_bytes_raw()
    enc, ct = hpke.seal_base(pk_r, b"info", b"aad", b"secret")
    assert hpke.open_base(enc, sk_r, b"info", b"aad", ct) == b"secret"
    tampered = bytes([ct[0] ^ 1]) + ct[1:]
    with pytest.raises(DecryptError):
        hpke.open_base(enc, sk_r, b"info", b"aad", tampered)
    with pytest.raises(DecryptError):
        hpke.open_base(enc, sk_r, b"other info", b"aad", ct)
    with pytest.raises(DecryptError):
        hpke.open_base(enc, sk_r, b"info", b"other aad", ct)
    with pytest.raises(DecryptError):
        hpke.open_base(enc, X25519PrivateKey.generate(), b"info", b"aad", ct)


def test_low_order_and_malformed_keys_are_refused() -> None:
    sk_r = X25519PrivateKey.generate()
    with pytest.raises(DecryptError):
        hpke.open_base(bytes(32), sk_r, b"", b"", bytes(32))
    with pytest.raises(MalformedInput):
        hpke.open_base(bytes(31), sk_r, b"", b"", bytes(32))
    with pytest.raises(MalformedInput):
        hpke.seal_base(bytes(33), b"", b"", b"pt")


def test_context_roles_and_limits() -> None:
    _, sender = _sender()
    recipient = _recipient()
    with pytest.raises(CryptoError):
        sender.open(b"", b"x" * 16)
    with pytest.raises(CryptoError):
        recipient.seal(b"", b"x")
    with pytest.raises(DecryptError):
        recipient.open(b"", b"x" * 16)
    assert recipient.seq == 0  # a failed open does not advance
    sender.seq = 2**96 - 1
    with pytest.raises(hpke.MessageLimitReached):
        sender.seal(b"", b"x")
    with pytest.raises(MalformedInput):
        recipient.export(b"", 0)


def test_interoperates_with_cryptography_hpke() -> None:
    """Without associated data our seal and cryptography's `Suite` speak the same bytes."""
    suite = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_128_GCM)
    sk_r = X25519PrivateKey.generate()
    pk_r = sk_r.public_key()
    enc, ct = hpke.seal_base(pk_r.public_bytes_raw(), b"ctx", b"", b"from us")
    assert suite.decrypt(enc + ct, sk_r, info=b"ctx") == b"from us"
    theirs = suite.encrypt(b"from them", pk_r, info=b"ctx")
    assert hpke.open_base(theirs[:32], sk_r, b"ctx", b"", theirs[32:]) == b"from them"
