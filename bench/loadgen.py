"""The load generator: one worker process, one uvloop event loop, many clients.

Modes (``Job.mode``):

- ``closed``: every client keeps ``inflight`` messages outstanding; a message
  is complete when its sender has the ``ack`` AND the other member has the
  ``message.created``; only then does the sender send another. Completions
  inside the measurement window are counted (saturation throughput).
- ``open``: messages leave at a fixed offered rate, spread round-robin over
  the clients, whatever the server's progress; latency is measured from the
  intended send time (no coordinated omission).
- ``idle``: authenticated connections that send nothing (server memory).
- ``storm``: traffic, then the orchestrator kills and restarts the server;
  every client reconnects at once with ``resume``, resends what was not
  acknowledged (same ``client_id``), and the worker checks that every
  acknowledged message reached the other member (seq by seq).

Every loop is bounded in count and in time. The worker talks to the
orchestrator over a pipe: ``("connected", info)`` -> a command -> ... ->
``("result", stats)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from bench.dialects import DIALECTS, ConvIn, MsgIn
from bench.workload import Payloads, conversation_id, fresh_nonce, token_of, user_ids
from bench.wsclient import WsConnection

Endpoint = tuple[str, int]

# uvloop's loop.time() has millisecond resolution: stamp events with this instead.
_now = time.monotonic


@dataclass
class Job:
    """What one worker does. Times are seconds; ``rate`` is this worker's share."""

    mode: str
    dialect: str
    endpoints: list[Endpoint]
    pairs: list[int]
    cpus: set[int] = field(default_factory=set)
    seed: int = 1
    inflight: int = 1
    rate: float = 0.0
    warmup: float = 2.0
    duration: float = 5.0
    grace: float = 3.0
    max_messages: int = 2_000_000
    connect_concurrency: int = 200
    connect_timeout: float = 30.0
    connect_deadline: float = 300.0
    first_batch: int = 0
    storm_rate: float = 500.0
    storm_traffic_max: float = 30.0
    storm_retry: float = 0.25
    storm_deadline: float = 90.0
    signed: bool = False
    signed_messages: int = 0


class Rec:
    """One message in flight."""

    __slots__ = ("acked", "client", "delivered", "t0")

    def __init__(self, t0: float, client: Client) -> None:
        self.t0 = t0
        self.client = client
        self.acked = 0.0
        self.delivered = 0.0


class Client:
    """One simulated member: a connection, its conversation, and its resume position."""

    __slots__ = (
        "above",
        "attempt",
        "authed",
        "base",
        "caught_t",
        "conn",
        "conv",
        "endpoint",
        "gen",
        "idx",
        "inflight",
        "n",
        "peer",
        "pos",
        "pos_t",
        "presigned",
        "resume",
        "synced_t",
        "token",
        "unacked",
        "user",
    )

    def __init__(self, gen: Generator, idx: int, pair: int, role: int, endpoint: Endpoint) -> None:
        self.gen = gen
        self.idx = idx
        ids = user_ids(pair)
        self.user, self.peer = ids[role], ids[1 - role]
        self.token = token_of(self.user) if gen.dialect.name == "chat" else self.user
        self.conv = conversation_id(pair)
        self.endpoint = endpoint
        self.resume: dict[str, int] | None = None
        self.conn: WsConnection | None = None
        self.authed: asyncio.Future[None] | None = None
        self.attempt = 0
        self.n = 0
        self.inflight = 0
        self.pos = 0
        self.base = -1
        self.above: set[int] = set()
        self.pos_t = 0.0
        self.synced_t = 0.0
        self.caught_t = 0.0
        self.unacked: dict[str, bytes] = {}
        self.presigned: list[tuple[str, bytes]] = []

    # dialect callbacks

    def write(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.send(data)

    def auth_ok(self, conversations: list[ConvIn] | None) -> None:
        if self.base < 0:
            self.base = 0
            for c in conversations or ():
                if c.id == self.conv:
                    self.base = self.pos = c.last_seq
        if self.authed is not None and not self.authed.done():
            self.authed.set_result(None)

    def on_ack(self, client_id: str, seq: int) -> None:
        self.gen.acked(self, client_id, seq)

    def on_created(self, conversation: str, seq: int, client_id: str) -> None:
        self.gen.delivered(self, seq, client_id)

    def on_sync(self, conversation: str, messages: list[MsgIn], seq: int, recovered: bool) -> None:
        self.gen.synced(self, messages, recovered)

    def on_error(self, code: str, frame_id: str | None) -> None:
        self.gen.refused(self, code, frame_id)

    def on_message(self, data: bytes) -> None:
        self.gen.dialect.feed(self, data)


class Generator:
    """All clients of one worker and their counters."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.loop = asyncio.get_running_loop()
        self.dialect = DIALECTS[job.dialect]()
        self.payloads = Payloads.make(job.seed)
        self.rng = random.Random(job.seed)
        self.tag = secrets.token_hex(3)
        self.clients: list[Client] = []
        placement = random.Random(job.seed * 7919)
        for pair in job.pairs:
            for role in (0, 1):
                ep = job.endpoints[placement.randrange(len(job.endpoints))]
                self.clients.append(Client(self, len(self.clients), pair, role, ep))
        self.pending: dict[str, Rec] = {}
        self.running = False
        self.closed_loop = job.mode == "closed"
        self.storm = False
        self.w0 = self.w1 = 0.0
        self.sent = 0
        self.send_failed = 0
        self.completed = 0
        self.done_in_window = 0
        self.lat: list[float] = []
        self.ack_lat: list[float] = []
        self.unexpected = 0
        self.dup_created = 0
        self.errors: Counter[str] = Counter()
        self.disconnects = 0
        self.not_recovered = 0
        self.reconnect_attempts = 0
        self.conv_final: dict[str, int] = {}
        self.presigning = job.signed and self.dialect.name == "chat"
        self.exhausted = 0

    # connections

    def _factory(self, c: Client, uri: str) -> Callable[[], WsConnection]:
        c.attempt += 1
        attempt = c.attempt

        def make() -> WsConnection:
            conn = WsConnection(uri, c.on_message, lambda: self.on_closed(c, attempt))
            c.conn = conn
            return conn

        return make

    async def connect(self, c: Client, attempts: int = 5) -> bool:
        """Open, authenticate; retry a few times. True once ``auth.ok`` arrived."""
        host, port = c.endpoint
        uri = f"ws://{host}:{port}{self.dialect.path}"
        timeout = self.job.connect_timeout
        for i in range(attempts):
            c.authed = self.loop.create_future()
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(self._factory(c, uri), host, port), timeout
                )
                if c.conn is None:
                    raise ConnectionError("closed at once")
                await asyncio.wait_for(asyncio.shield(c.conn.opened), timeout)
                self.dialect.on_open(c)
                await asyncio.wait_for(asyncio.shield(c.authed), timeout)
                return True
            except (OSError, ConnectionError, TimeoutError):
                if c.conn is not None:
                    c.conn.abort()
                    c.conn = None
                await asyncio.sleep(0.2 * (i + 1))
        return False

    async def connect_all(self, clients: list[Client]) -> dict[str, Any]:
        sem = asyncio.Semaphore(self.job.connect_concurrency)
        t0 = time.monotonic()

        async def one(c: Client) -> bool:
            async with sem:
                return await self.connect(c)

        ok = await asyncio.wait_for(
            asyncio.gather(*(one(c) for c in clients)), self.job.connect_deadline
        )
        return {
            "connected": sum(ok),
            "failed": len(ok) - sum(ok),
            "connect_seconds": time.monotonic() - t0,
        }

    def on_closed(self, c: Client, attempt: int) -> None:
        if attempt != c.attempt:
            return
        was_authed = c.authed is not None and c.authed.done() and not c.authed.cancelled()
        c.conn = None
        if not was_authed:
            return
        self.disconnects += 1
        if self.storm:
            self.running = False  # no new traffic once the server is gone
            self.loop.create_task(self.reconnect(c))

    async def reconnect(self, c: Client) -> None:
        """Storm: retry every ``storm_retry`` s until authenticated, then resend the unacked."""
        host, port = c.endpoint
        uri = f"ws://{host}:{port}{self.dialect.path}"
        deadline = _now() + self.job.storm_deadline
        c.synced_t = 0.0
        while _now() < deadline:
            self.reconnect_attempts += 1
            c.authed = self.loop.create_future()
            c.resume = {c.conv: c.pos}
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(self._factory(c, uri), host, port), 10
                )
                if c.conn is None:
                    raise ConnectionError("closed at once")
                await asyncio.wait_for(asyncio.shield(c.conn.opened), 10)
                self.dialect.on_open(c)
                await asyncio.wait_for(asyncio.shield(c.authed), 20)
            except (OSError, ConnectionError, TimeoutError):
                if c.conn is not None:
                    c.conn.abort()
                    c.conn = None
                await asyncio.sleep(self.job.storm_retry)
                continue
            for frame in list(c.unacked.values()):
                c.write(frame)
            return

    # traffic

    def send_one(self, c: Client, t0: float) -> None:
        if self.sent >= self.job.max_messages or c.conn is None:
            self.send_failed += 1
            return
        if c.presigned:
            client_id, frame = c.presigned.pop()
        elif self.presigning:
            self.exhausted += 1
            return
        else:
            c.n += 1
            client_id = f"{self.tag}{c.idx:x}.{c.n:x}"
            p = self.payloads
            i = self.rng.getrandbits(6) % len(p.bodies)
            frame = self.dialect.message(
                c.conv, client_id, p.bodies[i], fresh_nonce(), p.sigs[i], 0
            )
        self.pending[client_id] = Rec(t0, c)
        c.inflight += 1
        self.sent += 1
        if self.storm:
            c.unacked[client_id] = frame
        if not c.conn.send(frame):
            self.send_failed += 1

    def acked(self, c: Client, client_id: str, seq: int) -> None:
        if self.storm and c.unacked.pop(client_id, None) is not None:
            if seq > self.conv_final.get(c.conv, 0):
                self.conv_final[c.conv] = seq
            self.hold(c, seq)
        rec = self.pending.get(client_id)
        if rec is None or rec.acked:
            return
        rec.acked = _now()
        if rec.delivered:
            self.complete(client_id, rec, rec.acked)

    def delivered(self, c: Client, seq: int, client_id: str) -> None:
        if self.storm and not self.hold(c, seq):
            self.dup_created += 1
        rec = self.pending.get(client_id)
        if rec is None:
            self.unexpected += 1
            return
        if rec.delivered:
            self.dup_created += 1
            return
        rec.delivered = _now()
        if rec.acked:
            self.complete(client_id, rec, rec.delivered)

    def complete(self, client_id: str, rec: Rec, now: float) -> None:
        del self.pending[client_id]
        if self.w0 <= now < self.w1:
            self.done_in_window += 1
        key = now if self.closed_loop else rec.t0
        if self.w0 <= key < self.w1:
            self.completed += 1
            self.lat.append(rec.delivered - rec.t0)
            self.ack_lat.append(rec.acked - rec.t0)
        sender = rec.client
        sender.inflight -= 1
        if self.closed_loop and self.running:
            self.send_one(sender, now)

    def refused(self, c: Client, code: str, frame_id: str | None) -> None:
        self.errors[code] += 1
        rec = self.pending.pop(frame_id, None) if frame_id else None
        if rec is not None:
            rec.client.inflight -= 1
            if self.closed_loop and self.running:
                self.send_one(rec.client, _now())

    # storm bookkeeping

    def hold(self, c: Client, seq: int) -> bool:
        """Record that ``c`` has ``seq``; False if it already had it."""
        if seq <= c.pos or seq in c.above:
            return False
        if seq == c.pos + 1:
            c.pos = seq
            while c.pos + 1 in c.above:
                c.above.remove(c.pos + 1)
                c.pos += 1
            c.pos_t = _now()
        else:
            c.above.add(seq)
        return True

    def synced(self, c: Client, messages: list[MsgIn], recovered: bool) -> None:
        if not recovered:
            self.not_recovered += 1
        for m in messages:
            self.hold(c, m.seq)
        c.synced_t = _now()

    # modes

    async def run_closed(self, start: float) -> None:
        job = self.job
        self.w0, self.w1 = start + job.warmup, start + job.warmup + job.duration
        await asyncio.sleep(max(0.0, start - _now()))
        self.running = True
        now = _now()
        for _ in range(job.inflight):
            for c in self.clients:
                self.send_one(c, now)
        await asyncio.sleep(max(0.0, self.w1 - _now()))
        self.running = False
        await self.drain(job.grace)

    async def run_open(self, start: float, rate: float, until: float) -> None:
        """Offer ``rate`` msg/s from ``start`` to ``until`` (or while ``running``)."""
        order = list(self.clients)
        self.rng.shuffle(order)
        n = len(order)
        k = 0
        await asyncio.sleep(max(0.0, start - _now()))
        self.running = True
        while self.running:
            now = _now()
            if now >= until or self.sent >= self.job.max_messages:
                break
            due = int((now - start) * rate)
            while k < due:
                self.send_one(order[k % n], start + k / rate)
                k += 1
            await asyncio.sleep(0.001)
        self.running = False

    async def drain(self, grace: float) -> None:
        deadline = _now() + grace
        # A bounded poll: completions arrive from many callbacks, none of them owns the end.
        while self.pending and _now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def late(self) -> int:
        """Messages of the window that were not complete at the end of the grace time."""
        if self.closed_loop:
            return sum(1 for r in self.pending.values() if r.t0 < self.w1)
        return sum(1 for r in self.pending.values() if self.w0 <= r.t0 < self.w1)

    def counters(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "send_failed": self.send_failed,
            "completed": self.completed,
            "done_in_window": self.done_in_window,
            "incomplete": self.late(),
            "unexpected": self.unexpected,
            "dup_created": self.dup_created,
            "errors": dict(self.errors),
            "disconnects": self.disconnects,
            "exhausted": self.exhausted,
        }

    def close_all(self) -> None:
        for c in self.clients:
            if c.conn is not None:
                c.conn.close()

    async def wait_closed(self, timeout: float) -> None:
        deadline = _now() + timeout
        while any(c.conn is not None for c in self.clients) and _now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for c in self.clients:
            if c.conn is not None:
                c.conn.abort()


async def _recv(pipe: Connection) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, pipe.recv)


def _wall_to_mono(wall: float) -> float:
    return _now() + (wall - time.time())


async def _run(job: Job, pipe: Connection) -> None:
    gen = Generator(job)
    if job.signed:
        from bench.signed import presign

        presign(gen)
    first = gen.clients[: 2 * job.first_batch] if job.first_batch else gen.clients
    info = await gen.connect_all(first)
    pipe.send(("connected", info))
    cmd = await _recv(pipe)
    if job.mode in ("closed", "open"):
        start = _wall_to_mono(cmd[1])
        cpu0 = time.process_time()
        if job.mode == "closed":
            await gen.run_closed(start)
        else:
            gen.w0, gen.w1 = start + job.warmup, start + job.warmup + job.duration
            await gen.run_open(start, job.rate, gen.w1)
            await gen.drain(job.grace)
        cpu = time.process_time() - cpu0
        wall = _now() - start
        result = gen.counters() | {
            "window": job.duration,
            "lat": gen.lat,
            "ack_lat": gen.ack_lat,
            "loadgen_cpu": cpu / wall if wall > 0 else 0.0,
        }
    elif job.mode == "idle":
        while cmd[0] == "more":
            rest = [c for c in gen.clients if c.conn is None][: cmd[1]]
            pipe.send(("connected", await gen.connect_all(rest)))
            cmd = await _recv(pipe)
        result = gen.counters()
    elif job.mode == "storm":
        result = await _storm(gen, pipe)
    else:
        raise ValueError(job.mode)
    gen.close_all()
    await gen.wait_closed(5.0)
    pipe.send(("result", result))


async def _storm(gen: Generator, pipe: Connection) -> dict[str, Any]:
    """Traffic until the connections go; reconnect all; wait until all caught up.

    The orchestrator either kills and restarts the server (then sends
    ``("restarted", t_kill, t_ready)``) or, for a store that does not survive
    a restart, sends ``("drop",)``: every client drops its TCP connection at
    once and reconnects at once to the same server.
    """
    job = gen.job
    gen.storm = True
    start = _now()
    gen.w0, gen.w1 = start, start + job.storm_traffic_max
    pacer = asyncio.create_task(gen.run_open(start, job.storm_rate, start + job.storm_traffic_max))
    cmd = await _recv(pipe)
    if cmd[0] == "drop":
        gen.running = False
        await pacer
        t_kill = t_ready = _now()
        for c in gen.clients:
            if c.conn is not None:
                c.conn.abort()
    else:
        await pacer
        t_kill = _wall_to_mono(cmd[1])
        t_ready = _wall_to_mono(cmd[2])
    sent_before = gen.sent
    deadline = _now() + job.storm_deadline
    done = False
    while _now() < deadline:
        if _caught_up(gen, t_kill):
            done = True
            break
        await asyncio.sleep(0.02)
    for c in gen.clients:
        c.caught_t = max(c.synced_t, c.pos_t)
    back = [c for c in gen.clients if c.synced_t > t_kill]
    last = max((c.caught_t for c in back), default=t_ready)
    each = sorted(c.caught_t - t_ready for c in back)
    lost = 0
    behind = 0
    for c in gen.clients:
        final = gen.conv_final.get(c.conv, c.base)
        if c.pos < final:
            behind += 1
            lost += final - c.pos - sum(1 for s in c.above if s <= final)
    return gen.counters() | {
        "clients": len(gen.clients),
        "clients_not_back": len(gen.clients) - len(back),
        "all_caught_up": done,
        "caught_up_after_ready": last - t_ready,
        "client_caught_up_p50": each[len(each) // 2] if each else 0.0,
        "client_caught_up_p99": each[int(len(each) * 0.99)] if each else 0.0,
        "caught_up_after_kill": last - t_kill,
        "restart_seconds": t_ready - t_kill,
        "sent_before_kill": sent_before,
        "acked": sum(gen.conv_final.get(c.conv, c.base) - c.base for c in gen.clients) // 2,
        "unacked_at_end": sum(len(c.unacked) for c in gen.clients),
        "lost": lost,
        "clients_behind": behind,
        "not_recovered": gen.not_recovered,
        "reconnect_attempts": gen.reconnect_attempts,
        "not_synced": sum(1 for c in gen.clients if c.synced_t <= t_kill),
    }


def _caught_up(gen: Generator, t_kill: float) -> bool:
    for c in gen.clients:
        if c.conn is None or c.unacked or c.synced_t <= t_kill:
            return False
        if c.pos < gen.conv_final.get(c.conv, 0):
            return False
    return True


def worker_main(job: Job, pipe: Connection) -> None:
    """Entry point of a worker process."""
    if job.cpus:
        os.sched_setaffinity(0, job.cpus)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_run(job, pipe))
