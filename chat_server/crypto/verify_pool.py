"""Ed25519 verifications off the event loop: a small thread pool, batched per loop turn.

`cryptography` (and libsodium) release the GIL while they verify, so a few
threads let one server process use more than one core for the one costly
step of ``message.send``. The contract of `SignatureChecks.verify`:

- it returns exactly what its ``check`` returns for the same arguments
  (by default `chat_server.crypto.keys.verify_signature`), and never
  raises for a bad key or signature;
- every verification asked for during one turn of the event loop goes out
  as one batch, split into at most ``threads`` contiguous chunks of at
  least ``MIN_CHUNK`` (a smaller batch is one chunk), so the
  loop hands work over once per turn and never waits for a verification:
  it goes on reading frames while the threads verify;
- results come back in the order the verifications were asked for (a batch
  is answered only once every earlier batch is): the coroutines waiting for
  them resume in arrival order, so the per-conversation ``seq`` order still
  follows arrival;
- a batch of fewer than ``MIN_CHUNK`` verifications, while no batch is
  with the threads, is verified inline on the loop (at most about 0.3 ms
  with libsodium): handing a few signatures to a thread costs more CPU
  than it saves (a batch of two, measured on one core: about +20 % CPU per
  verification, less as batches grow; ``python -m bench.ed25519 --pool``,
  docs/benchmarks.md), and a pool
  thread must take the GIL back after each signature, which it waits for
  while the loop is busy; a larger batch, or any batch while one is with
  the threads, goes to the threads;
- with ``threads=0`` it verifies inline, on the loop, one at a time (the
  behaviour before the pool; for one-core deployments and tests);
- with ``max_wait`` set, it refuses at once (`Backlogged`, nothing verified)
  while the oldest batch with the threads has been waiting for more than
  ``max_wait`` seconds: the threads are behind the arrivals, and a sender
  queued behind them would pass its send deadline anyway. Refusing early
  costs nothing and lets the backlog drain (the protocol's ``overloaded``).

`close` stops the threads; a verification asked for afterwards runs inline.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from chat_server.crypto.keys import verify_signature

__all__ = ["Backlogged", "BatchObserver", "Check", "SignatureChecks", "verify_many"]

#: Called once per verified chunk with (signatures in it, seconds the thread spent).
BatchObserver = Callable[[int, float], None]
#: One verification: (sig_pub, data, sig) -> valid. Must never raise, and release the GIL.
Check = Callable[[bytes, bytes, bytes], bool]

_Job = tuple[bytes, bytes, bytes]

#: Fewest signatures handed to a thread at once (but a smaller batch still goes whole).
MIN_CHUNK = 8


class Backlogged(Exception):
    """The threads are more than ``max_wait`` seconds behind: nothing was verified."""


def verify_many(jobs: Sequence[_Job], check: Check = verify_signature) -> list[bool]:
    """Verify ``(sig_pub, data, sig)`` triples in order (runs on a pool thread)."""
    return [check(pub, data, sig) for pub, data, sig in jobs]


def _timed(jobs: Sequence[_Job], check: Check) -> tuple[list[bool], float]:
    start = time.perf_counter()
    out = verify_many(jobs, check)
    return out, time.perf_counter() - start


class _Batch:
    __slots__ = ("futures", "jobs", "left", "results", "sent_at")

    def __init__(
        self, jobs: list[_Job], futures: list[asyncio.Future[bool]], sent_at: float
    ) -> None:
        self.jobs = jobs
        self.futures = futures
        self.results: list[bool | None] = [None] * len(jobs)
        self.left = 0
        self.sent_at = sent_at


class SignatureChecks:
    """A pool of ``threads`` verifier threads fed one batch per event-loop turn."""

    def __init__(
        self,
        threads: int,
        observe: BatchObserver | None = None,
        *,
        check: Check = verify_signature,
        max_wait: float | None = None,
    ) -> None:
        if threads < 0:
            raise ValueError("threads must be >= 0")
        self.threads = threads
        self._check = check
        self._max_wait = max_wait
        self._observe = observe
        self._pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verify")
            if threads
            else None
        )
        self._jobs: list[_Job] = []
        self._futures: list[asyncio.Future[bool]] = []
        self._scheduled = False
        self._inflight: collections.deque[_Batch] = collections.deque()

    async def verify(self, sig_pub: bytes, data: bytes, sig: bytes) -> bool:
        """Whether ``sig`` is ``sig_pub``'s Ed25519 signature of ``data`` (see the module).

        Raises `Backlogged` (and verifies nothing) while the threads are more
        than ``max_wait`` seconds behind.
        """
        if self._pool is None:
            start = time.perf_counter()
            ok = self._check(sig_pub, data, sig)
            if self._observe is not None:
                self._observe(1, time.perf_counter() - start)
            return ok
        loop = asyncio.get_running_loop()
        if (
            self._max_wait is not None
            and self._inflight
            and loop.time() - self._inflight[0].sent_at > self._max_wait
        ):
            raise Backlogged(f"signature checks are more than {self._max_wait:g} s behind")
        fut: asyncio.Future[bool] = loop.create_future()
        self._jobs.append((sig_pub, data, sig))
        self._futures.append(fut)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        jobs, futures = self._jobs, self._futures
        self._jobs, self._futures = [], []
        if not jobs:
            return
        pool = self._pool
        if pool is None or (len(jobs) < MIN_CHUNK and not self._inflight):
            # Closed meanwhile, or a small batch while the threads are idle: on the loop.
            start = time.perf_counter()
            for job, fut in zip(jobs, futures, strict=True):
                ok = self._check(*job)
                if not fut.done():
                    fut.set_result(ok)
            if self._observe is not None:
                self._observe(len(jobs), time.perf_counter() - start)
            return
        # Each handoff to a thread costs CPU: a chunk holds at least MIN_CHUNK signatures.
        parts = max(1, min(self.threads, len(jobs) // MIN_CHUNK))
        size = -(-len(jobs) // parts)
        loop = asyncio.get_running_loop()
        batch = _Batch(jobs, futures, loop.time())
        self._inflight.append(batch)
        for start in range(0, len(jobs), size):
            batch.left += 1
            chunk = jobs[start : start + size]
            done = loop.run_in_executor(pool, _timed, chunk, self._check)
            done.add_done_callback(self._chunk_done(batch, start, len(chunk)))

    def _chunk_done(
        self, batch: _Batch, start: int, count: int
    ) -> Callable[[asyncio.Future[tuple[list[bool], float]]], None]:
        def done(f: asyncio.Future[tuple[list[bool], float]]) -> None:
            if f.cancelled() or f.exception() is not None:
                # The pool was shut down under us: verify here rather than lose the answer.
                results = verify_many(batch.jobs[start : start + count], self._check)
            else:
                results, spent = f.result()
                if self._observe is not None:
                    self._observe(count, spent)
            batch.results[start : start + count] = results
            batch.left -= 1
            self._answer()

        return done

    def _answer(self) -> None:
        # Batches are answered in the order they were sent, each in its own order.
        while self._inflight and self._inflight[0].left == 0:
            batch = self._inflight.popleft()
            for fut, ok in zip(batch.futures, batch.results, strict=True):
                if not fut.done():  # the sender may have gone (cancelled)
                    fut.set_result(bool(ok))

    async def close(self) -> None:
        """Stop the threads (after the running chunks end)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown, True)
