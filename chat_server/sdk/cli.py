"""``chat-client``: a terminal client that logs in and chats end to end.

    chat-client --server http://127.0.0.1:8000 login conseiller.demo
    chat-client conversations
    chat-client chat <conversation-id>        # type lines to send, Ctrl-D to quit
    chat-client send <conversation-id> "Bonjour"
    chat-client send-file <conversation-id> attestation.pdf   # PDF, PNG, JPEG, WEBP
    chat-client save-file <conversation-id> <seq> [--to FOLDER]
    chat-client history <conversation-id>     # the whole thread, a line per message and item
    chat-client items <conversation-id>       # the conversation's actions and appointments
    chat-client offer <conversation-id> --kind alternance --title "..." [--company --url ...]
    chat-client action <conversation-id> --title "..." --due 2026-12-20 [--description]
    chat-client status <conversation-id> <item> done      # todo, in_progress, done, cancelled
    chat-client comment <conversation-id> <item> "..."
    chat-client rdv <conversation-id> --date 2026-12-04 --time 14:30 --place "..." [--kind ...]
    chat-client rdv-change <conversation-id> <item> [--date --time --place ...]
    chat-client rdv-cancel <conversation-id> <item>
    chat-client answer <conversation-id> <item> oui|non
    chat-client notice --text "..." --from 2026-12-21 --to 2026-12-24   # every conversation
    chat-client notice --lift
    chat-client edit <conversation-id> <seq> "..."   /   chat-client delete <conversation-id> <seq>
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
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from chat_server.sdk import items as it
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


def _line(m: Received, names: dict[str, str], folded: it.Fold | None = None) -> str:
    """One terminal line per message: its text, or the item it creates or changes."""
    who = names.get(m.sender, m.sender[:8])
    if m.msg_type.startswith("system."):
        return f"[{m.seq}] * {m.msg_type} {json.dumps(m.meta, ensure_ascii=False)}"
    if m.plaintext is None:
        return f"[{m.seq}] {who}: <{m.error or 'message ' + m.msg_type}>"
    folded = folded if folded is not None else it.fold([m])
    if m.seq in folded.deleted:
        return f"[{m.seq}] {who}: (message supprimé)"
    edited = folded.edits.get(m.seq)
    if edited is not None:
        return f"[{m.seq}] {who}: {edited.get('text', '')} (modifié)"
    if m.msg_type == "text":
        return f"[{m.seq}] {who}: {m.text}"
    if m.msg_type == "attachment":
        c = m.content or {}
        what = f"{c.get('name', '?')} ({c.get('type', '?')}, {c.get('size', 0)} octets)"
        return f"[{m.seq}] {who}: Pièce jointe : {what}"
    line = it.describe(m, folded)
    if line is None:
        line = f"Message de type « {m.msg_type} » (non pris en charge par cette version)"
    return f"[{m.seq}] {who}: {line}"


def _names(client: Client) -> dict[str, str]:
    names = {client.user_id: "moi"}
    for c in client.conversations:
        names[c["peer"]["id"]] = c["peer"].get("display_name", c["peer"]["id"])
    return names


def _day_end(text: str) -> int:
    """A due date (``2026-12-20``) as the end of that day, local time."""
    return int(datetime.fromisoformat(f"{text}T23:59:59").astimezone().timestamp())


def _day_start(text: str) -> int:
    return int(datetime.fromisoformat(f"{text}T00:00:00").astimezone().timestamp())


def _at(date: str, hour: str) -> int:
    return int(datetime.fromisoformat(f"{date}T{hour}").astimezone().timestamp())


def _dates(parse: Callable[[str], object], *values: str) -> None:
    for value in values:
        try:
            parse(value)
        except ValueError:
            raise ClientError("invalid_date", f"date ou heure illisible : {value!r}") from None


async def _thread(client: Client, conv: str) -> tuple[list[Received], it.Fold]:
    messages = await client.all_history(conv)
    return messages, it.fold(messages)


async def _item_of(client: Client, conv: str, item: str) -> it.ThreadItem:
    _, folded = await _thread(client, conv)
    found = folded.items.get(item)
    if found is None:
        raise ClientError("unknown_item", f"aucune démarche ni rendez-vous {item!r} ici")
    return found


async def _draft(client: Client, args: argparse.Namespace) -> tuple[str, it.Draft]:
    """The conversation and the item message a command asks for."""
    conv: str = args.conversation
    if args.cmd == "offer":
        return conv, it.offer(
            args.kind,
            args.title,
            company=args.company,
            place=args.place,
            url=args.url,
            note=args.note,
        )
    if args.cmd == "action":
        _dates(_day_end, args.due)
        return conv, it.action(
            args.title, _day_end(args.due), description=args.description, status=args.status
        )
    if args.cmd == "status":
        current = await _item_of(client, conv, args.item)
        return conv, it.action_status(args.item, current.status, args.to)
    if args.cmd == "comment":
        return conv, it.action_comment(args.item, args.text)
    if args.cmd in ("rdv", "rdv-change"):
        base: dict[str, Any] = {}
        starts = None
        if args.cmd == "rdv-change":
            current = await _item_of(client, conv, args.item)
            base, starts = dict(current.content), current.starts_at
        for name in ("kind", "title", "place", "visio", "note", "duration"):
            value = getattr(args, name)
            if value is not None:
                base[name] = value
        if args.date or args.time:
            if starts is not None:
                old = datetime.fromtimestamp(starts).astimezone()
                args.date = args.date or f"{old:%Y-%m-%d}"
                args.time = args.time or f"{old:%H:%M}"
            if not (args.date and args.time):
                raise ClientError("invalid_date", "--date et --time sont obligatoires")
            _dates(datetime.fromisoformat, f"{args.date}T{args.time}")
            starts = _at(args.date, args.time)
        if starts is None:
            raise ClientError("invalid_date", "--date et --time sont obligatoires")
        return conv, it.appointment(
            starts,
            kind=str(base.get("kind") or "individuel"),
            duration=int(base.get("duration") or 30),
            title=str(base.get("title") or ""),
            place=str(base.get("place") or ""),
            visio=str(base.get("visio") or ""),
            note=str(base.get("note") or ""),
            item=args.item if args.cmd == "rdv-change" else None,
        )
    if args.cmd == "rdv-cancel":
        return conv, it.appointment_cancel(args.item)
    if args.cmd == "answer":
        return conv, it.appointment_answer(args.item, args.answer == "oui")
    if args.cmd == "edit":
        return conv, it.edit(args.seq, args.text)
    return conv, it.delete(args.seq)


async def _send_item(client: Client, args: argparse.Namespace) -> None:
    await client.connect()
    conv, draft = await _draft(client, args)
    ack = await client.send_draft(conv, draft)
    messages, folded = await _thread(client, conv)
    sent = [m for m in messages if m.seq == ack["seq"]]
    line = _line(sent[0], _names(client), folded) if sent else f"[{ack['seq']}]"
    print(f"envoyé : {line}")


async def _notice(client: Client, args: argparse.Namespace) -> None:
    if args.lift:
        draft = it.lift_notice()
    else:
        if not (args.text and args.start and args.end):
            raise ClientError("invalid_input", "--text, --from et --to sont obligatoires")
        _dates(_day_start, args.start, args.end)
        draft = it.notice(args.text, _day_start(args.start), _day_end(args.end) + 1)
    data = await client.request("GET", "/api/conversations")
    convs = args.conversations or [c["id"] for c in data["conversations"] if not c.get("archived")]
    await client.connect()
    for conv in convs:  # one encrypted copy per conversation
        await client.send_draft(conv, draft)
    done = "retiré" if args.lift else "publié"
    print(f"message important {done} dans {len(convs)} conversation(s)")


async def _show_items(client: Client, conv: str) -> None:
    await client.connect()
    _, folded = await _thread(client, conv)
    for item in folded.items.values():
        print(it.item_line(item))
    if not folded.items:
        print("aucune démarche ni rendez-vous")


async def _chat(client: Client, conv: str) -> None:
    await client.connect()
    names = _names(client)
    messages, folded = await _thread(client, conv)
    page = messages[-20:]
    shown = 0
    for m in page:
        print(_line(m, names, folded))
        shown = m.seq
    if page:
        await client.mark_read(conv, page[-1].seq)

    async def printer() -> None:
        nonlocal shown
        while True:
            m = await client.messages.get()
            if m.conversation == conv and m.seq > shown:
                messages.append(m)
                print(_line(m, names, it.fold(messages)), flush=True)
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
        elif args.cmd == "history":
            await client.connect()
            messages, folded = await _thread(client, args.conversation)
            names = _names(client)
            for m in messages:
                print(_line(m, names, folded))
        elif args.cmd == "items":
            await _show_items(client, args.conversation)
        elif args.cmd == "notice":
            await _notice(client, args)
        elif args.cmd in _ITEM_COMMANDS:
            await _send_item(client, args)
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


_ITEM_COMMANDS = (
    "offer",
    "action",
    "status",
    "comment",
    "rdv",
    "rdv-change",
    "rdv-cancel",
    "answer",
    "edit",
    "delete",
)


def _item_parsers(sub: Any) -> None:
    sub.add_parser("history").add_argument("conversation")
    sub.add_parser("items").add_argument("conversation")
    p = sub.add_parser("offer")
    p.add_argument("conversation")
    p.add_argument("--kind", required=True, choices=sorted(it.OFFER_TEXT))
    p.add_argument("--title", required=True)
    for name in ("company", "place", "url", "note"):
        p.add_argument(f"--{name}", default="")
    p = sub.add_parser("action")
    p.add_argument("conversation")
    p.add_argument("--title", required=True)
    p.add_argument("--due", required=True, help="AAAA-MM-JJ")
    p.add_argument("--description", default="")
    p.add_argument("--status", default="todo", choices=("todo", "in_progress"))
    p = sub.add_parser("status")
    p.add_argument("conversation")
    p.add_argument("item")
    p.add_argument("to", choices=("todo", "in_progress", "done", "cancelled"))
    p = sub.add_parser("comment")
    p.add_argument("conversation")
    p.add_argument("item")
    p.add_argument("text")
    for cmd in ("rdv", "rdv-change"):
        p = sub.add_parser(cmd)
        p.add_argument("conversation")
        if cmd == "rdv-change":
            p.add_argument("item")
        p.add_argument("--date", help="AAAA-MM-JJ")
        p.add_argument("--time", help="HH:MM")
        p.add_argument("--duration", type=int)
        p.add_argument("--kind", choices=it.APPOINTMENT_KINDS)
        for name in ("title", "place", "visio", "note"):
            p.add_argument(f"--{name}")
        if cmd == "rdv":
            p.set_defaults(item=None)
    p = sub.add_parser("rdv-cancel")
    p.add_argument("conversation")
    p.add_argument("item")
    p = sub.add_parser("answer")
    p.add_argument("conversation")
    p.add_argument("item")
    p.add_argument("answer", choices=("oui", "non"))
    p = sub.add_parser("notice")
    p.add_argument("conversations", nargs="*", help="default: every conversation")
    p.add_argument("--text")
    p.add_argument("--from", dest="start", help="AAAA-MM-JJ")
    p.add_argument("--to", dest="end", help="AAAA-MM-JJ (inclus)")
    p.add_argument("--lift", action="store_true")
    for cmd in ("edit", "delete"):
        p = sub.add_parser(cmd)
        p.add_argument("conversation")
        p.add_argument("seq", type=int)
        if cmd == "edit":
            p.add_argument("text")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``chat-client``."""
    ap = argparse.ArgumentParser(
        prog="chat-client",
        description=__doc__.splitlines()[0],
        epilog="An argument that begins with '-' (an item id made by an app, a text) "
        "goes after '--': chat-client status -- <conversation> -Xy12ab34 done",
    )
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
    _item_parsers(sub)
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
