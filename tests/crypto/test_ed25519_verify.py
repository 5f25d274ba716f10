"""`chat_server.crypto.ed25519.verify` decides as OpenSSL alone on altered signatures.

The edge vectors (test_ed25519_edge.py) cover the published corner cases;
this adds many ordinary forgeries: one bit of R, S, the key or the message
flipped, S + L, R or the key replaced by a small-order point, and the valid
signatures themselves. Every case: the combined verifier equals OpenSSL,
and libsodium accepts nothing OpenSSL refuses.
"""

from __future__ import annotations

import random

from chat_server.crypto import ed25519
from chat_server.crypto.keys import DeviceKeys, verify_signature

L = 2**252 + 27742317777372353535851937790883648493
# Encodings of small-order points: the identity, a point of order 2, one of order 4.
SMALL = [
    (1).to_bytes(32, "little"),
    ((2**255 - 19) - 1).to_bytes(32, "little"),
    bytes(32),
]


def _cases(rng: random.Random, keys: int = 12) -> list[tuple[str, bytes, bytes, bytes]]:
    out: list[tuple[str, bytes, bytes, bytes]] = []
    for _ in range(keys):
        k = DeviceKeys.generate()
        pub = k.public.sig_pub
        msg = rng.randbytes(rng.randint(0, 400))
        sig = k.sign(msg)
        out.append(("valid", pub, msg, sig))
        for _ in range(8):
            i = rng.randrange(512)
            flipped = bytearray(sig)
            flipped[i // 8] ^= 1 << (i % 8)
            out.append(("bit of R or S", pub, msg, bytes(flipped)))
            j = rng.randrange(256)
            other = bytearray(pub)
            other[j // 8] ^= 1 << (j % 8)
            out.append(("bit of the key", bytes(other), msg, sig))
            if msg:
                m = bytearray(msg)
                m[rng.randrange(len(m))] ^= 1 << rng.randrange(8)
                out.append(("bit of the message", pub, bytes(m), sig))
        s_plus_l = (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")
        out.append(("S + L", pub, msg, sig[:32] + s_plus_l))
        for point in SMALL:
            out.append(("small-order R", pub, msg, point + sig[32:]))
            out.append(("small-order key", point, msg, sig))
    return out


def test_combined_verifier_decides_as_openssl() -> None:
    rng = random.Random(16)
    cases = _cases(rng)
    assert len(cases) > 300
    for what, pub, msg, sig in cases:
        by_openssl = ed25519.openssl_verifies(pub, msg, sig)
        assert ed25519.verify(pub, msg, sig) is by_openssl, what
        if ed25519.libsodium_verifies(pub, msg, sig):
            assert by_openssl, what
    # Not vacuous: both answers occur.
    assert sum(ed25519.verify(p, m, s) for _, p, m, s in cases) >= 12


def test_verify_signature_refuses_what_openssl_refuses_and_keeps_the_key_rule() -> None:
    k = DeviceKeys.generate()
    msg = b"cejchat"
    sig = k.sign(msg)
    assert verify_signature(k.public.sig_pub, msg, sig) is True
    assert verify_signature(k.public.sig_pub, msg + b"!", sig) is False
    # The identity as key, R = identity, S = 0: OpenSSL accepts it for any message,
    # libsodium does not, and the server refuses the key before asking either.
    identity = (1).to_bytes(32, "little")
    forged = identity + bytes(32)
    assert ed25519.openssl_verifies(identity, msg, forged) is True
    assert ed25519.libsodium_verifies(identity, msg, forged) is False
    assert verify_signature(identity, msg, forged) is False
    assert verify_signature(k.public.sig_pub, msg, sig[:63]) is False
