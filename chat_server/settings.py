"""Settings read from the environment once, validated at start.

Every variable is optional; with none set the server runs on its embedded
defaults (embedded MongoDB-wire engine, in-process broker). A bad value raises
``SettingsError`` naming the variable and what it expects, and the process
stops before it serves anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Room a ``message.send`` frame needs besides its base64 body (ids, nonce, sig, meta).
FRAME_OVERHEAD = 512
#: Media types of attachments the apps accept by default (checked on the device, by content).
ATTACHMENT_TYPES = ("application/pdf", "image/png", "image/jpeg", "image/webp")


class SettingsError(ValueError):
    """A configuration variable holds a value the server cannot use."""

    def __init__(self, name: str, expected: str, got: str) -> None:
        super().__init__(f"{name}={got!r} is invalid: expected {expected}")
        self.name = name


@dataclass(frozen=True)
class Settings:
    """Everything configurable. See the README's configuration table."""

    host: str = "127.0.0.1"
    port: int = 8000
    store: str = "mongo"
    mongodb_url: str | None = None
    mongodb_db: str = "cejchat"
    data_dir: Path = Path("data")
    redis_url: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_frame_bytes: int = 65536
    max_body_bytes: int = 16384
    rate_per_second: float = 20.0
    rate_burst: int = 60
    send_queue_size: int = 512
    heartbeat_seconds: float = 20.0
    auth_timeout_seconds: float = 10.0
    session_ttl_days: int = 30
    activation_ttl_hours: int = 72
    login_max_failures: int = 5
    login_window_seconds: int = 900
    resume_max_messages: int = 1000
    require_e2ee: bool = True
    # auto: `chat_server.crypto.verify_pool.default_verifier`.
    verifier: str = "auto"
    verify_threads: int = 2
    # Prometheus scrape port (docs/deployment.md); None: off.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    # Faults and abuse (docs/security.md, docs/deployment.md).
    store_timeout_seconds: float = 2.0
    trusted_proxies: tuple[str, ...] = ()
    address_max_failures: int = 30
    password_hash_concurrency: int = 2
    password_hash_queue: int = 64
    max_connections_per_user: int = 20
    handshake_timeout_seconds: float = 10.0
    session_recheck_seconds: float = 30.0
    # Data lifecycle (docs/privacy.md).
    inactive_account_days: int = 730
    inactivity_notice_days: int = 30
    archive_retention_days: int = 730
    audit_retention_days: int = 1825
    retention_job: str = "auto"
    retention_interval_seconds: float = 3600.0
    retention_batch_size: int = 200
    # Web Push (notifications/, docs/deployment.md).
    push_worker: str = "in-process"
    vapid_private_key: str | None = None
    vapid_subject: str = "mailto:admin@localhost"
    push_allowed_hosts: tuple[str, ...] = ()
    push_allow_loopback: bool = False
    push_timeout_seconds: float = 10.0
    push_max_attempts: int = 5
    push_backoff_seconds: float = 2.0
    push_ttl_seconds: int = 7 * 86400
    push_concurrency: int = 32
    push_poll_seconds: float = 1.0
    push_stats_seconds: float = 60.0
    # Attachments (docs/protocol.md, "Attachments").
    attachment_max_bytes: int = 5 * 1024 * 1024
    attachment_types: tuple[str, ...] = ATTACHMENT_TYPES
    attachment_ttl_days: int = 120
    attachment_quota_bytes: int = 100 * 1024 * 1024
    attachment_uploads_per_hour: int = 60
    attachment_orphan_seconds: float = 3600.0
    attachment_sweep_seconds: float = 300.0
    attachment_image_quality: float = 0.8
    attachment_scan_url: str | None = None

    def origins(self) -> tuple[str, ...]:
        """Allowed WebSocket/HTTP origins; defaults to this server's own address."""
        if self.allowed_origins:
            return self.allowed_origins
        return (
            f"http://{self.host}:{self.port}",
            f"http://localhost:{self.port}",
            f"http://127.0.0.1:{self.port}",
        )


def _int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, f"an integer between {lo} and {hi}", raw) from None
    if not lo <= value <= hi:
        raise SettingsError(name, f"an integer between {lo} and {hi}", raw)
    return value


def _float(name: str, raw: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"a number between {lo} and {hi}", raw) from None
    if not lo <= value <= hi:
        raise SettingsError(name, f"a number between {lo} and {hi}", raw)
    return value


def _bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(name, "one of true/false/1/0/yes/no", raw)


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    if not raw.startswith(tuple(s + "://" for s in schemes)):
        raise SettingsError(name, "a URL starting with " + " or ".join(schemes), raw)
    return raw


def _origins(name: str, raw: str) -> tuple[str, ...]:
    items = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for o in items:
        if not o.startswith(("http://", "https://")):
            raise SettingsError(name, "a comma-separated list of http(s)://host[:port]", raw)
    return items


def _addresses(name: str, raw: str) -> tuple[str, ...]:
    import ipaddress

    items = tuple(a.strip() for a in raw.split(",") if a.strip())
    for a in items:
        try:
            ipaddress.ip_network(a, strict=False)
        except ValueError:
            expected = "a comma-separated list of IP addresses or networks"
            raise SettingsError(name, expected, raw) from None
    return items


def _subject(name: str, raw: str) -> str:
    if not (raw.startswith("mailto:") and "@" in raw) and not raw.startswith("https://"):
        raise SettingsError(name, "a mailto: address or an https:// URL", raw)
    return raw


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    import re

    items = tuple(h.strip().lower().rstrip(".") for h in raw.split(",") if h.strip())
    for h in items:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9.\-]*[a-z0-9])?", h):
            raise SettingsError(name, "a comma-separated list of host names", raw)
    return items


def _vapid_key(name: str, raw: str) -> str:
    from notifications.vapid import VapidKeyError, normalise

    try:
        return normalise(raw)
    except VapidKeyError:
        expected = "a P-256 private key (PEM, or the base64url of its 32 bytes)"
        raise SettingsError(name, expected, "<hidden>") from None


#: ``VERIFIER`` values (`chat_server.crypto.verify_pool`).
VERIFIERS = ("auto", "loop", "threads", "process")


def _verify_threads(name: str, raw: str) -> int:
    if raw.strip() == "0":  # what "on the event loop" was before VERIFIER
        raise SettingsError(name, "an integer between 1 and 64 (for the loop: VERIFIER=loop)", raw)
    return _int(name, raw, 1, 64)


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    if raw not in allowed:
        raise SettingsError(name, "one of " + ", ".join(allowed), raw)
    return raw


def _level(name: str, raw: str) -> str:
    up = raw.upper()
    if up not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(name, "DEBUG, INFO, WARNING or ERROR", raw)
    return up


def _media_types(name: str, raw: str) -> tuple[str, ...]:
    items = tuple(t.strip().lower() for t in raw.split(",") if t.strip())
    if not items or any(t not in ATTACHMENT_TYPES for t in items):
        raise SettingsError(
            name, "a comma-separated list among " + ", ".join(ATTACHMENT_TYPES), raw
        )
    return items


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build ``Settings`` from ``env`` (default ``os.environ``); raise ``SettingsError``."""
    e = os.environ if env is None else env
    kw: dict[str, object] = {}

    def take(var: str, key: str, conv: Callable[[str, str], object]) -> None:
        raw = e.get(var)
        if raw is not None and raw != "":
            kw[key] = conv(var, raw)

    take("HOST", "host", lambda n, r: r)
    take("PORT", "port", lambda n, r: _int(n, r, 0, 65535))
    take("STORE", "store", lambda n, r: _choice(n, r, ("mongo", "memory")))
    take("MONGODB_URL", "mongodb_url", lambda n, r: _url(n, r, ("mongodb", "mongodb+srv")))
    take("MONGODB_DB", "mongodb_db", lambda n, r: r)
    take("DATA_DIR", "data_dir", lambda n, r: Path(r))
    take("REDIS_URL", "redis_url", lambda n, r: _url(n, r, ("redis", "rediss", "unix")))
    take("ALLOWED_ORIGINS", "allowed_origins", _origins)
    take("MAX_FRAME_BYTES", "max_frame_bytes", lambda n, r: _int(n, r, 1024, 16 * 2**20))
    take("MAX_BODY_BYTES", "max_body_bytes", lambda n, r: _int(n, r, 256, 8 * 2**20))
    take("RATE_PER_SECOND", "rate_per_second", lambda n, r: _float(n, r, 0.1, 1e6))
    take("RATE_BURST", "rate_burst", lambda n, r: _int(n, r, 1, 10**6))
    take("SEND_QUEUE_SIZE", "send_queue_size", lambda n, r: _int(n, r, 8, 10**6))
    take("HEARTBEAT_SECONDS", "heartbeat_seconds", lambda n, r: _float(n, r, 1, 3600))
    take("AUTH_TIMEOUT_SECONDS", "auth_timeout_seconds", lambda n, r: _float(n, r, 0.5, 600))
    take("SESSION_TTL_DAYS", "session_ttl_days", lambda n, r: _int(n, r, 1, 3650))
    take("ACTIVATION_TTL_HOURS", "activation_ttl_hours", lambda n, r: _int(n, r, 1, 24 * 90))
    take("LOGIN_MAX_FAILURES", "login_max_failures", lambda n, r: _int(n, r, 1, 1000))
    take("LOGIN_WINDOW_SECONDS", "login_window_seconds", lambda n, r: _int(n, r, 1, 86400))
    take("RESUME_MAX_MESSAGES", "resume_max_messages", lambda n, r: _int(n, r, 1, 10**6))
    take("REQUIRE_E2EE", "require_e2ee", _bool)
    take("VERIFIER", "verifier", lambda n, r: _choice(n, r, VERIFIERS))
    take("VERIFY_THREADS", "verify_threads", _verify_threads)
    take("METRICS_PORT", "metrics_port", lambda n, r: _int(n, r, 1, 65535))
    take("METRICS_HOST", "metrics_host", lambda n, r: r)
    take("LOG_LEVEL", "log_level", _level)
    take("STORE_TIMEOUT_SECONDS", "store_timeout_seconds", lambda n, r: _float(n, r, 0.5, 60))
    take("TRUSTED_PROXIES", "trusted_proxies", _addresses)
    take("ADDRESS_MAX_FAILURES", "address_max_failures", lambda n, r: _int(n, r, 1, 10**6))
    take("PASSWORD_HASH_CONCURRENCY", "password_hash_concurrency", lambda n, r: _int(n, r, 1, 256))
    take("PASSWORD_HASH_QUEUE", "password_hash_queue", lambda n, r: _int(n, r, 0, 10**5))
    take("MAX_CONNECTIONS_PER_USER", "max_connections_per_user", lambda n, r: _int(n, r, 1, 10**4))
    take(
        "HANDSHAKE_TIMEOUT_SECONDS",
        "handshake_timeout_seconds",
        lambda n, r: _float(n, r, 0.5, 600),
    )
    take("SESSION_RECHECK_SECONDS", "session_recheck_seconds", lambda n, r: _float(n, r, 1, 86400))
    take("INACTIVE_ACCOUNT_DAYS", "inactive_account_days", lambda n, r: _int(n, r, 31, 36500))
    take("INACTIVITY_NOTICE_DAYS", "inactivity_notice_days", lambda n, r: _int(n, r, 1, 365))
    take("ARCHIVE_RETENTION_DAYS", "archive_retention_days", lambda n, r: _int(n, r, 1, 36500))
    take("AUDIT_RETENTION_DAYS", "audit_retention_days", lambda n, r: _int(n, r, 1, 36500))
    take(
        "RETENTION_JOB",
        "retention_job",
        lambda n, r: _choice(n, r, ("auto", "in-process", "worker", "off")),
    )
    take(
        "RETENTION_INTERVAL_SECONDS",
        "retention_interval_seconds",
        lambda n, r: _float(n, r, 10, 7 * 86400),
    )
    take("RETENTION_BATCH_SIZE", "retention_batch_size", lambda n, r: _int(n, r, 1, 10_000))
    take("PUSH_WORKER", "push_worker", lambda n, r: _choice(n, r, ("in-process", "off")))
    take("VAPID_PRIVATE_KEY", "vapid_private_key", _vapid_key)
    take("VAPID_SUBJECT", "vapid_subject", _subject)
    take("PUSH_ALLOWED_HOSTS", "push_allowed_hosts", _hosts)
    take("PUSH_ALLOW_LOOPBACK", "push_allow_loopback", _bool)
    take("PUSH_TIMEOUT_SECONDS", "push_timeout_seconds", lambda n, r: _float(n, r, 0.5, 120))
    take("PUSH_MAX_ATTEMPTS", "push_max_attempts", lambda n, r: _int(n, r, 1, 50))
    take("PUSH_BACKOFF_SECONDS", "push_backoff_seconds", lambda n, r: _float(n, r, 0.01, 3600))
    take("PUSH_TTL_SECONDS", "push_ttl_seconds", lambda n, r: _int(n, r, 60, 28 * 86400))
    take("PUSH_CONCURRENCY", "push_concurrency", lambda n, r: _int(n, r, 1, 1024))
    take("PUSH_POLL_SECONDS", "push_poll_seconds", lambda n, r: _float(n, r, 0.05, 60))
    take("PUSH_STATS_SECONDS", "push_stats_seconds", lambda n, r: _float(n, r, 0.1, 3600))
    take("ATTACHMENT_MAX_BYTES", "attachment_max_bytes", lambda n, r: _int(n, r, 1, 64 * 2**20))
    take("ATTACHMENT_TYPES", "attachment_types", _media_types)
    take("ATTACHMENT_TTL_DAYS", "attachment_ttl_days", lambda n, r: _int(n, r, 1, 36500))
    take(
        "ATTACHMENT_QUOTA_BYTES",
        "attachment_quota_bytes",
        lambda n, r: _int(n, r, 1, 2**50),
    )
    take(
        "ATTACHMENT_UPLOADS_PER_HOUR",
        "attachment_uploads_per_hour",
        lambda n, r: _int(n, r, 1, 10**6),
    )
    take(
        "ATTACHMENT_ORPHAN_SECONDS",
        "attachment_orphan_seconds",
        lambda n, r: _float(n, r, 1, 7 * 86400),
    )
    take(
        "ATTACHMENT_SWEEP_SECONDS",
        "attachment_sweep_seconds",
        lambda n, r: _float(n, r, 0.1, 86400),
    )
    take(
        "ATTACHMENT_IMAGE_QUALITY",
        "attachment_image_quality",
        lambda n, r: _float(n, r, 0.1, 1.0),
    )
    take("ATTACHMENT_SCAN_URL", "attachment_scan_url", lambda n, r: _url(n, r, ("https", "http")))
    settings = Settings(**kw)  # type: ignore[arg-type]
    if settings.inactivity_notice_days >= settings.inactive_account_days:
        raise SettingsError(
            "INACTIVITY_NOTICE_DAYS",
            f"fewer days than INACTIVE_ACCOUNT_DAYS={settings.inactive_account_days}",
            str(settings.inactivity_notice_days),
        )
    # A body travels base64-encoded inside a frame, next to the other fields.
    fits = (settings.max_frame_bytes - FRAME_OVERHEAD) * 3 // 4
    if settings.max_body_bytes > fits:
        raise SettingsError(
            "MAX_BODY_BYTES",
            f"at most {fits}, so that a base64 body fits in MAX_FRAME_BYTES="
            f"{settings.max_frame_bytes}",
            str(settings.max_body_bytes),
        )
    return settings
