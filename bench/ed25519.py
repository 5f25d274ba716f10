"""Ed25519 verifiers of the project: their edge-case decisions, and their speed.

    python -m bench.ed25519 --write tests/vectors/ed25519-edge.json   # regenerate the vectors
    python -m bench.ed25519 --speed                                   # µs per verification
    taskset -c 0,1 python -m bench.ed25519 --starved   # a verify thread beside a busy loop
    taskset -c 0 python -m bench.ed25519 --pool        # CPU per verification through the pool

The vector file lists edge cases (non-canonical S, small-order and
non-canonical public keys and R points, and the twelve cases of
"Taming the many EdDSAs", Chalkias, Garillot and Nikolaenko, SSR 2020,
github.com/novifinancial/ed25519-speccheck) with the decision of each
verifier: ``server`` (`chat_server.crypto.keys.verify_signature`: the
refusal of small-order keys, then libsodium, and OpenSSL through
``cryptography`` for what libsodium refuses), ``openssl`` (OpenSSL alone
with the same key rule: the server before issue #16), ``libsodium``
(PyNaCl alone, same key rule) and ``webcrypto``
(Chromium's ``crypto.subtle.verify``, filled by tests/web/test_ed25519_browser.py
which checks it). docs/crypto-format.md states the rules that follow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chat_server.crypto.ed25519 import libsodium_verifies, openssl_verifies
from chat_server.crypto.keys import DeviceKeys, is_small_order_sig_pub, verify_signature

L = 2**252 + 27742317777372353535851937790883648493

# The twelve cases of ed25519-speccheck (cases.txt): (what, msg, pub, sig).
SPECCHECK = [
    (
        "speccheck 0: small-order A and R, S = 0",
        "8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
        "0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "speccheck 1: small-order A, mixed-order R",
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
    ),
    (
        "speccheck 2: mixed-order A, small-order R",
        "aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"
        "8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e",
    ),
    (
        "speccheck 3: mixed-order A and R, both equations hold",
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f"
        "87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009",
    ),
    (
        "speccheck 4: mixed-order A and R, only the cofactored equation holds",
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed512"
        "5ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09",
    ),
    (
        "speccheck 5: mixed-order A and R, cofactored only (8h not reduced)",
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7"
        "e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405",
    ),
    (
        "speccheck 6: S > L (S + L of a valid S)",
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e"
        "547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514",
    ),
    (
        "speccheck 7: S much larger than L",
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa1942"
        "7e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22",
    ),
    (
        "speccheck 8: non-canonical R (y >= p)",
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f",
    ),
    (
        "speccheck 9: non-canonical R (y >= p), cofactored",
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "ca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908",
    ),
    (
        "speccheck 10: non-canonical A",
        "e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dc"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
    ),
    (
        "speccheck 11: non-canonical A, another message",
        "39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dc"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
    ),
]

# Encodings of small-order points, canonical and not (libsodium's list and the
# non-canonical spellings of y = 0, 1, -1).
SMALL_ORDER = {
    "identity (y = 1)": "0100000000000000000000000000000000000000000000000000000000000000",
    "identity, sign bit set": "0100000000000000000000000000000000000000000000000000000000000080",
    "order 2 (y = -1)": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "order 4 (y = 0)": "0000000000000000000000000000000000000000000000000000000000000000",
    "order 4 (y = 0), sign bit set": (
        "0000000000000000000000000000000000000000000000000000000000000080"
    ),
    "order 8": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8, other sign": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "order 8 (second pair)": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8 (second pair), other sign": (
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"
    ),
    "non-canonical y = p (0)": "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "non-canonical y = p + 1 (1)": (
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
    ),
    "non-canonical y = p, sign bit set": (
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    ),
}


def _own_cases() -> list[tuple[str, str, str, str]]:
    """Cases built here from a deterministic key (what, msg, pub, sig)."""
    seed = hashlib.sha256(b"cejchat/ed25519-edge/v1").digest()
    keys = DeviceKeys.from_private_bytes(seed, seed)
    pub = keys.public.sig_pub
    msg = b"cejchat edge case"
    sig = keys.sign(msg)
    s = int.from_bytes(sig[32:], "little")
    r_point = sig[:32]
    out = [
        ("valid signature", msg, pub, sig),
        ("valid signature, other message", msg + b"!", pub, sig),
        ("S + L (non-canonical S)", msg, pub, r_point + (s + L).to_bytes(32, "little")),
        ("S + 2L", msg, pub, r_point + (s + 2 * L).to_bytes(32, "little")),
        ("S with the top bit set", msg, pub, r_point + (s | 1 << 255).to_bytes(32, "little")),
        ("S = L", msg, pub, r_point + L.to_bytes(32, "little")),
        ("flipped bit in R", msg, pub, bytes([sig[0] ^ 1]) + sig[1:]),
        ("public key with the sign bit flipped", msg, pub[:31] + bytes([pub[31] ^ 0x80]), sig),
        ("empty message, signature of another", b"", pub, sig),
    ]
    for what, enc in SMALL_ORDER.items():
        a = bytes.fromhex(enc)
        out.append((f"small-order key {what}, R = A, S = 0", msg, a, a + bytes(32)))
        out.append(
            (f"small-order key {what}, R = identity, S = 0", msg, a, _identity() + bytes(32))
        )
    for what, enc in SMALL_ORDER.items():
        r = bytes.fromhex(enc)
        out.append((f"valid key, small-order R {what}, S = 0", msg, pub, r + bytes(32)))
    # R = the identity and S = k*a: the verification equation holds with a small-order R.
    h = hashlib.sha512(seed).digest()
    scalar = int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    for what in ("identity (y = 1)", "identity, sign bit set", "non-canonical y = p + 1 (1)"):
        r = bytes.fromhex(SMALL_ORDER[what])
        k = int.from_bytes(hashlib.sha512(r + pub + msg).digest(), "little") % L
        forged = r + (k * scalar % L).to_bytes(32, "little")
        out.append((f"valid key, R = {what}, S = k*a (the equation holds)", msg, pub, forged))
    return [(w, m.hex(), p.hex(), g.hex()) for w, m, p, g in out]


def _identity() -> bytes:
    return bytes.fromhex(SMALL_ORDER["identity (y = 1)"])


def _with_key_rule(
    verify: Callable[[bytes, bytes, bytes], bool],
) -> Callable[[bytes, bytes, bytes], bool]:
    """``verify`` behind the server's rules (lengths, small-order key refused)."""

    def checked(sig_pub: bytes, data: bytes, sig: bytes) -> bool:
        if len(sig_pub) != 32 or len(sig) != 64 or is_small_order_sig_pub(sig_pub):
            return False
        return verify(sig_pub, data, sig)

    return checked


#: PyNaCl (libsodium) alone, with the server's key rule.
libsodium_verify = _with_key_rule(libsodium_verifies)
#: OpenSSL (``cryptography``) alone, with the server's key rule: the server before issue #16.
openssl_verify = _with_key_rule(openssl_verifies)

VERIFIERS: dict[str, Callable[[bytes, bytes, bytes], bool]] = {
    "server": verify_signature,
    "openssl": openssl_verify,
    "libsodium": libsodium_verify,
}


def cases() -> list[dict[str, object]]:
    """Every case with each Python verifier's decision (``webcrypto`` kept from the file)."""
    rows: list[dict[str, object]] = []
    for what, msg, pub, sig in [*_own_cases(), *SPECCHECK]:
        row: dict[str, object] = {"what": what, "msg": msg, "pub": pub, "sig": sig}
        for name, verify in VERIFIERS.items():
            row[name] = verify(bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig))
        rows.append(row)
    return rows


def write(path: Path) -> None:
    """(Re)write the vector file, keeping the browser's column if it is there."""
    old: dict[str, object] = {}
    if path.is_file():
        for row in json.loads(path.read_text())["cases"]:
            old[row["what"]] = row.get("webcrypto")
    rows = cases()
    for row in rows:
        if old.get(str(row["what"])) is not None:
            row["webcrypto"] = old[str(row["what"])]
    doc = {
        "about": (
            "Ed25519 edge cases and each verifier's decision (true = accepted). "
            "Written by `python -m bench.ed25519 --write`; checked by "
            "tests/crypto/test_ed25519_edge.py and tests/web/test_ed25519_browser.py."
        ),
        "cases": rows,
    }
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def speed(rounds: int = 3, count: int = 3000) -> dict[str, tuple[float, float]]:
    """Median µs per verification of a 400-byte message, per verifier: (valid, invalid).

    The invalid signature is the valid one with one bit of S flipped (still
    canonical), so every verifier runs the whole equation before refusing.
    """
    keys = DeviceKeys.generate()
    data = bytes(range(200)) * 2
    sig = keys.sign(data)
    bad = sig[:40] + bytes([sig[40] ^ 1]) + sig[41:]
    pub = keys.public.sig_pub
    out: dict[str, tuple[float, float]] = {}
    for name, verify in VERIFIERS.items():
        medians = []
        for s in (sig, bad):
            runs = []
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(count):
                    verify(pub, data, s)
                runs.append((time.perf_counter() - start) / count * 1e6)
            medians.append(sorted(runs)[len(runs) // 2])
        out[name] = (medians[0], medians[1])
    return out


def starved(seconds: float = 1.0) -> dict[float, tuple[float, float]]:
    """Verifications per second by one pool-like thread while the main thread runs Python.

    Per switch interval: (thread's verifications/s, the same thread alone).
    Each verification releases the GIL and must take it back; while the main
    thread (the event loop at saturation) holds it, the thread waits up to
    the switch interval each time (docs/benchmarks.md, issue #16).
    """
    keys = DeviceKeys.generate()
    data = bytes(range(200)) * 2
    sig = keys.sign(data)
    pub = keys.public.sig_pub
    before = sys.getswitchinterval()
    out: dict[float, tuple[float, float]] = {}
    try:
        for interval in (before, 0.001, 0.0002):
            sys.setswitchinterval(interval)
            rates = []
            for busy in (True, False):
                stop = threading.Event()
                done = [0]

                def work(done: list[int] = done, stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        verify_signature(pub, data, sig)
                        done[0] += 1

                thread = threading.Thread(target=work)
                start = time.perf_counter()
                thread.start()
                while time.perf_counter() - start < seconds:
                    if not busy:
                        time.sleep(0.01)
                stop.set()
                thread.join()
                rates.append(done[0] / (time.perf_counter() - start))
            out[interval] = (rates[0], rates[1])
    finally:
        sys.setswitchinterval(before)
    return out


def pool_cost(count: int = 4000) -> dict[tuple[int, int], tuple[float, float]]:
    """CPU and wall µs per verification through `SignatureChecks`, per (batch, threads).

    ``batch`` verifications are asked for in one loop turn, ``count`` in all;
    the best of three runs. Shows what handing a batch to a thread costs.
    """
    import asyncio

    from chat_server.crypto.verify_pool import SignatureChecks

    keys = DeviceKeys.generate()
    data = bytes(range(200)) * 2
    sig = keys.sign(data)
    pub = keys.public.sig_pub

    async def one(threads: int, batch: int) -> tuple[float, float]:
        checks = SignatureChecks(threads)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(count // batch):
            await asyncio.gather(*(checks.verify(pub, data, sig) for _ in range(batch)))
        out = (
            (time.process_time() - cpu) / count * 1e6,
            (time.perf_counter() - wall) / count * 1e6,
        )
        await checks.close()
        return out

    async def every() -> dict[tuple[int, int], tuple[float, float]]:
        res: dict[tuple[int, int], tuple[float, float]] = {}
        for batch in (1, 2, 8, 32):
            for threads in (0, 1, 2):
                res[(batch, threads)] = min([await one(threads, batch) for _ in range(3)])
        return res

    return asyncio.run(every())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ed25519", description=__doc__)
    ap.add_argument("--write", type=Path, help="write the vector file here")
    ap.add_argument("--speed", action="store_true", help="µs per verification, per verifier")
    ap.add_argument(
        "--starved", action="store_true", help="a verify thread's rate while the loop is busy"
    )
    ap.add_argument("--pool", action="store_true", help="CPU per verification through the pool")
    args = ap.parse_args(argv)
    if args.write:
        write(args.write)
        rows = cases()
        differ = [r["what"] for r in rows if r["server"] != r["libsodium"]]
        print(f"{len(rows)} cases; server and libsodium differ on {len(differ)}: {differ}")
        wrong = [r["what"] for r in rows if r["server"] != r["openssl"]]
        if wrong:
            print(f"the server does not decide as OpenSSL alone on: {wrong}")
            return 1
    if args.speed:
        print("| verifier | µs, valid signature | µs, invalid signature |\n|---|---|---|")
        for name, (ok, bad) in speed().items():
            print(f"| {name} | {ok:.1f} | {bad:.1f} |")
    if args.starved:
        print("| switch interval | thread's verifications/s, main thread busy | alone |")
        print("|---|---|---|")
        for interval, (busy, alone) in starved().items():
            print(f"| {interval * 1000:g} ms | {busy:,.0f} | {alone:,.0f} |")
    if args.pool:
        print("| batch per loop turn | threads | CPU µs per verification | wall µs |")
        print("|---|---|---|---|")
        for (batch, threads), (cpu, wall) in pool_cost().items():
            print(f"| {batch} | {threads} | {cpu:.1f} | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
