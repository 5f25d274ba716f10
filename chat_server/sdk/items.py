"""The accompaniment thread's items on the Python side, as the web apps make and show them.

Offers, actions, appointments, notices, edits and deletes are messages whose
encrypted body is a small JSON object (docs/crypto-format.md, "Bodies of the
thread's types") and whose ``meta`` holds only what the server acts on
(docs/protocol.md, "Items"). This module is pure (no I/O):

- the builders return a ``Draft`` (type, body, meta, and for a creation the
  ``client_id`` that is also the item's id) after the checks a device makes
  before sending: required and oversized fields, http(s) links, impossible
  dates, durations, status transitions. A refusal raises ``ClientError``
  with a code (``field_required``, ``field_too_long``, ``invalid_url``,
  ``invalid_date``, ``invalid_duration``, ``invalid_transition``,
  ``invalid_input``) and a French message; nothing is sent;
- ``fold`` folds a thread's decrypted messages into items (an event that
  does not follow is ignored, as the server and the apps do), edits and
  deletions;
- ``describe`` and ``item_line`` give the French line the terminal prints for
  a message and for an item, with the apps' wording.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from chat_server.rooms.items import ACTION_TRANSITIONS, CLOCK_SKEW_SECONDS, MAX_AHEAD_SECONDS
from chat_server.rooms.types import OFFER_KINDS
from chat_server.sdk.client import ClientError

#: Longest value of each written field, in characters (the apps' limits).
LIMITS = {"title": 120, "company": 120, "place": 200, "url": 500, "note": 2000, "text": 4000}
APPOINTMENT_KINDS = ("individuel", "atelier", "information_collective")
MIN_DURATION, MAX_DURATION = 5, 600

STATUS_TEXT = {
    "todo": "À faire",
    "in_progress": "En cours",
    "done": "Terminée",
    "cancelled": "Annulée",
    "scheduled": "Prévu",
}
OFFER_TEXT = {
    "emploi": "Emploi",
    "alternance": "Alternance",
    "immersion": "Immersion",
    "service_civique": "Service civique",
    "evenement": "Événement",
}
APPOINTMENT_TEXT = {
    "individuel": "Entretien individuel",
    "atelier": "Atelier",
    "information_collective": "Information collective",
}
_LABELS = {
    "title": "Titre",
    "company": "Entreprise ou organisme",
    "place": "Lieu",
    "url": "Lien",
    "note": "Note",
    "description": "Description",
    "text": "Message",
}
_DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
_MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)


@dataclass(frozen=True, slots=True)
class Draft:
    """A message ready to encrypt: its type, body (JSON object), meta and client id."""

    msg_type: str
    content: dict[str, Any]
    meta: dict[str, Any]
    #: Set for a creation: the item's id is its creation message's ``client_id``.
    client_id: str | None = None

    def plaintext(self) -> bytes:
        """The UTF-8 JSON body that is encrypted."""
        return json.dumps(self.content, ensure_ascii=False).encode()


def new_item_id() -> str:
    """A fresh item id (16 characters of ``[A-Za-z0-9_-]``, like the apps' ids).

    Never starts with ``-``, so that ``chat-client status CONV ID ...`` does not
    read the id as an option.
    """
    item = secrets.token_urlsafe(12)
    return item if item[0] != "-" else "_" + item[1:]


def _now(now: float | None) -> int:
    return int(time.time() if now is None else now)


def _required(value: str, name: str) -> str:
    v = value.strip()
    if not v:
        raise ClientError("field_required", f"« {_LABELS[name]} » est obligatoire.")
    return _optional(v, name)


def _optional(value: str, name: str, limit: str | None = None) -> str:
    v = value.strip()
    most = LIMITS[limit or name]
    if len(v) > most:
        raise ClientError("field_too_long", f"« {_LABELS[name]} » dépasse {most} caractères.")
    return v


def _link(value: str) -> str:
    v = value.strip()
    if not v:
        return ""
    if len(v) > LIMITS["url"] or not v.lower().startswith(("https://", "http://")):
        raise ClientError("invalid_url", "Le lien doit commencer par https:// ou http://.")
    return v


def _date(seconds: int, now: float | None, *, past_ok: bool = False) -> int:
    current = _now(now)
    if not past_ok and seconds < current - CLOCK_SKEW_SECONDS:
        raise ClientError("invalid_date", "Cette date est déjà passée.")
    if seconds > current + MAX_AHEAD_SECONDS:
        raise ClientError("invalid_date", "Cette date est à plus de deux ans.")
    return seconds


def _item(item: str) -> str:
    if not 8 <= len(item) <= 64 or not all(c.isalnum() or c in "_-" for c in item):
        raise ClientError("invalid_input", f"{item!r} n'est pas un identifiant d'élément.")
    return item


# ---------------------------------------------------------------- builders


def offer(
    kind: str,
    title: str,
    *,
    company: str = "",
    place: str = "",
    url: str = "",
    note: str = "",
) -> Draft:
    """Share an offer (``kind``: emploi, alternance, immersion, service_civique, evenement)."""
    if kind not in OFFER_KINDS:
        raise ClientError("invalid_input", f"type d'offre inconnu : {kind!r}")
    content = {
        "title": _required(title, "title"),
        "company": _optional(company, "company"),
        "place": _optional(place, "place"),
        "url": _link(url),
        "note": _optional(note, "note"),
    }
    return Draft("offer", content, {"kind": kind})


def action(
    title: str,
    due: int,
    *,
    description: str = "",
    status: str = "todo",
    item: str | None = None,
    now: float | None = None,
) -> Draft:
    """A new action ("démarche") due at ``due`` (Unix seconds), ``todo`` or ``in_progress``."""
    if status not in ("todo", "in_progress"):
        raise ClientError(
            "invalid_transition", "Une démarche commence « À faire » ou « En cours »."
        )
    item = _item(item) if item else new_item_id()
    content = {
        "title": _required(title, "title"),
        "description": _optional(description, "description", "note"),
    }
    meta = {"item": item, "event": "created", "status": status, "due": _date(due, now)}
    return Draft("action", content, meta, client_id=item)


def action_change(
    item: str, title: str, due: int, *, description: str = "", now: float | None = None
) -> Draft:
    """An action's title, description or due date changed."""
    content = {
        "title": _required(title, "title"),
        "description": _optional(description, "description", "note"),
    }
    return Draft(
        "action", content, {"item": _item(item), "event": "changed", "due": _date(due, now)}
    )


def action_status(item: str, current: str, to: str) -> Draft:
    """Move an action from its ``current`` status to ``to`` (the server's transitions)."""
    if to not in ACTION_TRANSITIONS.get(current, frozenset()):
        raise ClientError("invalid_transition", "Ce changement de statut n'est pas possible.")
    return Draft("action", {}, {"item": _item(item), "event": "status_changed", "status": to})


def action_comment(item: str, text: str) -> Draft:
    """A comment on an action, shown in the thread."""
    return Draft(
        "action", {"text": _required(text, "text")}, {"item": _item(item), "event": "commented"}
    )


def appointment(
    starts_at: int,
    *,
    kind: str = "individuel",
    duration: int = 30,
    title: str = "",
    place: str = "",
    visio: str = "",
    note: str = "",
    item: str | None = None,
    now: float | None = None,
) -> Draft:
    """A new appointment, or (``item`` given) a change of it; a place or a visio link."""
    if kind not in APPOINTMENT_KINDS:
        raise ClientError("invalid_input", f"type de rendez-vous inconnu : {kind!r}")
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise ClientError("invalid_duration", "La durée doit être comprise entre 5 et 600 minutes.")
    content = {
        "title": _optional(title, "title"),
        "kind": kind,
        "duration": duration,
        "place": _optional(place, "place"),
        "visio": _link(visio),
        "note": _optional(note, "note"),
    }
    if not content["place"] and not content["visio"]:
        raise ClientError("field_required", "Indiquez un lieu ou un lien de visio.")
    when = _date(starts_at, now)
    if item is None:
        new = new_item_id()
        return Draft(
            "appointment", content, {"item": new, "event": "created", "starts_at": when}, new
        )
    return Draft(
        "appointment", content, {"item": _item(item), "event": "changed", "starts_at": when}
    )


def appointment_cancel(item: str) -> Draft:
    """The counsellor cancels an appointment."""
    return Draft("appointment", {}, {"item": _item(item), "event": "cancelled"})


def appointment_answer(item: str, coming: bool) -> Draft:
    """The beneficiary's answer: "je serai présent·e" (True) or "je ne pourrai pas venir"."""
    return Draft(
        "appointment",
        {"answer": "yes" if coming else "no"},
        {"item": _item(item), "event": "answered"},
    )


def notice(text: str, starts_at: int, ends_at: int, *, now: float | None = None) -> Draft:
    """The counsellor's notice, shown in the app while ``starts_at`` <= now < ``ends_at``."""
    body = _required(text, "text")
    if len(body) > LIMITS["note"]:
        raise ClientError("field_too_long", f"« Message » dépasse {LIMITS['note']} caractères.")
    _date(starts_at, now, past_ok=True)
    _date(ends_at, now)
    if ends_at <= starts_at:
        raise ClientError("invalid_date", "La date de fin doit suivre la date de début.")
    return Draft("notice", {"text": body}, {"starts_at": starts_at, "ends_at": ends_at})


def lift_notice(*, now: float | None = None) -> Draft:
    """A notice that ends when it starts: the banner goes away at once."""
    at = _now(now)
    return Draft("notice", {"text": ""}, {"starts_at": at, "ends_at": at})


def edit(target_seq: int, text: str) -> Draft:
    """The new text of one's own message ``target_seq`` (the original keeps its history)."""
    return Draft("edit", {"text": _required(text, "text")}, {"target_seq": target_seq})


def delete(target_seq: int) -> Draft:
    """One's own message ``target_seq``, shown "(message supprimé)" to both sides."""
    return Draft("delete", {}, {"target_seq": target_seq})


# ---------------------------------------------------------------- folding


class Message(Protocol):
    """What the fold reads of a decrypted message (``sdk.Received``)."""

    seq: int
    sender: str
    msg_type: str
    meta: dict[str, Any]

    @property
    def content(self) -> dict[str, Any] | None: ...


@dataclass
class ThreadItem:
    """An action or an appointment as its card shows it, folded from its events."""

    kind: str
    id: str
    seq: int
    creator: str
    content: dict[str, Any]
    status: str
    due: int | None
    starts_at: int | None
    answer: str | None = None
    events: list[int] = field(default_factory=list)

    @property
    def title(self) -> str:
        title = str(self.content.get("title") or "")
        if title or self.kind == "action":
            return title or "Démarche"
        return APPOINTMENT_TEXT.get(str(self.content.get("kind")), "Rendez-vous")


@dataclass
class Fold:
    """A thread's items by id, the latest edit of each edited seq, the deleted seqs."""

    items: dict[str, ThreadItem] = field(default_factory=dict)
    edits: dict[int, dict[str, Any]] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)


def fold(messages: Iterable[Message]) -> Fold:
    """Fold decrypted messages (in ``seq`` order) as the apps do."""
    out = Fold()
    senders: dict[int, str] = {}
    for m in messages:
        senders[m.seq] = m.sender
        meta = m.meta
        if m.msg_type in ("edit", "delete"):
            target = meta.get("target_seq")
            if isinstance(target, int) and senders.get(target) == m.sender:
                if m.msg_type == "delete":
                    out.deleted.add(target)
                elif m.content is not None:
                    out.edits[target] = m.content
            continue
        if m.msg_type not in ("action", "appointment"):
            continue
        _fold_event(out, m)
    return out


def _fold_event(out: Fold, m: Message) -> None:
    meta, content = m.meta, m.content or {}
    item_id = str(meta.get("item"))
    if meta.get("event") == "created":
        if item_id not in out.items:
            out.items[item_id] = ThreadItem(
                kind=m.msg_type,
                id=item_id,
                seq=m.seq,
                creator=m.sender,
                content=dict(content),
                status=str(meta.get("status")) if m.msg_type == "action" else "scheduled",
                due=meta.get("due"),
                starts_at=meta.get("starts_at"),
            )
        return
    item = out.items.get(item_id)
    if item is None or item.kind != m.msg_type:
        return
    item.events.append(m.seq)
    event = meta.get("event")
    if m.msg_type == "action":
        if event == "status_changed":
            if meta.get("status") in ACTION_TRANSITIONS.get(item.status, frozenset()):
                item.status = str(meta["status"])
        elif event == "changed":
            item.due = meta.get("due", item.due)
            item.content.update(content)
    elif item.status != "cancelled":
        if event == "changed":
            item.starts_at = meta.get("starts_at")
            item.content.update(content)
            item.answer = None
        elif event == "cancelled":
            item.status = "cancelled"
        elif event == "answered" and content:
            item.answer = "yes" if content.get("answer") == "yes" else "no"


# ---------------------------------------------------------------- French lines


def when_text(seconds: float) -> str:
    """``vendredi 4 décembre 2026 à 15:00`` in the machine's time zone."""
    d = datetime.fromtimestamp(seconds).astimezone()
    return f"{_DAYS[d.weekday()]} {d.day} {_MONTHS[d.month - 1]} {d.year} à {d:%H:%M}"


def date_text(seconds: float) -> str:
    """``4 décembre 2026`` in the machine's time zone."""
    d = datetime.fromtimestamp(seconds).astimezone()
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


def item_line(item: ThreadItem, *, now: float | None = None) -> str:
    """One line for an item: ``[démarche abc] « Titre » : À faire, avant le 4 décembre 2026``."""
    if item.kind == "action":
        line = (
            f"[démarche {item.id}] « {item.title} » : {STATUS_TEXT.get(item.status, item.status)}"
        )
        if item.due:
            line += f", avant le {date_text(item.due)}"
            if item.due < _now(now) and item.status in ("todo", "in_progress"):
                line += " (en retard)"
        return line
    c = item.content
    line = f"[rendez-vous {item.id}] « {item.title} »"
    if item.starts_at:
        line += f" {when_text(item.starts_at)}"
    if c.get("duration"):
        line += f" ({c['duration']} min)"
    where = c.get("place") or c.get("visio")
    if where:
        line += f", {where}"
    if item.status == "cancelled":
        line += " : annulé"
    elif item.answer:
        line += " : présence confirmée" if item.answer == "yes" else " : ne pourra pas venir"
    return line


def describe(m: Message, folded: Fold) -> str | None:
    """The French line of an item message (``None`` for a type this module does not draw)."""
    c, meta = m.content or {}, m.meta
    if m.msg_type == "offer":
        parts = [p for p in (c.get("company"), c.get("place")) if p]
        line = f"Offre ({OFFER_TEXT.get(str(meta.get('kind')), '?')}) : {c.get('title', '')}"
        line += f" — {' · '.join(parts)}" if parts else ""
        line += f" <{c['url']}>" if c.get("url") else ""
        return line + (f" — {c['note']}" if c.get("note") else "")
    if m.msg_type == "notice":
        if meta.get("ends_at", 0) <= meta.get("starts_at", 0):
            return "Message important retiré."
        end = date_text(meta["ends_at"] - 1)
        return f"Message important du {date_text(meta['starts_at'])} au {end} : {c.get('text', '')}"
    if m.msg_type == "edit":
        return f"(modifie le message {meta.get('target_seq')}) {c.get('text', '')}"
    if m.msg_type == "delete":
        return f"(message {meta.get('target_seq')} supprimé)"
    if m.msg_type not in ("action", "appointment"):
        return None
    item = folded.items.get(str(meta.get("item")))
    title = item.title if item else str(c.get("title") or "?")
    event = meta.get("event")
    if event == "created":
        return item_line(item) if item and item.seq == m.seq else f"« {title} » (créé)"
    if event == "status_changed":
        return f"« {title} » : {STATUS_TEXT.get(str(meta.get('status')), '?')}"
    if event == "commented":
        return f"Commentaire sur « {title} » : {c.get('text', '')}"
    if event == "changed":
        return f"« {title} » modifié" + (
            f" : {when_text(meta['starts_at'])}" if meta.get("starts_at") else ""
        )
    if event == "cancelled":
        return f"Rendez-vous « {title} » annulé."
    if event == "answered":
        answer = "je serai présent·e" if c.get("answer") == "yes" else "je ne pourrai pas venir"
        return f"{answer} au rendez-vous « {title} »."
    return None
