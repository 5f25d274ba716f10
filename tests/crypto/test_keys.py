"""Device keys and signed registrations."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chat_server.crypto.encoding import lp
from chat_server.crypto.errors import MalformedInput
from chat_server.crypto.keys import (
    DeviceKeys,
    DevicePublicKeys,
    is_small_order_dh_pub,
    is_small_order_sig_pub,
    registration_bytes,
    sign_registration,
    verify_registration,
    verify_signature,
)


def test_private_bytes_round_trip() -> None:
    keys = DeviceKeys.generate()
    again = DeviceKeys.from_private_bytes(keys.dh_priv, keys.sig_priv)
    assert again.public == keys.public
    assert len(keys.public.dh_pub) == len(keys.public.sig_pub) == 32
    assert keys.public.dh_pub != keys.public.sig_pub
    assert keys.sig_priv.hex() not in repr(keys)


@pytest.mark.parametrize(("dh", "sig"), [(bytes(31), bytes(32)), (bytes(32), bytes(33))])
def test_wrong_key_lengths_are_refused(dh: bytes, sig: bytes) -> None:
    with pytest.raises(MalformedInput):
        DeviceKeys.from_private_bytes(dh, sig)
    with pytest.raises(MalformedInput):
        DevicePublicKeys(dh_pub=dh, sig_pub=sig)


def test_registration_bytes_follow_the_format() -> None:
    public = DevicePublicKeys(dh_pub=b"d" * 32, sig_pub=b"s" * 32)
    assert registration_bytes("u", "dév", public) == (
        b"\x00\x00\x00\x11cejchat/device/v1"
        + b"\x00\x00\x00\x01u"
        + b"\x00\x00\x00\x04d\xc3\xa9v"
        + lp(b"d" * 32)
        + lp(b"s" * 32)
    )


def test_registration_signature() -> None:
    keys = DeviceKeys.generate()
    sig = sign_registration(keys, "user-1", "device-1")
    assert verify_registration(keys.public, "user-1", "device-1", sig)
    assert not verify_registration(keys.public, "user-2", "device-1", sig)
    assert not verify_registration(keys.public, "user-1", "device-2", sig)
    other = DeviceKeys.generate().public
    swapped_dh = DevicePublicKeys(dh_pub=other.dh_pub, sig_pub=keys.public.sig_pub)
    assert not verify_registration(swapped_dh, "user-1", "device-1", sig)
    forged = DeviceKeys.generate()
    forged_public = DevicePublicKeys(dh_pub=keys.public.dh_pub, sig_pub=forged.public.sig_pub)
    assert not verify_registration(forged_public, "user-1", "device-1", sig)
    assert not verify_registration(keys.public, "\ud800", "device-1", sig)


@pytest.mark.parametrize(
    ("sig_pub", "data", "sig"),
    [
        (b"", b"x", bytes(64)),
        (bytes(32), b"x", bytes(64)),  # small-order key: OpenSSL alone would accept
        (b"k" * 32, b"x", b"short"),
        ("text", b"x", bytes(64)),
        (b"k" * 32, "text", bytes(64)),
        (None, None, None),
    ],
)
def test_verify_signature_never_raises(sig_pub: object, data: object, sig: object) -> None:
    assert verify_signature(sig_pub, data, sig) is False  # type: ignore[arg-type]


P = 2**255 - 19
# Montgomery u of the small-order Curve25519 points (orders 1/2, 4, 2, 8, 8).
SMALL_ORDER_U = [
    0,
    1,
    P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
]


def _edwards_encodings(u: int) -> list[bytes]:
    """Both sign encodings of the Ed25519 point(s) whose Montgomery u is `u`."""
    y = (u - 1) * pow(u + 1, P - 2, P) % P
    return [(y | sign << 255).to_bytes(32, "little") for sign in (0, 1)]


SMALL_ORDER_SIG_PUBS = [
    enc for u in SMALL_ORDER_U if u != P - 1 for enc in _edwards_encodings(u)
] + [(1).to_bytes(32, "little"), (P + 1).to_bytes(32, "little")]  # neutral point


def test_openssl_alone_accepts_a_forgery_under_a_small_order_key() -> None:
    """Why the small-order check exists: this pair verifies in OpenSSL."""
    Ed25519PublicKey.from_public_bytes(bytes(32)).verify(bytes(64), b"x")
    assert is_small_order_sig_pub(bytes(32))
    assert not verify_signature(bytes(32), b"x", bytes(64))


@pytest.mark.parametrize("sig_pub", SMALL_ORDER_SIG_PUBS)
def test_small_order_sig_pubs_are_refused(sig_pub: bytes) -> None:
    assert is_small_order_sig_pub(sig_pub)
    public = DevicePublicKeys(dh_pub=DeviceKeys.generate().public.dh_pub, sig_pub=sig_pub)
    assert not verify_registration(public, "u", "d", bytes(64))


@pytest.mark.parametrize("u", SMALL_ORDER_U)
def test_small_order_dh_pubs_are_refused_at_registration(u: int) -> None:
    keys = DeviceKeys.generate()
    public = DevicePublicKeys(dh_pub=u.to_bytes(32, "little"), sig_pub=keys.public.sig_pub)
    sig = keys.sign(registration_bytes("u", "d", public))
    assert is_small_order_dh_pub(public.dh_pub)
    assert not verify_registration(public, "u", "d", sig)


def test_generated_keys_are_not_small_order() -> None:
    for _ in range(50):
        public = DeviceKeys.generate().public
        assert not is_small_order_sig_pub(public.sig_pub)
        assert not is_small_order_dh_pub(public.dh_pub)
