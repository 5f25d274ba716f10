"""The WebSocket transport: the only module that touches Starlette's WebSocket.

One connection = a read loop (this coroutine) and a bounded queue drained by a
writer task. Everything the connection sends after ``auth.ok`` goes through
the queue, so a slow reader can never make the server's memory grow: when the
queue is full the connection is closed with 1013 and ``slow_consumer``.

Thousands of connections sit idle, so an idle one holds as little as it can:
the queue exists only while it holds something and the writer task only while
it drains it (it ends when the queue is empty; the next item starts another).

A frame that can go at once goes at once: when the queue is empty (no writer)
and the server's socket takes data (``server_protocols.SEND_NOW``), ``deliver``
and ``reply`` write it synchronously, in the same order the writer would, with
no task and no queue. Anything that must wait (a full socket buffer, a resume,
a gap to fill from the store) takes the queue, and so does everything after it
until the queue is empty again.

Close codes: 4001 authentication failed or timed out, the session expired or
was revoked; 4003 origin refused; 1008 repeated abuse or too many connections
of one account; 1009 frame too large; 1013 slow consumer, or the store or the
broker unavailable (try again later); 1011 server error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from chat_server import protocol as p
from chat_server.broker.base import BrokerUnavailable
from chat_server.hub import KIND_MESSAGE, KIND_REVOKE, REVOKE_ERASED, Event
from chat_server.rooms.errors import DomainError
from chat_server.rooms.models import Session, User
from chat_server.rooms.service import message_out
from chat_server.server_protocols import SEND_NOW, SendNow
from chat_server.services import Services
from chat_server.storage.base import StoreError

log = logging.getLogger(__name__)

CLOSE_AUTH = 4001
CLOSE_ORIGIN = 4003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SLOW = 1013
CLOSE_ERROR = 1011
CLOSE_AGAIN = 1013  # try again later: a slow consumer, or a dependency is down

_SYNC = "S"  # queue item kind: resume a conversation
_FRAME = "F"  # queue item kind: a frame for this connection only
_CATCH_UP = "C"  # queue item kind: read what the broker may have dropped


class TokenBucket:
    """Per-connection rate limit: ``rate`` frames per second, bursts of ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Strikes:
    """Refused and malformed frames count one strike each; strikes wear off at one per
    second. Only a sustained excess adds up past the limit (a client sending 10 frames a
    second more than the rate gains 9 strikes a second), never a day of occasional bursts
    with pauses between them."""

    __slots__ = ("count", "stamp")

    def __init__(self, now: float) -> None:
        self.count = 0.0
        self.stamp = now

    def add(self, now: float) -> float:
        """Count one strike at ``now`` (a monotonic clock) and return the total."""
        self.count = max(0.0, self.count - (now - self.stamp)) + 1.0
        self.stamp = now
        return self.count


class Connection:
    """One authenticated WebSocket: its queue, its positions, its writer task."""

    __slots__ = (
        "_expiry",
        "_queue",
        "_ready",
        "_send_now",
        "_writer",
        "counted",
        "erased",
        "id",
        "overflowed",
        "sent",
        "session",
        "svc",
        "syncs",
        "user",
        "ws",
    )

    def __init__(self, ws: WebSocket, svc: Services, user: User, session: Session) -> None:
        self.id = secrets.token_hex(6)
        self.ws = ws
        self.svc = svc
        self.user = user
        self.session = session
        self.sent: dict[str, int] = {}
        self.overflowed = False
        self.syncs: list[tuple[str | None, str, int, bool]] = []
        # Both None while there is nothing to send (see the module docstring).
        self._queue: collections.deque[Event] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._ready = False  # auth.ok is sent and the connection is not shutting down
        # The server's synchronous writer, if it offers one (uvicorn with our protocol).
        self._send_now: SendNow | None = (ws.scope.get("extensions") or {}).get(SEND_NOW)
        self.counted = False  # presence counts this connection
        self.erased = False  # the account is being erased: write no presence on the way out
        # Ends the connection when its session expires, idle or not.
        self._expiry: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            max(0.0, session.expires_at - time.time()), self.end, "session_expired"
        )

    @property
    def user_id(self) -> str:
        return self.user.id

    def deliver(self, event: Event) -> None:
        """Queue an event; on overflow close the connection as a slow consumer.

        A revocation event (``KIND_REVOKE``) naming this session, its device
        or every session of the user closes the connection with 4001 at once.
        """
        if self.overflowed:
            return
        if event.kind == KIND_REVOKE:
            if event.origin == REVOKE_ERASED:
                self.erased = True
                self.end("account_deleted")
            elif event.origin in ("*", self.session.token_hash, "device:" + self.session.device_id):
                self.end("session_revoked")
            return
        queue = self._queue
        if queue is None:
            send = self._send_now
            if self._ready and send is not None and self._write_now(event, send):
                return
            queue = self._queue = collections.deque()
        elif len(queue) >= self.svc.settings.send_queue_size:
            log.warning("slow consumer disconnected", extra={"user_id": self.user.id})
            self.svc.metrics.slow_consumer()
            self._shut(CLOSE_SLOW, "slow_consumer")
            return
        queue.append(event)
        self._wake()

    def _write_now(self, ev: Event, send: SendNow) -> bool:
        """Handle ``ev`` now, as the writer would, if nothing in it has to wait; else
        return False with nothing changed (the caller queues it). Only called while
        the queue is empty, so nothing is overtaken."""
        kind = ev.kind
        if kind == KIND_MESSAGE:
            if self.syncs:
                return False  # a resume is queued or running: the writer decides
            conv = ev.conversation
            sent = self.sent.get(conv)
            if sent is not None:
                if ev.seq <= sent:
                    return True  # already sent (a resume or a fill had it)
                if ev.seq > sent + 1:
                    return False  # a gap: the writer fills it from the store
            if ev.origin != self.id:
                if not send(ev.frame):
                    return False
                self.svc.metrics.frame_out(ev.frame)
            self.sent[conv] = ev.seq
            return True
        if kind in (_SYNC, _CATCH_UP):
            return False
        if not send(ev.frame):
            return False
        self.svc.metrics.frame_out(ev.frame)
        return True

    def end(self, reason: str) -> None:
        """Close with 4001 and ``reason`` (the session expired or was revoked)."""
        self._shut(CLOSE_AUTH, reason)

    def catch_up(self) -> None:
        """Send what the broker may have dropped (it says so after an outage)."""
        self.deliver(Event(_CATCH_UP, "", "", 0, ""))

    def _shut(self, code: int, reason: str) -> None:
        if self.overflowed:
            return
        self.overflowed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        # A writer blocked on a peer that does not read would hold the close behind it.
        if self._writer is not None:
            self._writer.cancel()
        asyncio.get_running_loop().create_task(self._close(code, reason))

    def reply(self, frame: p.ServerFrame) -> None:
        """Queue a frame for this connection only."""
        self.deliver(Event(_FRAME, "", "", 0, p.encode_text(frame)))

    def request_sync(
        self, frame_id: str | None, conversation: str, after: int, *, exact: bool
    ) -> None:
        """Ask the writer to resume ``conversation`` after ``after``.

        With ``exact`` the page starts right after ``after``; otherwise after
        whatever this connection has already sent, so nothing is sent twice.
        """
        self.syncs.append((frame_id, conversation, after, exact))
        self.deliver(Event(_SYNC, "", "", 0, ""))

    def start(self) -> None:
        """``auth.ok`` is sent: write what was queued meanwhile, then everything that comes."""
        self._ready = True
        self._wake()

    async def stop(self) -> None:
        """Write nothing more; wait for the writer to end. Call after the hub's ``detach``."""
        self._ready = False
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        writer = self._writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    def _wake(self) -> None:
        # One writer at a time: a running writer takes whatever is appended to its queue.
        if self._ready and self._writer is None and self._queue:
            self._writer = asyncio.get_running_loop().create_task(
                self._drain(self._queue), name=f"ws-writer-{self.id}"
            )

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    async def _send(self, text: str) -> None:
        self.svc.metrics.frame_out(text)
        await self.ws.send_text(text)

    async def _drain(self, queue: collections.deque[Event]) -> None:
        """Write ``queue`` until it is empty: dedup messages by ``seq``, fill gaps from the store.

        If a send or the store fails, nothing may be skipped: the connection is
        closed (1011 if the socket is still open; the client resumes from its
        last position), this task stays ``_writer`` and nothing more is written.
        """
        try:
            while queue:
                await self._write(queue.popleft())
        except StoreError as exc:
            self.svc.metrics.dependency_error("store", "writer")
            if not self.overflowed:
                log.warning(
                    "connection closed: store unavailable",
                    extra={"user_id": self.user.id, "error": str(exc)},
                )
                self.overflowed = True
                await self._close(CLOSE_AGAIN, "store_unavailable")
            return
        except Exception:
            # Closing on purpose (overflow, expiry) makes the next send fail: not an error.
            if not self.overflowed and self.ws.client_state == WebSocketState.CONNECTED:
                self.overflowed = True
                log.exception("connection writer failed", extra={"user_id": self.user.id})
                await self._close(CLOSE_ERROR, "server_error")
            self.overflowed = True
            return
        # No await since the queue was found empty, so nothing was appended in between.
        self._queue = None
        self._writer = None

    async def _write(self, ev: Event) -> None:
        if ev.kind == _SYNC:
            while self.syncs:
                fid, conv, after, exact = self.syncs.pop(0)
                if not exact:
                    after = max(after, self.sent.get(conv, after))
                await self._sync(fid, conv, after)
        elif ev.kind == KIND_MESSAGE:
            await self._message(ev)
        elif ev.kind == _CATCH_UP:
            await self._catch_up()
        else:
            await self._send(ev.frame)

    async def _catch_up(self) -> None:
        convs = await self.svc.messages.conversations_for(self.user.id)
        for conv in convs:
            sent = self.sent.get(conv.id, 0)
            if conv.last_seq > sent and not self._sync_pending(conv.id):
                await self._fill(conv.id, sent, conv.last_seq)
        # Presence changes published meanwhile were lost too: say where each peer is now.
        peers = sorted({m for c in convs for m in c.members if m != self.user.id})
        now = time.time()
        for peer, pres in (await self.svc.presence.presence(peers, now)).items():
            seen = None if pres.online else pres.last_seen
            await self._send(p.encode_text(p.PresenceFrame(peer, pres.online, seen)))

    def _sync_pending(self, conv: str) -> bool:
        return any(s[1] == conv for s in self.syncs)

    async def _message(self, ev: Event) -> None:
        if self.syncs and self._sync_pending(ev.conversation):
            # A resume of this conversation is queued: it reads this message from the
            # store, so sending it (or filling a gap) now would make a second sync.
            return
        sent = self.sent.get(ev.conversation)
        if sent is not None and ev.seq <= sent:
            return
        if sent is not None and ev.seq > sent + 1:
            # The broker dropped something (or we raced a resume): fill from the store.
            await self._fill(ev.conversation, sent, ev.seq)
            return
        self.sent[ev.conversation] = ev.seq
        if ev.origin != self.id:
            await self._send(ev.frame)

    async def _fill(self, conv: str, after: int, upto: int) -> None:
        limit = self.svc.settings.resume_max_messages
        if upto - after > limit:
            await self._sync(None, conv, after)
            return
        # If the store fails, the writer fails: the connection closes (1011) and the
        # client resumes, rather than miss this message until the next one.
        page = await self.svc.messages.messages_after(conv, after, upto - after)
        for m in page:
            await self._send(p.encode_text(p.MessageCreated(message_out(m))))
            self.sent[conv] = m.seq

    async def _sync(self, frame_id: str | None, conv: str, after: int) -> None:
        svc = self.svc
        try:
            recovered, page, latest = await svc.conversations.resume(
                self.user, conv, after, svc.settings.resume_max_messages
            )
        except DomainError as exc:
            await self._send(p.encode_text(p.ErrorFrame(exc.code, exc.message, frame_id)))
            return
        svc.metrics.resume(recovered)
        self.sent[conv] = max(latest, self.sent.get(conv, 0)) if recovered else latest
        frame = p.Sync(
            conversation=conv,
            recovered=recovered,
            messages=[message_out(m) for m in page],
            seq=latest,
            id=frame_id,
        )
        await self._send(p.encode_text(frame))


def _origin_ok(ws: WebSocket, svc: Services) -> bool:
    # Not ws.headers: that one stays cached on the WebSocket for the connection's life.
    origin = Headers(raw=list(ws.scope["headers"])).get("origin")
    # Non-browser clients (SDK, CLI) send no Origin; browsers always do.
    return origin is None or origin.rstrip("/") in svc.settings.origins()


def _payload(msg: Message, max_bytes: int) -> str | bytes | None:
    """The data of a received ASGI message; None if it is over ``max_bytes``."""
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    data: str | bytes | None = msg.get("text")
    if data is None:
        data = msg.get("bytes")
    if data is not None and len(data) > max_bytes:
        return None
    return data


async def _authenticate(ws: WebSocket, svc: Services) -> tuple[User, Session, p.Auth] | None:
    """Accept, then read and check the ``auth`` frame; None once the socket is closed."""
    settings = svc.settings
    if not _origin_ok(ws, svc):
        # Accept first so the client gets the documented close code, not a bare HTTP 403;
        # nothing is read from this connection.
        await ws.accept()
        await ws.close(CLOSE_ORIGIN, "origin_not_allowed")
        return None
    await ws.accept()
    try:
        # Not wait_for: it wraps the receive in a task of its own.
        async with asyncio.timeout(settings.auth_timeout_seconds):
            first = _payload(await ws.receive(), settings.max_frame_bytes)
    except TimeoutError:
        await ws.close(CLOSE_AUTH, "auth_timeout")
        return None
    except WebSocketDisconnect:
        return None
    if first is None:
        await ws.close(CLOSE_TOO_BIG, "frame_too_large")
        return None
    try:
        frame = p.parse_client_frame(first)
        if not isinstance(frame, p.Auth):
            raise p.ProtocolError("auth_required", "the first frame must be 'auth'")
        user, session = await svc.accounts.authenticate(frame.token)
    except (p.ProtocolError, DomainError) as exc:
        code = exc.code
        await ws.send_text(p.encode_text(p.ErrorFrame(code, exc.message)))
        await ws.close(CLOSE_AUTH, code)
        return None
    except StoreError as exc:
        svc.metrics.dependency_error("store", "auth")
        log.warning("connection refused: store unavailable", extra={"error": str(exc)})
        message = "the store is unavailable; reconnect later"
        await ws.send_text(p.encode_text(p.ErrorFrame("store_unavailable", message)))
        await ws.close(CLOSE_AGAIN, "store_unavailable")
        return None
    return user, session, frame


async def serve(ws: WebSocket, svc: Services) -> None:
    """Run one WebSocket connection from accept to close."""
    # This frame and the read loop's live as long as the connection, and so does every
    # local here: the handshake and the welcome are calls of their own (what they hold
    # goes when they return), and what is only needed until auth.ok is deleted.
    authed = await _authenticate(ws, svc)
    if authed is None:
        return
    user, session, auth = authed
    del authed
    if svc.hub.local_count(user.id) >= svc.settings.max_connections_per_user:
        limit = svc.settings.max_connections_per_user
        message = f"this account already has {limit} connections to this server"
        await ws.send_text(p.encode_text(p.ErrorFrame("too_many_connections", message)))
        await ws.close(CLOSE_POLICY, "too_many_connections")
        return
    conn = Connection(ws, svc, user, session)
    counted = False
    try:
        # Subscribe first, then read the store: nothing published in between is missed.
        await svc.hub.attach(conn)
        svc.metrics.connection_opened(svc.hub.user_count())
        counted = True
        await _welcome(conn, auth)
        del auth
        await _read_loop(conn)
    except WebSocketDisconnect:
        pass
    except (StoreError, BrokerUnavailable) as exc:
        what = "store" if isinstance(exc, StoreError) else "broker"
        svc.metrics.dependency_error(what, "connection")
        log.warning(
            f"connection closed: {what} unavailable", extra={"user_id": user.id, "error": str(exc)}
        )
        with contextlib.suppress(Exception):
            await conn.ws.close(CLOSE_AGAIN, f"{what}_unavailable")
    except Exception:
        log.exception("connection failed", extra={"user_id": user.id})
        with contextlib.suppress(Exception):
            await conn.ws.close(CLOSE_ERROR, "server_error")
    finally:
        # Each step on its own: an outage (broker, store) must not skip the others,
        # or presence would count this connection forever.
        with contextlib.suppress(Exception):
            await svc.hub.detach(conn)
        if counted:
            svc.metrics.connection_closed(svc.hub.user_count())
        await conn.stop()
        # Only a connection that presence counted is uncounted (a welcome can fail first).
        with contextlib.suppress(Exception):
            if conn.counted and not conn.erased:
                await _gone(conn)


async def _gone(conn: Connection) -> None:
    """Uncount the connection; tell the peers if it was the user's last one."""
    svc = conn.svc
    user = conn.user
    now = time.time()
    await svc.presence.connected(user.id, svc.process_id, -1, now)
    pres = await svc.presence.presence([user.id], now)
    if not pres[user.id].online:
        # The same last_seen as the store's, so the list and the event agree.
        await svc.conversations.presence_changed(user.id, False, last_seen=now)


async def _welcome(conn: Connection, auth: p.Auth) -> None:
    """Count the connection as present, send ``auth.ok``, start the writer.

    If the user was not online before this connection, their peers are told.
    """
    svc = conn.svc
    user = conn.user
    now = time.time()
    # Only a first connection is news to the peers (a race can repeat it, not lose it).
    was_online = (await svc.presence.presence([user.id], now))[user.id].online
    await svc.presence.connected(user.id, svc.process_id, +1, now)
    conn.counted = True
    summaries = await svc.conversations.summaries(user)
    for s in summaries:
        conn.sent[s["id"]] = s["last_seq"]
    for conv, after in auth.resume.items():
        conn.sent[conv] = after
        conn.request_sync(None, conv, after, exact=False)
    # auth.ok goes first, before anything the queue collected since attach.
    await conn.ws.send_text(
        p.encode_text(
            p.AuthOk(
                user=user.public(),
                device=conn.session.device_id,
                conversations=summaries,
                id=auth.id,
            )
        )
    )
    svc.metrics.frame_out('{"type":"auth.ok"}')
    conn.start()
    if not was_online:
        peers = [s["peer"]["id"] for s in summaries]
        await svc.conversations.presence_changed(user.id, True, peers=peers)


async def _read_loop(conn: Connection) -> None:
    svc = conn.svc
    settings = svc.settings
    metrics = svc.metrics
    bucket = TokenBucket(settings.rate_per_second, settings.rate_burst)
    loop = asyncio.get_running_loop()
    strikes = Strikes(loop.time())
    while True:
        if conn.ws.client_state != WebSocketState.CONNECTED or conn.overflowed:
            return
        data = _payload(await conn.ws.receive(), settings.max_frame_bytes)
        if data is None:
            await conn.ws.close(CLOSE_TOO_BIG, "frame_too_large")
            return
        if conn.overflowed:
            return  # closing (expired, revoked, slow): nothing more is answered
        if not bucket.take():
            count = strikes.add(loop.time())
            # With the frame's id, so the client retries now instead of waiting for a reply.
            conn.reply(
                p.ErrorFrame("rate_limited", "too many frames; slow down", p.frame_id_of(data))
            )
            if count > settings.rate_burst:
                await conn.ws.close(CLOSE_POLICY, "rate_limit_abuse")
                return
            continue
        frame: Any = None
        try:
            frame = p.parse_client_frame(data)
            metrics.frame_in(frame)
            await _handle(conn, frame)
        except p.ProtocolError as exc:
            if frame is None:
                metrics.frame_in(None)
            conn.reply(p.ErrorFrame(exc.code, exc.message, exc.frame_id))
            if strikes.add(loop.time()) > settings.rate_burst:
                await conn.ws.close(CLOSE_POLICY, "too_many_bad_frames")
                return
        except DomainError as exc:
            conn.reply(p.ErrorFrame(exc.code, exc.message, getattr(frame, "id", None)))
        except StoreError:
            metrics.dependency_error("store", "send")
            message = "the store is unavailable; nothing was done; retry"
            conn.reply(p.ErrorFrame("store_unavailable", message, getattr(frame, "id", None)))


async def _handle(conn: Connection, frame: Any) -> None:
    svc = conn.svc
    convs = svc.conversations
    match frame:
        case p.MessageSend():
            start = time.perf_counter()
            stored, created = await convs.send(
                conn.user, conn.session.device_id, frame, origin=conn.id
            )
            conn.reply(
                p.Ack(
                    id=frame.id,
                    conversation=stored.conversation_id,
                    client_id=stored.client_id,
                    seq=stored.seq,
                    created_at=stored.created_at,
                    duplicate=not created,
                )
            )
            if created:
                svc.metrics.stored(time.perf_counter() - start)
            else:
                svc.metrics.acked(time.perf_counter() - start)
        case p.ReadMark():
            await convs.mark_read(conn.user, frame.conversation, frame.seq)
        case p.TypingSet():
            await convs.set_typing(conn.user, frame.conversation, frame.typing)
        case p.HistoryGet():
            page, more = await convs.history(
                conn.user, frame.conversation, frame.before, frame.after, frame.limit
            )
            conn.reply(
                p.History(
                    id=frame.id,
                    conversation=frame.conversation,
                    messages=[message_out(m) for m in page],
                    has_more=more,
                )
            )
        case p.ConversationSync():
            await convs.member_conversation(conn.user.id, frame.conversation)
            conn.request_sync(frame.id, frame.conversation, frame.after, exact=True)
        case p.Ping():
            conn.reply(p.Pong(id=frame.id))
        case p.Auth():
            raise p.ProtocolError(
                "already_authenticated", "this connection is authenticated", frame.id
            )
