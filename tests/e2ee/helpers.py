"""Helpers of the end-to-end tests."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from chat_server.crypto.message import encrypt_message
from chat_server.sdk import Client, Received
from tests.helpers import PASSWORD, ServerInfo


async def run_cli(
    home: Path, server: ServerInfo, *args: str, stdin: bytes = b""
) -> tuple[int, str]:
    """Run ``chat-client`` (a real process) with its state in ``home``: (exit code, output)."""
    env = {**os.environ, "CHAT_CLIENT_HOME": str(home), "CHAT_PASSWORD": PASSWORD}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chat_server.sdk.cli",
        "--server",
        server.http,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode or 0, out.decode()


async def next_user_message(client: Client, timeout: float = 10) -> Received:
    """The next non-system message."""
    for _ in range(100):
        m = await client.next_message(timeout)
        if not m.msg_type.startswith("system."):
            return m
    raise AssertionError("only system messages arrived")


async def wait_text(client: Client, text: str, timeout: float = 10) -> Received:
    """Read received messages until one decrypts to ``text``."""
    for _ in range(1000):
        m = await client.next_message(timeout)
        if m.text == text:
            return m
    raise AssertionError(f"{text!r} never arrived")


def frame_for(
    client: Client,
    conversation: str,
    epoch: int,
    key: bytes,
    text: str,
    *,
    client_id: str | None = None,
    nonce: bytes | None = None,
) -> dict[str, Any]:
    """A correctly encrypted and signed ``message.send`` frame (tests then break one part)."""
    client_id = client_id or secrets.token_hex(8)
    enc = encrypt_message(
        key,
        client.keys,
        conversation=conversation,
        epoch=epoch,
        sender_device=client.device_id,
        client_id=client_id,
        msg_type="text",
        plaintext=json.dumps({"text": text}).encode(),
        nonce=nonce,
    )
    return {
        "type": "message.send",
        "conversation": conversation,
        "client_id": client_id,
        "msg_type": "text",
        "body": base64.b64encode(enc.ciphertext).decode(),
        "nonce": base64.b64encode(enc.nonce).decode(),
        "sig": base64.b64encode(enc.sig).decode(),
        "epoch": epoch,
        "v": 2,
    }
