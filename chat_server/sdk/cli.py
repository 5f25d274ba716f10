"""``chat-client``: a terminal client that logs in and chats end to end.

    chat-client --server http://127.0.0.1:8000 login conseiller.demo
    chat-client conversations
    chat-client chat <conversation-id>        # type lines to send, Ctrl-D to quit
    chat-client send <conversation-id> "Bonjour"
    chat-client send-file <conversation-id> attestation.pdf   # PDF, PNG, JPEG, WEBP
    chat-client save-file <conversation-id> <seq> [--to FOLDER]
    chat-client backup                        # prints a new recovery key, once
    chat-client safety <conversation-id>

The device's private keys and session live in a file readable only by you
(``$CHAT_CLIENT_HOME``, default ``~/.local/share/cej-chat/client.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from chat_server.sdk.client import Client, ClientError, Received


def _state_path() -> Path:
    home = os.environ.get("CHAT_CLIENT_HOME")
    base = Path(home) if home else Path.home() / ".local" / "share" / "cej-chat"
    return base / "client.json"


def _save(client: Client) -> None:
    path = _state_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(client.to_state(), f)
    tmp.replace(path)


def _load() -> Client:
    path = _state_path()
    if not path.exists():
        raise ClientError("not_logged_in", f"no session in {path}; run 'chat-client login' first")
    return Client.from_state(json.loads(path.read_text()))


async def _save_file(client: Client, conv: str, seq: int, folder: Path) -> None:
    """Decrypt the attachment of message ``seq`` into ``folder`` (never overwrites)."""
    await client.fetch_envelopes(conv)
    page, _ = await client.history(conv, after=seq - 1, limit=1)
    found = [m for m in page if m.seq == seq]
    if not found or found[0].msg_type != "attachment":
        raise ClientError("not_an_attachment", f"message {seq} carries no attachment")
    body, data = await client.fetch_file(found[0])
    target = await asyncio.to_thread(_write_new, folder, Path(body.name).name, data)
    print(f"enregistré : {target} ({body.media_type}, {len(data)} octets)")


def _write_new(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new file of ``folder`` (``name``, else ``name (1)``...), 0600."""
    name = name or "piece-jointe"
    for n in range(10_000):
        target = folder / (name if n == 0 else f"{Path(name).stem} ({n}){Path(name).suffix}")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return target
    raise ClientError("file_exists", f"too many files named {name} in {folder}")


def _line(m: Received, names: dict[str, str]) -> str:
    who = names.get(m.sender, m.sender[:8])
    if m.msg_type.startswith("system."):
        return f"[{m.seq}] * {m.msg_type} {json.dumps(m.meta, ensure_ascii=False)}"
    body = m.text if m.text is not None else f"<{m.error or 'message ' + m.msg_type}>"
    return f"[{m.seq}] {who}: {body}"


async def _chat(client: Client, conv: str) -> None:
    await client.connect()
    names = {client.user_id: "moi"}
    for c in client.conversations:
        names[c["peer"]["id"]] = c["peer"].get("display_name", c["peer"]["id"])
    page, _ = await client.history(conv, limit=20)
    shown = 0
    for m in page:
        print(_line(m, names))
        shown = m.seq
    if page:
        await client.mark_read(conv, page[-1].seq)

    async def printer() -> None:
        nonlocal shown
        while True:
            m = await client.messages.get()
            if m.conversation == conv and m.seq > shown:
                print(_line(m, names), flush=True)
                shown = m.seq
                await client.mark_read(conv, m.seq)

    task = asyncio.create_task(printer())
    loop = asyncio.get_running_loop()
    try:
        while True:
            text = await loop.run_in_executor(None, sys.stdin.readline)
            if not text:
                break
            if text.strip():
                ack = await client.send_text(conv, text.rstrip("\n"))
                print(f"[{ack['seq']}] moi: {text.rstrip()}  (envoyé)", flush=True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _run(args: argparse.Namespace) -> int:
    if args.cmd == "login":
        password = os.environ.get("CHAT_PASSWORD") or getpass.getpass("mot de passe : ")
        client = await Client.login(args.server, args.login, password)
        _save(client)
        print(f"connecté : {client.user['display_name']} (appareil {client.device_id})")
        await client.close()
        return 0
    if args.cmd == "activate":
        password = os.environ.get("CHAT_PASSWORD") or getpass.getpass("nouveau mot de passe : ")
        client = await Client.activate(args.server, args.code, password)
        recovery = await client.backup()
        _save(client)
        print(f"compte activé : {client.user['display_name']}")
        print(f"clé de récupération (notez-la, elle ne sera plus affichée) : {recovery}")
        await client.close()
        return 0
    client = _load()
    try:
        if args.cmd == "conversations":
            data = await client.request("GET", "/api/conversations")
            for c in data["conversations"]:
                when = datetime.fromtimestamp(c["last_at"]).strftime("%d/%m %H:%M")
                flag = "⚑" if c.get("flagged") else " "
                name = c["peer"].get("display_name")
                print(f"{c['id']}  {flag} {c['unread']:3} non lus  {when}  {name}")
        elif args.cmd == "send":
            await client.connect()
            ack = await client.send_text(args.conversation, args.text)
            print(f"envoyé (seq {ack['seq']})")
        elif args.cmd == "send-file":
            await client.connect()
            path = Path(args.path)
            data = await asyncio.to_thread(path.read_bytes)
            ack = await client.send_file(args.conversation, data, path.name)
            print(f"fichier envoyé (seq {ack['seq']})")
        elif args.cmd == "save-file":
            await client.connect()
            await _save_file(client, args.conversation, args.seq, Path(args.to))
        elif args.cmd == "chat":
            await _chat(client, args.conversation)
        elif args.cmd == "backup":
            await client.fetch_envelopes()
            recovery = await client.backup()
            print(f"clé de récupération (notez-la, elle ne sera plus affichée) : {recovery}")
        elif args.cmd == "safety":
            number = await client.safety_number(args.conversation)
            print(" ".join(number[i : i + 5] for i in range(0, 30, 5)))
    finally:
        _save(client)
        await client.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``chat-client``."""
    ap = argparse.ArgumentParser(prog="chat-client", description=__doc__.splitlines()[0])
    ap.add_argument("--server", default=os.environ.get("CHAT_SERVER", "http://127.0.0.1:8000"))
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("login").add_argument("login")
    sub.add_parser("activate").add_argument("code")
    sub.add_parser("conversations")
    chat = sub.add_parser("chat")
    chat.add_argument("conversation")
    send = sub.add_parser("send")
    send.add_argument("conversation")
    send.add_argument("text")
    send_file = sub.add_parser("send-file")
    send_file.add_argument("conversation")
    send_file.add_argument("path")
    save_file = sub.add_parser("save-file")
    save_file.add_argument("conversation")
    save_file.add_argument("seq", type=int)
    save_file.add_argument("--to", default=".")
    sub.add_parser("backup")
    sub.add_parser("safety").add_argument("conversation")
    args = ap.parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except ClientError as exc:
        print(f"chat-client: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"chat-client: cannot reach the server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
