"""``ConversationService.send`` under one deadline: which error each failure gives.

A read that does not answer within the deadline is ``store_unavailable``
(nothing stored); an append that is not confirmed in time is
``store_outcome_unknown`` (resend with the same ``client_id``); a failed
append is ``store_unavailable``; a reused nonce is ``nonce_reused``; a read
that fails raises the store's own error (the transport answers it). The
store is the real memory store; only the one call under test is made to
hang or fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chat_server import protocol as p
from chat_server.rooms.errors import DomainError
from chat_server.rooms.service import ConversationService, NoVerification
from chat_server.services import Services, build_services
from chat_server.settings import Settings
from chat_server.storage.base import NonceReused, StoreUnavailable
from tests.helpers import fast_world

DEADLINE = 0.2


class Faulty:
    """The real store, except ``method``, which hangs (``fault`` None) or raises ``fault``."""

    def __init__(self, real: Any, method: str, fault: Exception | None) -> None:
        self._real = real
        self._method = method
        self._fault = fault
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name != self._method:
            return attr

        async def faulty(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self._fault is not None:
                raise self._fault
            await asyncio.sleep(DEADLINE * 20)  # beyond the deadline (cancelled by it)
            return await attr(*args, **kwargs)

        return faulty


@pytest.fixture
async def svc() -> AsyncIterator[Services]:
    services = await build_services(Settings(store="memory", retention_job="off"))
    try:
        yield services
    finally:
        await services.close()


async def _send(svc: Services, method: str, fault: Exception | None) -> tuple[Any, Faulty, str]:
    world = await fast_world(svc)
    store = Faulty(svc.messages, method, fault)
    convs = ConversationService(
        store,
        svc.accounts_store,
        svc.presence,
        svc.hub,
        time.time,
        NoVerification(),
        svc.settings.max_body_bytes,
        DEADLINE,
    )
    conv = world.conv["b1"]
    frame = p.MessageSend(id="f1", conversation=conv, client_id="m1", msg_type="text", body=b"x")
    start = time.monotonic()
    try:
        outcome: Any = await convs.send(world.b1.user, world.b1.device_id, frame, origin="t")
    except Exception as exc:
        outcome = exc
    assert time.monotonic() - start < DEADLINE * 10
    return outcome, store, conv


@pytest.mark.parametrize(
    ("method", "fault", "code"),
    [
        ("get_conversation", None, "store_unavailable"),
        ("append", None, "store_outcome_unknown"),
        ("append", StoreUnavailable("down"), "store_unavailable"),
        ("append", NonceReused("nonce"), "nonce_reused"),
    ],
)
async def test_each_failure_gets_its_code(
    svc: Services, method: str, fault: Exception | None, code: str
) -> None:
    outcome, store, conv = await _send(svc, method, fault)
    assert store.calls == 1
    assert isinstance(outcome, DomainError)
    assert outcome.code == code
    assert outcome.status == (422 if code == "nonce_reused" else 503)
    assert await svc.messages.messages_after(conv, 0, 10) == []


async def test_a_failed_read_raises_the_stores_error(svc: Services) -> None:
    outcome, store, conv = await _send(svc, "get_conversation", StoreUnavailable("down"))
    assert store.calls == 1
    assert isinstance(outcome, StoreUnavailable)
    assert await svc.messages.messages_after(conv, 0, 10) == []


async def test_no_fault_stores_and_acks(svc: Services) -> None:
    outcome, store, conv = await _send(svc, "messages_by_meta", None)
    assert store.calls == 0
    stored, created = outcome
    assert created
    assert stored.seq == 1
    assert [m.client_id for m in await svc.messages.messages_after(conv, 0, 10)] == ["m1"]
