"""Delivery rules that need no I/O: quiet hours, preferences, mutes."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from notifications.models import Subscription

HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def valid_time(text: str) -> bool:
    """True for a local time written ``HH:MM`` (00:00 to 23:59)."""
    return HHMM.match(text) is not None


def valid_timezone(name: str) -> bool:
    """True for an IANA time zone this machine knows (``Europe/Paris``)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _minutes(text: str) -> int:
    m = HHMM.match(text)
    if m is None:
        raise ValueError(f"not a HH:MM time: {text!r}")
    return int(m.group(1)) * 60 + int(m.group(2))


def quiet_until(start: str, end: str, timezone: str, now: float) -> float:
    """0 if ``now`` is outside the quiet hours [start, end) in ``timezone``; else the moment
    they end. Start after end spans midnight (20:00-08:00); start equal to end: never quiet."""
    s, e = _minutes(start), _minutes(end)
    if s == e:
        return 0.0
    zone = ZoneInfo(timezone)
    local = dt.datetime.fromtimestamp(now, zone)
    m = local.hour * 60 + local.minute
    inside = (s <= m < e) if s < e else (m >= s or m < e)
    if not inside:
        return 0.0
    day = local.date() if m < e else local.date() + dt.timedelta(days=1)
    ends = dt.datetime.combine(day, dt.time(e // 60, e % 60), tzinfo=zone)
    return ends.timestamp()


def wanted(sub: Subscription, preference: str, conversation_id: str | None) -> bool:
    """False if this device switched ``preference`` off or muted the conversation."""
    if preference in sub.muted_types:
        return False
    return conversation_id is None or conversation_id not in sub.muted_conversations


def not_before(sub: Subscription, now: float) -> float:
    """When a push to ``sub`` may go (0: now): after its quiet hours."""
    return quiet_until(sub.quiet_start, sub.quiet_end, sub.timezone, now)
