"""``python -m bench.signed_path``: µs per message of each step of the signed path.

One process, one thread, the same bench message each time (a 100-300
character text, real AES-GCM and Ed25519 from ``chat_server.crypto``):
parsing the frame, building the signed bytes the way the server did before
issue #16 (``canonical_meta`` for the check, then ``message_signed_bytes``,
which encodes the meta and the whole associated data again) and the way it
does now (``aad_head_v2`` cached per conversation, epoch and device; the
canonical meta reused), and one verification by the server's verifier
(libsodium first, OpenSSL for what it refuses), by ``cryptography`` alone
and by PyNaCl alone. Medians of ``--rounds`` rounds; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from collections.abc import Callable

from bench.ed25519 import libsodium_verify, openssl_verify
from chat_server import protocol as p
from chat_server.crypto import DeviceKeys, encrypt_message, text_plaintext
from chat_server.crypto.keys import verify_signature
from chat_server.crypto.message import aad_head_v2, message_signed_bytes, signed_bytes_v2
from chat_server.crypto.meta import canonical_meta


def _frame() -> tuple[str, DeviceKeys]:
    keys = DeviceKeys.generate()
    m = encrypt_message(
        bytes(32),
        keys,
        conversation="c_0123456789abcdef0123",
        epoch=1,
        sender_device="d_0123456789abcdef0123",
        client_id="a1b2c3.s1f",
        msg_type="text",
        plaintext=text_plaintext("Bonjour, j'ai un entretien demain à 10 h, " * 5),
    )
    raw = {
        "type": "message.send",
        "id": "f1",
        "conversation": "c_0123456789abcdef0123",
        "client_id": "a1b2c3.s1f",
        "msg_type": "text",
        "body": base64.b64encode(m.ciphertext).decode(),
        "nonce": base64.b64encode(m.nonce).decode(),
        "sig": base64.b64encode(m.sig).decode(),
        "epoch": 1,
        "v": 2,
    }
    return json.dumps(raw), keys


def measure(rounds: int = 5, count: int = 5000) -> dict[str, float]:
    """Median µs per call of each step."""
    text, keys = _frame()
    frame = p.parse_client_frame(text)
    assert isinstance(frame, p.MessageSend)
    device = "d_0123456789abcdef0123"
    heads: dict[tuple[str, int, str], bytes] = {}

    def old() -> bytes | None:
        canonical_meta(frame.meta)
        return message_signed_bytes(
            frame.conversation,
            frame.epoch,
            device,
            frame.client_id,
            frame.msg_type,
            frame.nonce,
            frame.body,
            meta=frame.meta,
            version=frame.v,
        )

    def new() -> bytes:
        meta = canonical_meta(frame.meta)
        key = (frame.conversation, frame.epoch, device)
        head = heads.get(key)
        if head is None:
            head = heads[key] = aad_head_v2(*key)
        return signed_bytes_v2(head, frame.client_id, frame.msg_type, meta, frame.nonce, frame.body)

    signed = new()
    assert signed == old()
    pub = keys.public.sig_pub
    steps: dict[str, Callable[[], object]] = {
        "parse the frame (msgspec, base64 included)": lambda: p.parse_client_frame(text),
        "signed bytes, before (meta twice, whole aad)": old,
        "signed bytes, now (cached head, meta once)": new,
        "verify, server (libsodium first, OpenSSL for its refusals)": lambda: verify_signature(
            pub, signed, frame.sig
        ),
        "verify, OpenSSL alone (the server before #16), same key check": lambda: openssl_verify(
            pub, signed, frame.sig
        ),
        "verify, PyNaCl (libsodium) alone, same key check": lambda: libsodium_verify(
            pub, signed, frame.sig
        ),
    }
    out: dict[str, float] = {}
    for name, fn in steps.items():
        runs = []
        n = count // 5 if name.startswith("verify") else count
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            runs.append((time.perf_counter() - start) / n * 1e6)
        out[name] = statistics.median(runs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.signed_path", description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    print("| step | µs per message |\n|---|---|")
    for name, us in measure(args.rounds).items():
        print(f"| {name} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
