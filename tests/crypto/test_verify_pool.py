"""The verification pool: same answers as the inline check, one batch per loop turn, in order."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from chat_server.crypto.keys import DeviceKeys, verify_signature
from chat_server.crypto.verify_pool import MIN_CHUNK, Backlogged, SignatureChecks


def _jobs(count: int, bad: set[int]) -> list[tuple[bytes, bytes, bytes]]:
    keys = DeviceKeys.generate()
    out = []
    for i in range(count):
        data = f"message {i}".encode()
        sig = keys.sign(data)
        if i in bad:
            sig = sig[:-1] + bytes([sig[-1] ^ 1])
        out.append((keys.public.sig_pub, data, sig))
    return out


@pytest.mark.parametrize("threads", [0, 1, 2, 3])
async def test_same_answers_as_inline_and_a_bad_signature_is_refused_alone(threads: int) -> None:
    jobs = _jobs(30, bad={13})
    jobs.append((b"\x00" * 32, b"x", b"\x00" * 64))  # small-order key: refused
    jobs.append((b"short", b"x", b"\x00" * 64))  # malformed key: refused, no exception
    checks = SignatureChecks(threads)
    try:
        got = await asyncio.gather(*(checks.verify(*j) for j in jobs))
    finally:
        await checks.close()
    assert got == [verify_signature(*j) for j in jobs]
    assert [i for i, ok in enumerate(got) if not ok] == [13, 30, 31]


async def test_one_batch_per_loop_turn_split_over_the_threads() -> None:
    sizes: list[int] = []
    checks = SignatureChecks(2, observe=lambda n, _spent: sizes.append(n))
    try:
        jobs = _jobs(20, bad=set())  # >= 2 * MIN_CHUNK: two chunks
        assert all(await asyncio.gather(*(checks.verify(*j) for j in jobs)))
        # Asked for in one turn: one batch, in two chunks (one per thread).
        assert sorted(sizes) == [10, 10]
        sizes.clear()
        assert await checks.verify(*jobs[0])
        assert sizes == [1]
    finally:
        await checks.close()


async def test_answers_come_back_in_arrival_order_even_if_a_later_chunk_ends_first() -> None:
    first_chunk_may_end = threading.Event()

    def check(pub: bytes, data: bytes, sig: bytes) -> bool:
        if data == b"0":
            # The first chunk waits until the second one has ended (bounded).
            first_chunk_may_end.wait(5)
        elif data == b"15":
            first_chunk_may_end.set()
        return data != b"2"

    checks = SignatureChecks(2, check=check)
    resumed: list[int] = []

    async def one(i: int) -> None:
        ok = await checks.verify(b"k", str(i).encode(), b"s")
        resumed.append(i if ok else -i)

    try:
        # 16 = two chunks of MIN_CHUNK: the second (8-15) ends before the first.
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(16))), 10)
    finally:
        await checks.close()
    assert first_chunk_may_end.is_set()
    assert resumed == [0, 1, -2, *range(3, 16)]


async def test_the_loop_keeps_running_while_the_threads_verify() -> None:
    release = threading.Event()

    def check(pub: bytes, data: bytes, sig: bytes) -> bool:
        release.wait(5)
        return True

    checks = SignatureChecks(1, check=check)
    try:
        # MIN_CHUNK in one turn: a batch for the threads (fewer are verified inline).
        pending = asyncio.ensure_future(
            asyncio.gather(*(checks.verify(b"k", bytes([i]), b"s") for i in range(MIN_CHUNK)))
        )
        ticks = 0
        deadline = time.monotonic() + 5
        while ticks < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
            ticks += 1
        assert ticks == 5
        assert not pending.done()
        release.set()
        assert list(await asyncio.wait_for(pending, 5)) == [True] * MIN_CHUNK
    finally:
        release.set()
        await checks.close()


async def test_after_close_it_verifies_inline() -> None:
    checks = SignatureChecks(2)
    await checks.close()
    job = _jobs(1, bad=set())[0]
    assert await checks.verify(*job)


def test_negative_threads_refused() -> None:
    with pytest.raises(ValueError, match="threads"):
        SignatureChecks(-1)


async def test_a_small_batch_runs_on_the_loop_thread_a_larger_one_on_the_threads() -> None:
    where: list[str] = []

    def check(pub: bytes, data: bytes, sig: bytes) -> bool:
        where.append(threading.current_thread().name)
        return True

    checks = SignatureChecks(2, check=check)
    try:
        assert await checks.verify(b"k", b"d", b"s")
        assert where == [threading.current_thread().name]
        where.clear()
        small = MIN_CHUNK - 1
        assert all(await asyncio.gather(*(checks.verify(b"k", b"d", b"s") for _ in range(small))))
        assert where == [threading.current_thread().name] * small
        where.clear()
        assert all(
            await asyncio.gather(*(checks.verify(b"k", b"d", b"s") for _ in range(MIN_CHUNK)))
        )
        assert all(name.startswith("verify") for name in where)
        assert len(where) == MIN_CHUNK
    finally:
        await checks.close()


async def test_refuses_at_once_while_the_threads_are_behind_then_recovers() -> None:
    release = threading.Event()
    checked: list[bytes] = []

    def check(pub: bytes, data: bytes, sig: bytes) -> bool:
        release.wait(5)
        checked.append(data)
        return True

    checks = SignatureChecks(1, check=check, max_wait=0.05)
    try:
        # A batch of MIN_CHUNK goes to the thread, which holds it.
        first = [bytes([97, i]) for i in range(MIN_CHUNK)]
        pending = asyncio.ensure_future(
            asyncio.gather(*(checks.verify(b"k", d, b"s") for d in first))
        )
        await asyncio.sleep(0)
        # Not yet max_wait behind: new ones are accepted (queued behind it, not refused).
        later = asyncio.ensure_future(
            asyncio.gather(checks.verify(b"k", b"c", b"s"), checks.verify(b"k", b"d", b"s"))
        )
        await asyncio.sleep(0.1)
        with pytest.raises(Backlogged):
            await checks.verify(b"k", b"refused", b"s")
        release.set()
        assert list(await asyncio.wait_for(pending, 5)) == [True] * MIN_CHUNK
        assert list(await asyncio.wait_for(later, 5)) == [True, True]
        # Drained: accepted again; the refused one was never verified.
        assert await checks.verify(b"k", b"e", b"s")
        assert b"refused" not in checked
        assert sorted(checked) == sorted([*first, b"c", b"d", b"e"])
    finally:
        release.set()
        await checks.close()
