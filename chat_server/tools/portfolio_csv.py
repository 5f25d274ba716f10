"""The portfolio as CSV: the dashboard's server-visible columns, for a spreadsheet.

UTF-8 with a byte order mark and ``;`` between fields (what French spreadsheet
software opens as columns), one header row in French, times as
``YYYY-MM-DD HH:MM`` in Europe/Paris. A cell that a spreadsheet would run as a
formula (starting with ``= + - @``, a tab or a carriage return) gets a leading
``'`` (CSV injection).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chat_server.tools.portfolio import PortfolioRow

HEADER = (
    "Bénéficiaire",
    "Identifiant",
    "Dispositif",
    "Conseiller",
    "Dernière activité dans l'application",
    "En ligne",
    "Non lus (conseiller)",
    "Non lus (bénéficiaire)",
    "En attente de réponse depuis",
    "Démarches en cours",
    "Démarches en retard",
    "Prochain rendez-vous",
    "Prioritaire",
    "Archivé",
)


def _zone() -> tzinfo:
    try:
        return ZoneInfo("Europe/Paris")
    except ZoneInfoNotFoundError:  # no time zone database on this machine
        return UTC


PARIS = _zone()


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, PARIS).strftime("%Y-%m-%d %H:%M")


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _yes(flag: bool) -> str:
    return "oui" if flag else "non"


def portfolio_csv(rows: Sequence[PortfolioRow]) -> str:
    """The CSV text of ``rows`` (byte order mark included)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(HEADER)
    for r in rows:
        b = r.beneficiary
        writer.writerow(
            [
                _cell(b.get("display_name")),
                _cell(b.get("login")),
                _cell(b.get("programme")),
                _cell(r.counsellor.get("display_name")),
                _when(r.last_app_activity),
                _yes(r.online),
                r.unread_counsellor,
                r.unread_beneficiary,
                _when(r.waiting_since),
                r.open_actions,
                r.overdue_actions,
                _when(r.next_appointment),
                _yes(r.flagged),
                _yes(r.archived),
            ]
        )
    return out.getvalue()
