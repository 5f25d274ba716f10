"""Attachment format v1 (docs/crypto-format.md, "Attachments"): vectors, faults, body."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from chat_server.crypto.attachment import (
    CHUNK_SIZE,
    HEADER,
    SEALED_CHUNK,
    AttachmentBody,
    ChunkDecryptor,
    ciphertext_size,
    decrypt_blob,
    encrypt_chunks,
    new_file_key,
    sniff_media_type,
)
from chat_server.crypto.errors import DecryptError, MalformedInput

VECTORS = Path(__file__).with_name("attachment-v1.json")


def plaintext_of(size: int) -> bytes:
    return bytes((i * 7 + size) % 251 for i in range(size))


def blob_of(key: bytes, data: bytes) -> bytes:
    return b"".join(encrypt_chunks(key, data))


def cases() -> list[dict[str, Any]]:
    doc: dict[str, Any] = json.loads(VECTORS.read_text())
    out: list[dict[str, Any]] = doc["cases"]
    return out


@pytest.mark.parametrize("case", cases(), ids=lambda c: f"size={c['size']}")
def test_vectors(case: dict[str, Any]) -> None:
    key = bytes.fromhex(case["key"])
    data = plaintext_of(case["size"])
    assert hashlib.sha256(data).hexdigest() == case["plaintext_sha256"]
    blob = blob_of(key, data)
    assert len(blob) == case["blob_size"] == ciphertext_size(case["size"])
    assert hashlib.sha256(blob).hexdigest() == case["blob_sha256"]
    assert blob[:80].hex() == case["blob_head"]
    assert blob[-40:].hex() == case["blob_tail"]
    assert decrypt_blob(key, [blob]) == data


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * 2**20])
@pytest.mark.parametrize("piece", [1000, SEALED_CHUNK, 10**7])
def test_round_trip_in_pieces_of_any_size(size: int, piece: int) -> None:
    key = new_file_key()
    data = secrets.token_bytes(size)
    blob = blob_of(key, data)
    assert len(blob) == ciphertext_size(size)
    assert decrypt_blob(key, [blob[i : i + piece] for i in range(0, len(blob), piece)]) == data


def _three_chunks() -> tuple[bytes, bytes, bytes]:
    key = new_file_key()
    data = secrets.token_bytes(2 * CHUNK_SIZE + 10)
    return key, data, blob_of(key, data)


def test_tampered_chunk_fails_with_a_clear_error() -> None:
    key, _, blob = _three_chunks()
    bad = bytearray(blob)
    bad[len(HEADER) + SEALED_CHUNK + 5] ^= 1
    with pytest.raises(DecryptError, match="chunk 1 does not authenticate"):
        decrypt_blob(key, [bytes(bad)])


def test_truncated_blob_fails_at_a_chunk_boundary_and_inside_a_chunk() -> None:
    key, _, blob = _three_chunks()
    cut = len(HEADER) + 2 * SEALED_CHUNK
    with pytest.raises(DecryptError, match="truncated"):
        decrypt_blob(key, [blob[:cut]])
    with pytest.raises(DecryptError, match="truncated"):
        decrypt_blob(key, [blob[:-3]])
    with pytest.raises(DecryptError, match="truncated"):
        decrypt_blob(key, [blob[:5]])


def test_reordered_repeated_or_extended_chunks_fail() -> None:
    key, _, blob = _three_chunks()
    h = len(HEADER)
    c0, c1, last = (
        blob[h : h + SEALED_CHUNK],
        blob[h + SEALED_CHUNK : h + 2 * SEALED_CHUNK],
        blob[h + 2 * SEALED_CHUNK :],
    )
    for forged in (HEADER + c1 + c0 + last, HEADER + c0 + c0 + last, blob + last):
        with pytest.raises(DecryptError):
            decrypt_blob(key, [forged])


def test_wrong_key_and_bad_header() -> None:
    key, _, blob = _three_chunks()
    with pytest.raises(DecryptError, match="chunk 0"):
        decrypt_blob(new_file_key(), [blob])
    with pytest.raises(DecryptError, match="header"):
        decrypt_blob(key, [b"CEJB" + blob[4:]])
    with pytest.raises(MalformedInput):
        ChunkDecryptor(b"short")


def test_media_type_from_content() -> None:
    assert sniff_media_type(b"%PDF-1.7\n...") == "application/pdf"
    assert sniff_media_type(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_media_type(b"\xff\xd8\xff\xe0..JFIF") == "image/jpeg"
    assert sniff_media_type(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_media_type(b"PK\x03\x04 a zip named cv.pdf") is None
    assert sniff_media_type(b"") is None


def test_body_round_trip_and_file_check() -> None:
    data = b"%PDF-1.4 a CV"
    body = AttachmentBody(
        new_file_key(), "CV Inès.pdf", "application/pdf", len(data), hashlib.sha256(data).digest()
    )
    again = AttachmentBody.from_plaintext(body.to_plaintext())
    assert again == body
    again.check(data)
    with pytest.raises(DecryptError, match="digest"):
        again.check(data + b"!")
    thumb = AttachmentBody(
        body.key, "p.jpg", "image/jpeg", 1, b"\0" * 32, b"\xff\xd8", "image/jpeg"
    )
    assert AttachmentBody.from_plaintext(thumb.to_plaintext()) == thumb
    with pytest.raises(MalformedInput):
        AttachmentBody.from_plaintext(b'{"name": "x"}')
