"""Attachments for the Python client: encrypt, upload and send a file; fetch, decrypt, check.

docs/crypto-format.md, "Attachments" is the format; docs/protocol.md, "Attachments"
the endpoints. The file is checked by content (magic bytes) against the server's
accepted types and size before anything is sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from chat_server.crypto.attachment import (
    AttachmentBody,
    ChunkDecryptor,
    encrypt_chunks,
    new_file_key,
    sniff_media_type,
)

if TYPE_CHECKING:
    from chat_server.sdk.client import Client, Received


async def send_file(
    client: Client,
    conversation: str,
    data: bytes,
    name: str,
    *,
    thumbnail: bytes | None = None,
) -> dict[str, Any]:
    """Encrypt ``data``, upload it, send the ``attachment`` message; return the ack.

    Raises ``ClientError`` (``attachment_type_refused``, ``attachment_too_large``, or
    the server's code) before uploading anything the server or the apps would refuse.
    """
    from chat_server.sdk.client import ClientError

    limits = await client.request("GET", "/api/attachments/limits")
    media_type = sniff_media_type(data[:16])
    if media_type is None or media_type not in limits["types"]:
        raise ClientError(
            "attachment_type_refused", "only " + ", ".join(limits["types"]) + " are accepted"
        )
    if len(data) > limits["max_bytes"]:
        raise ClientError(
            "attachment_too_large", f"a file is at most {limits['max_bytes']} bytes", 413
        )
    key = new_file_key()

    async def pieces() -> AsyncIterator[bytes]:
        for piece in encrypt_chunks(key, data):
            yield piece

    r = await client.http.post(
        f"/api/conversations/{conversation}/attachments",
        content=pieces(),
        headers={"content-type": "application/octet-stream"},
    )
    uploaded = r.json()
    if r.status_code >= 400:
        err = uploaded.get("error", {})
        raise ClientError(err.get("code", "http_error"), err.get("message", ""), r.status_code)
    body = AttachmentBody(
        key,
        Path(name).name,
        media_type,
        len(data),
        hashlib.sha256(data).digest(),
        thumbnail,
        "image/jpeg" if thumbnail is not None else None,
    )
    meta = {"blob": uploaded["blob"], "size": uploaded["size"]}
    return await client.send(conversation, body.to_plaintext(), "attachment", meta=meta)


async def fetch_file(client: Client, message: Received) -> tuple[AttachmentBody, bytes]:
    """Download and decrypt the file of a received ``attachment`` message.

    Raises ``ClientError`` with the server's code (``attachment_expired``,
    ``not_member``...) or ``DecryptError`` if the blob is tampered with or truncated.
    """
    from chat_server.sdk.client import ClientError

    if message.msg_type != "attachment" or message.plaintext is None:
        raise ClientError("not_an_attachment", "this message carries no readable attachment")
    body = AttachmentBody.from_plaintext(message.plaintext)
    dec = ChunkDecryptor(body.key)
    out = bytearray()
    async with client.http.stream("GET", f"/api/attachments/{message.meta['blob']}") as r:
        if r.status_code >= 400:
            await r.aread()
            err = r.json().get("error", {})
            raise ClientError(err.get("code", "http_error"), err.get("message", ""), r.status_code)
        async for piece in r.aiter_bytes():
            for plain in dec.feed(piece):
                out += plain
    out += dec.finish()
    data = bytes(out)
    body.check(data)
    return body, data


async def scan_file(client: Client, message: Received) -> dict[str, Any]:
    """Hand one attachment to the structure's scanning service (``ATTACHMENT_SCAN_URL``).

    The device asks the server for a short-lived download grant of the blob and
    posts ``{url, key, sha256, size}`` to the scanner, which fetches the blob,
    decrypts, checks and scans it, and answers ``{status: "clean"|"infected",
    threat?}``; that answer is returned. docs/security.md, "Attachments".
    """
    from chat_server.crypto.encoding import b64encode
    from chat_server.sdk.client import ClientError

    limits = await client.request("GET", "/api/attachments/limits")
    scan_url = limits.get("scan_url")
    if not scan_url:
        raise ClientError("no_scanner", "this structure has no attachment scanning service")
    if message.msg_type != "attachment" or message.plaintext is None:
        raise ClientError("not_an_attachment", "this message carries no readable attachment")
    body = AttachmentBody.from_plaintext(message.plaintext)
    granted = await client.request("POST", f"/api/attachments/{message.meta['blob']}/grant")
    job = {
        "url": client.base_url + granted["url"],
        "key": b64encode(body.key),
        "sha256": b64encode(body.sha256),
        "size": body.size,
    }
    # A client of its own: the session token never goes to the scanner.
    async with httpx.AsyncClient(timeout=120) as scanner:
        r = await scanner.post(scan_url, json=job)
    if r.status_code >= 400:
        raise ClientError(
            "scan_failed", f"the scanning service answered {r.status_code}: {r.text[:200]}"
        )
    answer: dict[str, Any] = r.json()
    return answer
