"""Attachment encryption: a fresh AES-256-GCM file key, the file cut into chunks.

The format (docs/crypto-format.md, "Attachments"):

    header  = "CEJA" | version (1 byte, 1) | log2(chunk size) (1 byte, 16) | 0x00 0x00
    chunk i = AES-256-GCM(file_key, nonce_i, plaintext[i*C:(i+1)*C], aad=header), tag appended
    nonce_i = i as 11 bytes big-endian | final flag (1 byte: 0x01 on the last chunk, else 0x00)
    blob    = header | chunk 0 | chunk 1 | ... | chunk n-1

C = 65,536 bytes. Every chunk but the last holds exactly C plaintext bytes; the
last holds 1 to C (0 only for an empty file, which is one empty final chunk).
The chunk index and the final flag are in the nonce, so a chunk moved,
dropped, repeated, or a blob cut at a chunk boundary fails to decrypt.
The file key is used for this one file only (a nonce never repeats under it).

The key, the file's name, media type, size and SHA-256 travel in the
``attachment`` message's encrypted body (``attachment_body``); the server
only sees the blob id and the blob's size (``meta``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chat_server.crypto.encoding import b64decode, b64encode
from chat_server.crypto.errors import DecryptError, MalformedInput

__all__ = [
    "CHUNK_SIZE",
    "HEADER",
    "KEY_LEN",
    "AttachmentBody",
    "ChunkDecryptor",
    "ciphertext_size",
    "decrypt_blob",
    "encrypt_chunks",
    "new_file_key",
    "sniff_media_type",
]

VERSION = 1
CHUNK_LOG2 = 16
CHUNK_SIZE = 1 << CHUNK_LOG2
HEADER = b"CEJA" + bytes([VERSION, CHUNK_LOG2, 0, 0])
KEY_LEN = 32
TAG_LEN = 16
#: Bytes of one full chunk in the blob.
SEALED_CHUNK = CHUNK_SIZE + TAG_LEN


def ciphertext_size(plaintext_size: int) -> int:
    """The size of the blob of a ``plaintext_size``-byte file."""
    if plaintext_size < 0:
        raise MalformedInput("a size is never negative")
    chunks = max(1, -(-plaintext_size // CHUNK_SIZE))
    return len(HEADER) + plaintext_size + chunks * TAG_LEN


def new_file_key() -> bytes:
    """A fresh random 32-byte file key (one per file)."""
    return secrets.token_bytes(KEY_LEN)


def _nonce(index: int, final: bool) -> bytes:
    if not 0 <= index < 2**88:
        raise MalformedInput("chunk index out of range")
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _aead(key: bytes) -> AESGCM:
    if len(key) != KEY_LEN:
        raise MalformedInput(f"a file key is {KEY_LEN} bytes")
    return AESGCM(key)


def encrypt_chunks(key: bytes, plaintext: bytes) -> Iterator[bytes]:
    """The blob of ``plaintext``, piece by piece: the header, then each sealed chunk.

    Holds one chunk at a time besides ``plaintext`` itself (a memoryview slices it).
    """
    aead = _aead(key)
    yield HEADER
    view = memoryview(plaintext)
    count = max(1, -(-len(plaintext) // CHUNK_SIZE))
    for i in range(count):
        part = bytes(view[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
        yield aead.encrypt(_nonce(i, i == count - 1), part, HEADER)


class ChunkDecryptor:
    """Decrypts a blob fed in pieces of any size; ``finish`` checks it ended properly.

    Raises ``DecryptError`` naming the problem: a bad header, a chunk that does
    not authenticate (tampered, moved, wrong key), or a truncated blob.
    """

    def __init__(self, key: bytes) -> None:
        self._aead = _aead(key)
        self._buffer = bytearray()
        self._header_ok = False
        self._index = 0
        self._done = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add bytes of the blob; yield the plaintext of every chunk known not to be last."""
        if self._done:
            raise DecryptError("data after the final chunk")
        self._buffer += data
        if not self._header_ok:
            if len(self._buffer) < len(HEADER):
                return
            if bytes(self._buffer[: len(HEADER)]) != HEADER:
                raise DecryptError("not an attachment blob of a known version (bad header)")
            del self._buffer[: len(HEADER)]
            self._header_ok = True
        # A full sealed chunk is the last one only if nothing follows it.
        while len(self._buffer) > SEALED_CHUNK:
            sealed = bytes(self._buffer[:SEALED_CHUNK])
            del self._buffer[:SEALED_CHUNK]
            yield self._open(sealed, final=False)

    def finish(self) -> bytes:
        """The plaintext of the final chunk; ``DecryptError`` if the blob is cut short."""
        if self._done:
            raise DecryptError("the blob was already finished")
        if not self._header_ok or len(self._buffer) < TAG_LEN:
            raise DecryptError("the blob is truncated")
        self._done = True
        sealed = bytes(self._buffer)
        self._buffer.clear()
        try:
            return self._open(sealed, final=True)
        except DecryptError:
            raise DecryptError(
                f"chunk {self._index} does not authenticate as the final chunk: "
                "the blob is truncated or tampered with"
            ) from None

    def _open(self, sealed: bytes, final: bool) -> bytes:
        try:
            plain = self._aead.decrypt(_nonce(self._index, final), sealed, HEADER)
        except InvalidTag:
            raise DecryptError(
                f"chunk {self._index} does not authenticate: tampered with, moved, or the wrong key"
            ) from None
        self._index += 1
        return plain


def decrypt_blob(key: bytes, pieces: Iterable[bytes]) -> bytes:
    """The whole plaintext of a blob given in pieces (``DecryptError`` on any fault)."""
    dec = ChunkDecryptor(key)
    out = bytearray()
    for piece in pieces:
        for plain in dec.feed(piece):
            out += plain
    out += dec.finish()
    return bytes(out)


#: The leading bytes of each accepted media type.
_MAGIC: tuple[tuple[str, bytes, int], ...] = (
    ("application/pdf", b"%PDF-", 0),
    ("image/png", b"\x89PNG\r\n\x1a\n", 0),
    ("image/jpeg", b"\xff\xd8\xff", 0),
)


def sniff_media_type(head: bytes) -> str | None:
    """The media type the file's first bytes show (PDF, PNG, JPEG, WEBP), else None."""
    for media_type, magic, offset in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class AttachmentBody:
    """The encrypted body of an ``attachment`` message (its plaintext, JSON)."""

    key: bytes
    name: str
    media_type: str
    size: int
    sha256: bytes
    thumbnail: bytes | None = None
    thumbnail_type: str | None = None

    def to_plaintext(self) -> bytes:
        """The JSON the message encrypts (keys sorted, no spaces)."""
        doc: dict[str, Any] = {
            "key": b64encode(self.key),
            "name": self.name,
            "type": self.media_type,
            "size": self.size,
            "sha256": b64encode(self.sha256),
        }
        if self.thumbnail is not None:
            doc["thumb"] = {
                "type": self.thumbnail_type or "image/jpeg",
                "data": b64encode(self.thumbnail),
            }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_plaintext(cls, plaintext: bytes) -> AttachmentBody:
        """Parse a decrypted body; ``MalformedInput`` if a field is missing or wrong."""
        try:
            doc = json.loads(plaintext)
        except (ValueError, UnicodeDecodeError):
            raise MalformedInput("an attachment body is JSON") from None
        if not isinstance(doc, Mapping):
            raise MalformedInput("an attachment body is a JSON object")
        name, media_type, size = doc.get("name"), doc.get("type"), doc.get("size")
        if not isinstance(name, str) or not isinstance(media_type, str):
            raise MalformedInput("an attachment body has a name and a type")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise MalformedInput("an attachment body has a size")
        key = b64decode(str(doc.get("key", "")), length=KEY_LEN, what="key")
        digest = b64decode(str(doc.get("sha256", "")), length=32, what="sha256")
        thumb = doc.get("thumb")
        data = kind = None
        if isinstance(thumb, Mapping):
            data = b64decode(str(thumb.get("data", "")), what="thumb.data")
            kind = str(thumb.get("type", "image/jpeg"))
        return cls(key, name, media_type, size, digest, data, kind)

    def check(self, plaintext: bytes) -> None:
        """``DecryptError`` unless ``plaintext`` has the announced size and SHA-256."""
        if len(plaintext) != self.size or hashlib.sha256(plaintext).digest() != self.sha256:
            raise DecryptError("the decrypted file does not match its announced size and digest")
