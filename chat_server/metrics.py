"""What a process counts for Prometheus, and the port it is scraped on.

Off by default: with ``METRICS_PORT`` unset nothing is counted and nothing
listens. With it set, ``GET /metrics`` on ``METRICS_HOST:METRICS_PORT`` (a
port of its own, never the public one; default host 127.0.0.1) answers in
the Prometheus text format (``prometheus_client``). Several processes on one
host: give them one empty folder in ``PROMETHEUS_MULTIPROC_DIR`` (set before
the process starts; ``prometheus_client`` reads it at import) and any one of
them serves the sum over every live process.

The series (docs/deployment.md lists them with the alerts that matter):

- ``chat_connections`` (gauge): authenticated WebSocket connections;
- ``chat_authenticated_users`` (gauge): users with at least one of them
  (per process; summed over processes a user with connections on two
  processes counts twice);
- ``chat_frames_in_total{type}``, ``chat_frames_out_total{type}``: frames
  by protocol type (``invalid`` for a frame that does not parse);
- ``chat_messages_stored_total``: messages durably stored (not duplicates);
- ``chat_ack_latency_seconds`` (histogram): from a ``message.send`` read to
  its ``ack`` queued;
- ``chat_signature_verify_seconds`` (histogram): one Ed25519 verification,
  wherever ``VERIFIER`` runs it (the loop, a thread, the child process);
- ``chat_dependency_errors_total{dependency,where}``: the store or the broker
  unavailable (``dependency`` ``store``/``broker``; ``where`` ``auth``,
  ``send``, ``writer``, ``connection``);
- ``chat_slow_consumer_closes_total``: connections closed with 1013
  ``slow_consumer``;
- ``chat_resumes_total{recovered}``: conversation resumes (``sync``), with
  ``recovered`` ``true`` or ``false``.

Registration points for other parts (the push worker's series, listed in
``notifications/stats.py``): call `gauge` or `counter` with a ``chat_`` name;
each returns the same metric for the same name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import typing
from dataclasses import dataclass
from typing import Literal
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import multiprocess as _mp

from chat_server import protocol as p

__all__ = ["Metrics", "MetricsServer", "counter", "gauge", "serve_metrics"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_VERIFY_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01)

CONNECTIONS = Gauge(
    "chat_connections", "Authenticated WebSocket connections", multiprocess_mode="livesum"
)
USERS = Gauge(
    "chat_authenticated_users",
    "Users with at least one authenticated connection on the process",
    multiprocess_mode="livesum",
)
FRAMES_IN = Counter("chat_frames_in", "Frames received, by protocol type", ["type"])
FRAMES_OUT = Counter("chat_frames_out", "Frames sent, by protocol type", ["type"])
STORED = Counter("chat_messages_stored", "Messages durably stored (duplicates not counted)")
ACK_LATENCY = Histogram(
    "chat_ack_latency_seconds",
    "From a message.send read to its ack queued",
    buckets=_LATENCY_BUCKETS,
)
VERIFY = Histogram(
    "chat_signature_verify_seconds",
    "One Ed25519 signature verification (on the loop, a thread or the verifier process)",
    buckets=_VERIFY_BUCKETS,
)
DEPENDENCY_ERRORS = Counter(
    "chat_dependency_errors",
    "Store or broker unavailable, by dependency and where it was met",
    ["dependency", "where"],
)
SLOW_CLOSES = Counter("chat_slow_consumer_closes", "Connections closed as slow consumers")
RESUMES = Counter("chat_resumes", "Conversation resumes, by outcome", ["recovered"])

#: The protocol's frame types: label values are only ever these (and "invalid"/"other").
CLIENT_TYPES = frozenset(t.__struct_config__.tag for t in typing.get_args(p.ClientFrame))
SERVER_TYPES = frozenset(t.__struct_config__.tag for t in typing.get_args(p.ServerFrame))

_extra: dict[str, Gauge] = {}
_extra_counters: dict[str, Counter] = {}


def gauge(
    name: str, documentation: str, mode: Literal["livesum", "livemax"] = "livesum"
) -> Gauge:
    """A gauge of another part (e.g. ``chat_push_queue_depth``); the same one per name.

    Multi-process: ``mode`` says how live processes combine (``livesum``: their sum;
    ``livemax``: the largest, for a figure each process reads from one shared place).
    """
    if not name.startswith("chat_"):
        raise ValueError("metric names start with 'chat_'")
    found = _extra.get(name)
    if found is None:
        found = _extra[name] = Gauge(name, documentation, multiprocess_mode=mode)
    return found


def counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
    """A counter of another part (``<name>_total``); the same one per name. Summed over
    processes (dead ones included) when several share ``PROMETHEUS_MULTIPROC_DIR``."""
    if not name.startswith("chat_"):
        raise ValueError("metric names start with 'chat_'")
    found = _extra_counters.get(name)
    if found is None:
        found = _extra_counters[name] = Counter(name, documentation, labels)
    return found


class Metrics:
    """This process's counters. Disabled, every method returns at once (no cost)."""

    __slots__ = ("_in", "_out", "enabled")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._in = {t: FRAMES_IN.labels(t) for t in (*CLIENT_TYPES, "invalid")}
        self._out = {t: FRAMES_OUT.labels(t) for t in (*SERVER_TYPES, "other")}

    def connection_opened(self, users: int) -> None:
        """An authenticated connection is attached; ``users`` now have one on this process."""
        if self.enabled:
            CONNECTIONS.inc()
            USERS.set(users)

    def connection_closed(self, users: int) -> None:
        """An authenticated connection is detached."""
        if self.enabled:
            CONNECTIONS.dec()
            USERS.set(users)

    def frame_in(self, frame: object | None) -> None:
        """A frame was read: a parsed client frame, or None if it did not parse."""
        if self.enabled:
            config = getattr(frame, "__struct_config__", None)
            tag = config.tag if config is not None else "invalid"
            self._in.get(tag, self._in["invalid"]).inc()

    def frame_out(self, text: str) -> None:
        """A frame (its JSON text, ``{"type":"...",...}``) was sent."""
        if self.enabled:
            end = text.find('"', 9)
            child = self._out.get(text[9:end]) if text.startswith('{"type":"') else None
            (child or self._out["other"]).inc()

    def stored(self, seconds: float) -> None:
        """A message was stored and its ack queued ``seconds`` after it was read."""
        if self.enabled:
            STORED.inc()
            ACK_LATENCY.observe(seconds)

    def acked(self, seconds: float) -> None:
        """A duplicate was acknowledged ``seconds`` after it was read (nothing stored)."""
        if self.enabled:
            ACK_LATENCY.observe(seconds)

    def verified(self, count: int, seconds: float) -> None:
        """``count`` signatures were verified in ``seconds`` (one chunk, wherever it ran)."""
        if self.enabled and count:
            each = seconds / count
            for _ in range(count):
                VERIFY.observe(each)

    def dependency_error(self, dependency: str, where: str) -> None:
        """The store or the broker was unavailable."""
        if self.enabled:
            DEPENDENCY_ERRORS.labels(dependency, where).inc()

    def slow_consumer(self) -> None:
        """A connection was closed as a slow consumer."""
        if self.enabled:
            SLOW_CLOSES.inc()

    def resume(self, recovered: bool) -> None:
        """A conversation was resumed; ``recovered`` false if the gap was too long."""
        if self.enabled:
            RESUMES.labels("true" if recovered else "false").inc()


@dataclass
class MetricsServer:
    """The scrape port (a thread of ``prometheus_client``'s own HTTP server)."""

    httpd: WSGIServer
    port: int

    async def close(self) -> None:
        """Stop listening; mark this process gone for the multi-process gauges."""
        await asyncio.get_running_loop().run_in_executor(None, self.httpd.shutdown)
        self.httpd.server_close()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            with contextlib.suppress(Exception):
                _mp.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def serve_metrics(host: str, port: int) -> MetricsServer:
    """Listen on ``host:port`` (0: a free port) and answer scrapes from a thread."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    httpd, _thread = prometheus_client.start_http_server(port, host, registry)
    bound = int(httpd.server_address[1])
    log.info("metrics served", extra={"host": host, "port": bound})
    return MetricsServer(httpd, bound)
