"""The Ed25519 edge-case vectors against every Python verifier (see bench/ed25519.py).

tests/vectors/ed25519-edge.json holds each verifier's decision per case; the
browser's column is checked by tests/web/test_ed25519_browser.py. The server
keeps `cryptography` (OpenSSL): libsodium refuses signatures whose R has
small order that OpenSSL and WebCrypto accept (docs/crypto-format.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.ed25519 import cases, libsodium_verify
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
def test_libsodium_decides_as_recorded(row: dict[str, Any]) -> None:
    assert libsodium_verify(*_args(row)) is row["libsodium"]


def test_the_file_is_what_the_generator_writes() -> None:
    fresh = cases()
    stored = _rows()
    assert [
        {k: r[k] for k in ("what", "msg", "pub", "sig", "server", "libsodium")} for r in stored
    ] == fresh


def test_where_the_verifiers_differ() -> None:
    # The reason the server does not switch to libsodium although it is faster.
    rows = _rows()
    differ = {r["what"] for r in rows if r["server"] != r["libsodium"]}
    assert differ == {
        "valid key, R = identity (y = 1), S = k*a (the equation holds)",
        "speccheck 2: mixed-order A, small-order R",
    }
    assert all(r["webcrypto"] == r["server"] for r in rows)
    assert sum(r["server"] for r in rows) == 4
