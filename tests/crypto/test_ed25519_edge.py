"""The Ed25519 edge-case vectors against every Python verifier (see bench/ed25519.py).

tests/vectors/ed25519-edge.json holds each verifier's decision per case; the
browser's column is checked by tests/web/test_ed25519_browser.py. The server
asks libsodium first and OpenSSL when libsodium refuses, which is OpenSSL's
accept set only because libsodium accepts nothing OpenSSL refuses: checked
here on every case, with and without the server's key rule
(docs/crypto-format.md, "Ed25519 validation rules").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.ed25519 import cases, libsodium_verify, openssl_verify
from chat_server.crypto import ed25519
from chat_server.crypto.keys import verify_signature

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ed25519-edge.json"


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(VECTORS.read_text())["cases"]
    return rows


def _args(row: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    return bytes.fromhex(row["pub"]), bytes.fromhex(row["msg"]), bytes.fromhex(row["sig"])


@pytest.mark.parametrize("row", _rows(), ids=lambda r: str(r["what"]))
def test_server_decides_as_recorded(row: dict[str, Any]) -> None:
    assert verify_signature(*_args(row)) is row["server"]


@pytest.mark.parametrize("row", _rows(), ids=lambda r: str(r["what"]))
def test_openssl_alone_decides_as_recorded(row: dict[str, Any]) -> None:
    assert openssl_verify(*_args(row)) is row["openssl"]


@pytest.mark.parametrize("row", _rows(), ids=lambda r: str(r["what"]))
def test_libsodium_decides_as_recorded(row: dict[str, Any]) -> None:
    assert libsodium_verify(*_args(row)) is row["libsodium"]


def test_the_file_is_what_the_generator_writes() -> None:
    fresh = cases()
    stored = _rows()
    assert [
        {k: r[k] for k in ("what", "msg", "pub", "sig", "server", "openssl", "libsodium")}
        for r in stored
    ] == fresh


def test_the_server_decides_as_openssl_alone() -> None:
    # libsodium first changed the cost, not the decisions of the server before issue #16.
    rows = _rows()
    assert [r["server"] for r in rows] == [r["openssl"] for r in rows]


@pytest.mark.parametrize("row", _rows(), ids=lambda r: str(r["what"]))
def test_libsodium_accepts_nothing_openssl_refuses(row: dict[str, Any]) -> None:
    # Without the key rule too: the raw libraries, small-order keys included.
    pub, msg, sig = _args(row)
    if len(pub) == 32 and len(sig) == 64 and ed25519.libsodium_verifies(pub, msg, sig):
        assert ed25519.openssl_verifies(pub, msg, sig)


def test_where_the_verifiers_differ() -> None:
    # libsodium alone would refuse two signatures OpenSSL and WebCrypto accept,
    # which is why it only gives the first opinion.
    rows = _rows()
    differ = {r["what"] for r in rows if r["server"] != r["libsodium"]}
    assert differ == {
        "valid key, R = identity (y = 1), S = k*a (the equation holds)",
        "speccheck 2: mixed-order A, small-order R",
    }
    assert all(r["webcrypto"] == r["server"] for r in rows)
    assert sum(r["server"] for r in rows) == 4
