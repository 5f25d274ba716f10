"""`chat_server.deadlines`: one timer for many deadlines, with ``asyncio.timeout``'s semantics."""

from __future__ import annotations

import asyncio

import pytest

from chat_server.deadlines import Deadlines

TICK = 0.02


async def test_a_passed_deadline_raises_timeout_error_within_a_tick() -> None:
    deadlines = Deadlines(tick=TICK)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TimeoutError), deadlines.scope(start + 0.05) as scope:
        await asyncio.sleep(5)
    elapsed = loop.time() - start
    assert scope.expired
    assert 0.05 <= elapsed < 0.05 + 10 * TICK  # never early; late by about a tick at most
    assert not deadlines._scopes


async def test_a_block_that_ends_in_time_is_not_cancelled_and_leaves_nothing() -> None:
    deadlines = Deadlines(tick=TICK)
    loop = asyncio.get_running_loop()
    with deadlines.scope(loop.time() + 1) as scope:
        await asyncio.sleep(0)
    assert not scope.expired
    assert not deadlines._scopes
    await asyncio.sleep(3 * TICK)
    assert deadlines._timer is None  # no block left: the timer stopped


async def test_none_suspends_then_timeout_error() -> None:
    deadlines = Deadlines(tick=TICK)
    loop = asyncio.get_running_loop()
    seen: list[bool] = []

    async def body() -> None:
        with deadlines.scope(loop.time() + 0.01) as scope:
            scope.deadline = None
            await asyncio.sleep(0.1)  # past the first deadline: not cancelled
            seen.append(scope.expired)
            scope.deadline = loop.time() + 0.03
            await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await body()
    assert seen == [False]


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    deadlines = Deadlines(tick=TICK)
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()

    async def body() -> None:
        with deadlines.scope(loop.time() + 5):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._scopes


async def test_many_blocks_each_get_their_own_outcome() -> None:
    deadlines = Deadlines(tick=TICK)
    loop = asyncio.get_running_loop()

    async def one(i: int) -> str:
        try:
            with deadlines.scope(loop.time() + (0.03 if i % 2 else 5)):
                await asyncio.sleep(0.001 if i % 3 == 0 else 0.2)
        except TimeoutError:
            return "timeout"
        return "done"

    outcomes = await asyncio.gather(*(one(i) for i in range(30)))
    for i, outcome in enumerate(outcomes):
        if i % 3 == 0:
            assert outcome == "done", i
        else:
            assert outcome == ("timeout" if i % 2 else "done"), i
    assert not deadlines._scopes


def test_a_scope_needs_a_task() -> None:
    deadlines = Deadlines(tick=TICK)
    with pytest.raises(RuntimeError):
        deadlines.scope(None).__enter__()


def test_tick_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tick"):
        Deadlines(tick=0)
