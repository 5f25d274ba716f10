"""Ed25519 verifications off the event loop, batched per loop turn.

Three ways to verify, one contract: on the loop (``threads=0``), on a small
thread pool (`cryptography` and libsodium release the GIL while they
verify), or in a child process (`chat_server.crypto.verifier_process`,
``process=True``: no GIL shared with the loop, the way one process uses a
second core, docs/benchmarks.md, issue #16). The contract of
`SignatureChecks.verify`:

- it returns exactly what its ``check`` returns for the same arguments
  (by default `chat_server.crypto.keys.verify_signature`; the child
  process always uses that one), and never raises for a bad key or
  signature;
- every verification asked for during one turn of the event loop goes out
  as one batch, handed over once per turn: to the child process in chunks
  of at most ``PROCESS_CHUNK``, each answered as soon as the child has
  checked it (so the loop resumes the first senders while the child checks
  the next ones), or split into at most ``threads`` contiguous chunks of at
  least ``MIN_CHUNK`` (a smaller batch is one chunk); the loop never waits
  for a verification: it goes on reading frames meanwhile;
- results come back in the order the verifications were asked for (a batch
  is answered only once every earlier batch is): the coroutines waiting for
  them resume in arrival order, so the per-conversation ``seq`` order still
  follows arrival;
- a batch of fewer than ``MIN_CHUNK`` verifications, while no batch is
  out, is verified inline on the loop (at most about 0.8 ms with libsodium):
  handing a few signatures over costs more CPU than it saves (a batch of
  two to a thread, measured on one core: about +20 % CPU per verification,
  less as batches grow; ``python -m bench.ed25519 --pool``,
  docs/benchmarks.md), and a pool thread must take the GIL back after each
  signature, which it waits for while the loop is busy; a larger batch, or
  any batch while one is out, goes to the threads or the child;
- with ``threads=0`` and no process it verifies inline, on the loop, one at
  a time (for one-core deployments and tests);
- while the child process is not running (starting, or restarting after it
  died: one log line), batches are verified on the loop; a batch the child
  had not answered when it died is verified on the loop too;
- with ``max_wait`` set, it refuses at once (`Backlogged`, nothing verified)
  while the oldest batch out has been waiting for more than ``max_wait``
  seconds: the verifiers are behind the arrivals, and a sender queued
  behind them would pass its send deadline anyway. Refusing early costs
  nothing and lets the backlog drain (the protocol's ``overloaded``).

`close` stops the threads or the child; a verification asked for afterwards
runs inline.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from chat_server.crypto.keys import verify_signature
from chat_server.crypto.verifier_process import VerifierProcess

__all__ = [
    "Backlogged",
    "BatchObserver",
    "Check",
    "SignatureChecks",
    "default_verifier",
    "verify_many",
]

#: Called once per verified chunk with (signatures in it, seconds the thread spent).
BatchObserver = Callable[[int, float], None]
#: One verification: (sig_pub, data, sig) -> valid. Must never raise, and release the GIL.
Check = Callable[[bytes, bytes, bytes], bool]

_Job = tuple[bytes, bytes, bytes]

#: Fewest signatures handed to a thread at once (but a smaller batch still goes whole).
MIN_CHUNK = 8
#: Most signatures the child process is sent at once: it answers each chunk on its own.
PROCESS_CHUNK = 32


class Backlogged(Exception):
    """The threads are more than ``max_wait`` seconds behind: nothing was verified."""


def default_verifier(cpus: int | None = None) -> str:
    """``VERIFIER=auto``: ``process`` when the process may run on more than one CPU, else ``loop``.

    ``cpus`` defaults to the size of the process's CPU affinity set (what
    ``taskset`` or a cpuset allows; a CPU quota, such as a container's
    ``--cpus``, is not seen: set ``VERIFIER=loop`` there). On one CPU a
    thread or a child only adds hand-offs to the same core
    (docs/benchmarks.md, issue #16).
    """
    if cpus is None:
        affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every CPU
        cpus = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return "process" if cpus > 1 else "loop"


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
        process: bool = False,
    ) -> None:
        if threads < 0:
            raise ValueError("threads must be >= 0")
        if process and check is not verify_signature:
            raise ValueError("the verifier process checks with verify_signature only")
        self.threads = 0 if process else threads
        self._proc = VerifierProcess() if process else None
        self._check = check
        self._max_wait = max_wait
        self._observe = observe
        self._pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verify")
            if self.threads
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
        if self._pool is None and self._proc is None and not self._inflight:
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
            if self._proc is not None:
                self._proc.check_stuck()  # else a stuck child would refuse sends forever
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
        pool, proc = self._pool, self._proc
        if proc is not None and not proc.ready:
            proc.ensure_started()  # until it runs (or again), the loop verifies
            proc = None
        # A small batch while the verifiers are idle stays on the loop (see the module).
        if len(jobs) >= MIN_CHUNK or self._inflight:
            if proc is not None:
                self._to_child(proc, jobs, futures)
                return
            if pool is not None:
                self._to_threads(pool, jobs, futures)
                return
        # Here too when closed meanwhile, or while no child process runs (yet).
        self._on_loop(jobs, futures)

    def _on_loop(self, jobs: list[_Job], futures: list[asyncio.Future[bool]]) -> None:
        start = time.perf_counter()
        results: list[bool | None] = [self._check(*job) for job in jobs]
        if self._observe is not None:
            self._observe(len(jobs), time.perf_counter() - start)
        if self._inflight:
            # Earlier batches are still out (the child just died, or a close): these
            # answers wait for theirs, so senders still resume in arrival order.
            answered = _Batch(jobs, futures, 0.0)
            answered.results = results
            self._inflight.append(answered)
            self._answer()
            return
        for fut, ok in zip(futures, results, strict=True):
            if not fut.done():
                fut.set_result(bool(ok))

    def _to_child(
        self, proc: VerifierProcess, jobs: list[_Job], futures: list[asyncio.Future[bool]]
    ) -> None:
        # In chunks, each answered on its own: the loop goes on with the first chunk's
        # senders while the child verifies the next one (a whole turn's batch at once
        # would leave the loop idle while the child checks it all).
        now = asyncio.get_running_loop().time()
        for start in range(0, len(jobs), PROCESS_CHUNK):
            end = start + PROCESS_CHUNK
            part = _Batch(jobs[start:end], futures[start:end], now)
            part.left = 1
            self._inflight.append(part)
            proc.submit(part.jobs).add_done_callback(self._chunk_done(part, 0, len(part.jobs)))

    def _to_threads(
        self, pool: ThreadPoolExecutor, jobs: list[_Job], futures: list[asyncio.Future[bool]]
    ) -> None:
        loop = asyncio.get_running_loop()
        batch = _Batch(jobs, futures, loop.time())
        self._inflight.append(batch)
        # Each handoff to a thread costs CPU: a chunk holds at least MIN_CHUNK signatures.
        parts = max(1, min(self.threads, len(jobs) // MIN_CHUNK))
        size = -(-len(jobs) // parts)
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
                # The pool was shut down, or the child process is gone (VerifierGone):
                # verify here rather than lose the answer.
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
        """Stop the threads (after the running chunks end) or the child process."""
        pool, self._pool = self._pool, None
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.close()  # what it had not answered is verified here (_chunk_done)
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown, True)
