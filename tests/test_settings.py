"""Settings: every variable is parsed; a bad value stops the process naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chat_server.crypto.verify_pool import default_verifier
from chat_server.settings import Settings, SettingsError, load_settings
from notifications.vapid import generate_pem
from tests.helpers import REPO_ROOT, clean_env

VAPID_PEM = generate_pem()

GOOD: list[tuple[str, str, str, Any]] = [
    ("HOST", "0.0.0.0", "host", "0.0.0.0"),
    ("PORT", "8123", "port", 8123),
    ("STORE", "memory", "store", "memory"),
    ("MONGODB_URL", "mongodb://db.example:27017/?replicaSet=rs0", "mongodb_url", None),
    ("MONGODB_URL", "mongodb+srv://cluster.example/", "mongodb_url", None),
    ("MONGODB_DB", "chat_prod", "mongodb_db", "chat_prod"),
    ("DATA_DIR", "/var/lib/chat", "data_dir", Path("/var/lib/chat")),
    ("REDIS_URL", "redis://127.0.0.1:6379/0", "redis_url", None),
    ("REDIS_URL", "rediss://cache.example:6380", "redis_url", None),
    ("REDIS_URL", "unix:///run/redis.sock", "redis_url", None),
    (
        "ALLOWED_ORIGINS",
        "https://a.example, https://b.example:8443/",
        "allowed_origins",
        ("https://a.example", "https://b.example:8443"),
    ),
    ("MAX_FRAME_BYTES", "131072", "max_frame_bytes", 131072),
    ("MAX_BODY_BYTES", "4096", "max_body_bytes", 4096),
    ("RATE_PER_SECOND", "2.5", "rate_per_second", 2.5),
    ("RATE_BURST", "7", "rate_burst", 7),
    ("SEND_QUEUE_SIZE", "64", "send_queue_size", 64),
    ("HEARTBEAT_SECONDS", "5", "heartbeat_seconds", 5.0),
    ("AUTH_TIMEOUT_SECONDS", "0.5", "auth_timeout_seconds", 0.5),
    ("SESSION_TTL_DAYS", "7", "session_ttl_days", 7),
    ("ACTIVATION_TTL_HOURS", "24", "activation_ttl_hours", 24),
    ("LOGIN_MAX_FAILURES", "3", "login_max_failures", 3),
    ("LOGIN_WINDOW_SECONDS", "60", "login_window_seconds", 60),
    ("RESUME_MAX_MESSAGES", "10", "resume_max_messages", 10),
    ("REQUIRE_E2EE", "false", "require_e2ee", False),
    ("REQUIRE_E2EE", "YES", "require_e2ee", True),
    ("VERIFIER", "loop", "verifier", "loop"),
    ("VERIFIER", "threads", "verifier", "threads"),
    ("VERIFIER", "process", "verifier", "process"),
    ("VERIFY_THREADS", "1", "verify_threads", 1),
    ("VERIFY_THREADS", "4", "verify_threads", 4),
    ("METRICS_PORT", "9100", "metrics_port", 9100),
    ("METRICS_HOST", "10.0.0.5", "metrics_host", None),
    ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
    ("STORE_TIMEOUT_SECONDS", "1.5", "store_timeout_seconds", 1.5),
    ("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8", "trusted_proxies", ("127.0.0.1", "10.0.0.0/8")),
    ("ADDRESS_MAX_FAILURES", "50", "address_max_failures", 50),
    ("PASSWORD_HASH_CONCURRENCY", "4", "password_hash_concurrency", 4),
    ("PASSWORD_HASH_QUEUE", "10", "password_hash_queue", 10),
    ("MAX_CONNECTIONS_PER_USER", "5", "max_connections_per_user", 5),
    ("HANDSHAKE_TIMEOUT_SECONDS", "3", "handshake_timeout_seconds", 3.0),
    ("SESSION_RECHECK_SECONDS", "10", "session_recheck_seconds", 10.0),
    ("INACTIVE_ACCOUNT_DAYS", "365", "inactive_account_days", 365),
    ("INACTIVITY_NOTICE_DAYS", "15", "inactivity_notice_days", 15),
    ("ARCHIVE_RETENTION_DAYS", "90", "archive_retention_days", 90),
    ("AUDIT_RETENTION_DAYS", "3650", "audit_retention_days", 3650),
    ("RETENTION_JOB", "off", "retention_job", "off"),
    ("RETENTION_INTERVAL_SECONDS", "600", "retention_interval_seconds", 600.0),
    ("RETENTION_BATCH_SIZE", "50", "retention_batch_size", 50),
    ("PUSH_WORKER", "off", "push_worker", "off"),
    ("VAPID_PRIVATE_KEY", VAPID_PEM, "vapid_private_key", None),
    ("VAPID_SUBJECT", "https://chat.example/contact", "vapid_subject", None),
    ("VAPID_SUBJECT", "mailto:ops@chat.example", "vapid_subject", None),
    (
        "PUSH_ALLOWED_HOSTS",
        "fcm.googleapis.com, push.services.mozilla.com.",
        "push_allowed_hosts",
        ("fcm.googleapis.com", "push.services.mozilla.com"),
    ),
    ("PUSH_ALLOW_LOOPBACK", "true", "push_allow_loopback", True),
    ("PUSH_TIMEOUT_SECONDS", "3", "push_timeout_seconds", 3.0),
    ("PUSH_MAX_ATTEMPTS", "3", "push_max_attempts", 3),
    ("PUSH_BACKOFF_SECONDS", "0.5", "push_backoff_seconds", 0.5),
    ("PUSH_TTL_SECONDS", "3600", "push_ttl_seconds", 3600),
    ("PUSH_CONCURRENCY", "8", "push_concurrency", 8),
    ("PUSH_POLL_SECONDS", "0.5", "push_poll_seconds", 0.5),
    ("PUSH_STATS_SECONDS", "5", "push_stats_seconds", 5.0),
    ("ATTACHMENT_MAX_BYTES", "1000", "attachment_max_bytes", 1000),
    (
        "ATTACHMENT_TYPES",
        "application/pdf, IMAGE/PNG",
        "attachment_types",
        ("application/pdf", "image/png"),
    ),
    ("ATTACHMENT_TTL_DAYS", "30", "attachment_ttl_days", 30),
    ("ATTACHMENT_QUOTA_BYTES", "1000000", "attachment_quota_bytes", 1_000_000),
    ("ATTACHMENT_UPLOADS_PER_HOUR", "5", "attachment_uploads_per_hour", 5),
    ("ATTACHMENT_ORPHAN_SECONDS", "60", "attachment_orphan_seconds", 60.0),
    ("ATTACHMENT_SWEEP_SECONDS", "10", "attachment_sweep_seconds", 10.0),
    ("ATTACHMENT_IMAGE_QUALITY", "0.5", "attachment_image_quality", 0.5),
    ("ATTACHMENT_SCAN_URL", "https://scan.example.org/scan", "attachment_scan_url", None),
]

BAD: list[tuple[str, str]] = [
    ("PUSH_WORKER", "separate"),
    ("VAPID_SUBJECT", "admin@example"),
    ("PUSH_ALLOWED_HOSTS", "https://fcm.googleapis.com"),
    ("PUSH_ALLOW_LOOPBACK", "sometimes"),
    ("PUSH_TIMEOUT_SECONDS", "0"),
    ("PUSH_MAX_ATTEMPTS", "0"),
    ("PUSH_TTL_SECONDS", "10"),
    ("PORT", "abc"),
    ("PORT", "70000"),
    ("PORT", "-1"),
    ("STORE", "foo"),
    ("MONGODB_URL", "http://db.example"),
    ("REDIS_URL", "http://x"),
    ("ALLOWED_ORIGINS", "a.example"),
    ("MAX_FRAME_BYTES", "12"),
    ("MAX_BODY_BYTES", "1.5"),
    ("RATE_PER_SECOND", "fast"),
    ("RATE_PER_SECOND", "nan"),
    ("RATE_PER_SECOND", "0"),
    ("RATE_BURST", "0"),
    ("SEND_QUEUE_SIZE", "1"),
    ("HEARTBEAT_SECONDS", "0"),
    ("AUTH_TIMEOUT_SECONDS", "0.1"),
    ("SESSION_TTL_DAYS", "0"),
    ("ACTIVATION_TTL_HOURS", "x"),
    ("LOGIN_MAX_FAILURES", "0"),
    ("LOGIN_WINDOW_SECONDS", "0"),
    ("RESUME_MAX_MESSAGES", "0"),
    ("REQUIRE_E2EE", "maybe"),
    ("VERIFIER", "gpu"),
    ("VERIFY_THREADS", "0"),
    ("VERIFY_THREADS", "65"),
    ("VERIFY_THREADS", "two"),
    ("METRICS_PORT", "0"),
    ("METRICS_PORT", "http"),
    ("LOG_LEVEL", "LOUD"),
    ("STORE_TIMEOUT_SECONDS", "0"),
    ("TRUSTED_PROXIES", "nginx.local"),
    ("ADDRESS_MAX_FAILURES", "0"),
    ("PASSWORD_HASH_CONCURRENCY", "0"),
    ("PASSWORD_HASH_QUEUE", "-1"),
    ("MAX_CONNECTIONS_PER_USER", "0"),
    ("HANDSHAKE_TIMEOUT_SECONDS", "0"),
    ("SESSION_RECHECK_SECONDS", "0"),
    ("INACTIVE_ACCOUNT_DAYS", "30"),
    ("INACTIVITY_NOTICE_DAYS", "0"),
    ("INACTIVITY_NOTICE_DAYS", "730"),
    ("ARCHIVE_RETENTION_DAYS", "0"),
    ("AUDIT_RETENTION_DAYS", "many"),
    ("RETENTION_JOB", "cron"),
    ("RETENTION_INTERVAL_SECONDS", "1"),
    ("RETENTION_BATCH_SIZE", "0"),
    ("ATTACHMENT_MAX_BYTES", "0"),
    ("ATTACHMENT_TYPES", "application/zip"),
    ("ATTACHMENT_TYPES", ","),
    ("ATTACHMENT_TTL_DAYS", "0"),
    ("ATTACHMENT_QUOTA_BYTES", "-1"),
    ("ATTACHMENT_UPLOADS_PER_HOUR", "0"),
    ("ATTACHMENT_ORPHAN_SECONDS", "0"),
    ("ATTACHMENT_SWEEP_SECONDS", "0"),
    ("ATTACHMENT_IMAGE_QUALITY", "2"),
    ("ATTACHMENT_SCAN_URL", "ftp://scan.example.org"),
]


def test_defaults_without_any_variable() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.mongodb_url is None
    assert s.redis_url is None
    assert s.require_e2ee is True
    assert "http://127.0.0.1:8000" in s.origins()


@pytest.mark.parametrize(("var", "raw", "attr", "expected"), GOOD)
def test_every_variable_is_parsed(var: str, raw: str, attr: str, expected: Any) -> None:
    s = load_settings({var: raw})
    assert getattr(s, attr) == (raw if expected is None else expected)


def test_verifier_auto_follows_the_cpus_the_process_may_use() -> None:
    assert Settings().verifier == "auto"
    assert default_verifier(1) == "loop"
    assert default_verifier(2) == "process"
    assert default_verifier(64) == "process"
    assert default_verifier() == ("process" if len(os.sched_getaffinity(0)) > 1 else "loop")


def test_every_settings_field_has_a_variable() -> None:
    covered = {attr for _, _, attr, _ in GOOD}
    fields = set(Settings.__dataclass_fields__) - {"extra"}
    assert fields == covered


def test_a_bad_vapid_key_is_refused_without_echoing_it() -> None:
    for raw in ("not a key", "A" * 42, VAPID_PEM.replace("A", "B", 3)):
        with pytest.raises(SettingsError) as info:
            load_settings({"VAPID_PRIVATE_KEY": raw})
        assert info.value.name == "VAPID_PRIVATE_KEY"
        assert raw not in str(info.value)


def test_empty_value_means_default() -> None:
    assert load_settings({"PORT": "", "REDIS_URL": ""}) == Settings()


@pytest.mark.parametrize(("var", "raw"), BAD)
def test_bad_value_names_the_variable(var: str, raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({var: raw})
    assert info.value.name == var
    assert var in str(info.value)
    assert repr(raw) in str(info.value)


def test_allowed_origins_replace_the_default() -> None:
    s = load_settings({"ALLOWED_ORIGINS": "https://console.example"})
    assert s.origins() == ("https://console.example",)


def test_body_limit_must_fit_in_a_frame() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"MAX_FRAME_BYTES": "2048", "MAX_BODY_BYTES": "4096"})
    assert info.value.name == "MAX_BODY_BYTES"
    # Lowering only the frame limit below the default body limit names the effective value.
    with pytest.raises(SettingsError) as info:
        load_settings({"MAX_FRAME_BYTES": "2048"})
    assert info.value.name == "MAX_BODY_BYTES"
    assert "16384" in str(info.value)
    # The body travels base64-encoded: a limit that cannot fit once encoded is refused.
    with pytest.raises(SettingsError) as info:
        load_settings({"MAX_FRAME_BYTES": "65536", "MAX_BODY_BYTES": "60000"})
    assert info.value.name == "MAX_BODY_BYTES"
    assert load_settings({"MAX_BODY_BYTES": "48000"}).max_body_bytes == 48000


def test_server_exits_2_on_a_bad_port() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chat_server"],
        env=clean_env(PORT="abc"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "PORT" in proc.stderr
    assert "'abc'" in proc.stderr
