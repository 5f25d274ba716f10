"""The push worker's figures for Prometheus (served on ``METRICS_PORT`` when it is set).

Registered through ``chat_server.metrics``; the worker updates them as it goes
(outcomes) and at each report (the outbox's depth and oldest job's age, every
``PUSH_STATS_SECONDS``):

- ``chat_push_outcomes_total{outcome,cause}``: ``outcome`` one of ``sent``,
  ``pruned``, ``retried``, ``short_payload``, ``skipped``, ``failed``;
  ``cause`` the push service's status (``410``, ``429``, ``503``...),
  ``network`` when it did not answer, empty where there is none (``sent``,
  ``skipped``, ``short_payload``). Summed over the worker processes;
- ``chat_push_queue_depth``: jobs in the outbox (due or waiting);
- ``chat_push_oldest_job_seconds``: how long the earliest due job has been due
  (0 when none is; jobs waiting for a reminder's moment, quiet hours or a
  retry are not due).

The two gauges read one shared outbox, so several workers show the largest
of their readings (``livemax``), not a sum.
"""

from __future__ import annotations

from chat_server.metrics import counter, gauge

OUTCOMES = counter(
    "chat_push_outcomes",
    "Push attempts by outcome (sent, pruned, retried, short_payload, skipped, failed) and cause",
    ("outcome", "cause"),
)
QUEUE_DEPTH = gauge(
    "chat_push_queue_depth", "Push jobs in the outbox (due or waiting)", mode="livemax"
)
OLDEST_JOB = gauge(
    "chat_push_oldest_job_seconds",
    "How long the earliest due push job has been due (0: none is due)",
    mode="livemax",
)


def outcome(name: str, cause: str = "") -> None:
    """Count one outcome."""
    OUTCOMES.labels(name, cause).inc()


def queue(depth: int, oldest_age: float) -> None:
    """Set the outbox gauges."""
    QUEUE_DEPTH.set(depth)
    OLDEST_JOB.set(oldest_age)
