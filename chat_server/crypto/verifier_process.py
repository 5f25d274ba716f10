"""Ed25519 verifications in a child process, fed batches through a pipe.

A pool thread must take the GIL back after every signature, and gets it
only when the event loop lets go of it: in one busy process the second core
adds little (docs/benchmarks.md, issue #16). A child process has its own
interpreter: the loop writes a batch to the child's stdin and goes on; the
child verifies it with `chat_server.crypto.keys.verify_signature` (the same
function, so the same accept set) and writes the results back.

The pipe carries no pickle, only bytes (little-endian):

- a batch: ``u32 count``, then per signature ``u32 len(data) u32 len(sig_pub)
  u32 len(sig)`` followed by ``sig_pub``, ``sig`` and ``data``;
- its answer: ``f64 seconds spent``, ``u32 count``, then one byte per
  signature (1 valid, 0 not), in the batch's order.

The contract of `VerifierProcess`:

- `submit` returns a future of ``(results, seconds)`` for one batch and
  never raises; the child answers batches in the order they were written;
- if the child exits, cannot be started, answers something malformed, or
  leaves its oldest batch unanswered for ``stuck_after`` seconds (it is
  then killed), every batch not answered yet fails with `VerifierGone` (the
  caller verifies it itself), one log line says so, and `ready` is False
  until a later start succeeds: `ensure_started` waits ``retry_after``
  seconds after a failure, doubled at each failure in a row up to
  ``max_retry``;
- the child runs ``python -P -m chat_server.crypto.verifier_process`` with
  the parent's import path and nothing else of its environment (no
  secret), exits when its stdin closes (`close`, or the parent's death),
  ignores SIGINT (the server decides when it stops), and keeps the answer
  pipe on a descriptor of its own (descriptor 1 goes to stderr).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from chat_server.crypto.keys import verify_signature

log = logging.getLogger(__name__)

__all__ = ["VerifierGone", "VerifierProcess", "decode_batch", "encode_batch", "serve"]

_Job = tuple[bytes, bytes, bytes]
_COUNT = struct.Struct("<I")
_LENGTHS = struct.Struct("<III")
_ANSWER = struct.Struct("<dI")
#: Longest a batch may be (signatures): a turn's batch is far smaller.
MAX_BATCH = 1 << 20


class VerifierGone(Exception):
    """The child process ended or misbehaved before answering this batch."""


def encode_batch(jobs: Sequence[_Job]) -> bytes:
    """The bytes of one batch of ``(sig_pub, data, sig)`` (see the module)."""
    parts = [_COUNT.pack(len(jobs))]
    for pub, data, sig in jobs:
        parts += (_LENGTHS.pack(len(data), len(pub), len(sig)), pub, sig, data)
    return b"".join(parts)


def _read_exact(inp: BinaryIO, n: int) -> bytes | None:
    data = inp.read(n)
    if data is None or len(data) < n:
        return None
    return data


def decode_batch(inp: BinaryIO) -> list[_Job] | None:
    """Read one batch from ``inp``; None at the end of the input."""
    head = _read_exact(inp, _COUNT.size)
    if head is None:
        return None
    (count,) = _COUNT.unpack(head)
    if count > MAX_BATCH:
        raise ValueError(f"batch of {count} signatures")
    jobs: list[_Job] = []
    for _ in range(count):
        lengths = _read_exact(inp, _LENGTHS.size)
        if lengths is None:
            return None
        ldata, lpub, lsig = _LENGTHS.unpack(lengths)
        body = _read_exact(inp, lpub + lsig + ldata)
        if body is None:
            return None
        jobs.append((body[:lpub], body[lpub + lsig :], body[lpub : lpub + lsig]))
    return jobs


def serve(
    inp: BinaryIO, out: BinaryIO, check: Callable[[bytes, bytes, bytes], bool] = verify_signature
) -> None:
    """The child's loop: answer every batch read from ``inp`` until it ends."""
    while (jobs := decode_batch(inp)) is not None:
        start = time.perf_counter()
        results = bytes(1 if check(pub, data, sig) else 0 for pub, data, sig in jobs)
        out.write(_ANSWER.pack(time.perf_counter() - start, len(jobs)) + results)
        out.flush()


class VerifierProcess:
    """One child process (``python -m chat_server.crypto.verifier_process``)."""

    def __init__(
        self, retry_after: float = 1.0, stuck_after: float = 5.0, max_retry: float = 60.0
    ) -> None:
        self._retry_after = retry_after
        self._max_retry = max_retry
        self._stuck_after = stuck_after
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        # (count, future, sent at) of each batch written and not answered yet, in order.
        self._pending: collections.deque[
            tuple[int, asyncio.Future[tuple[list[bool], float]], float]
        ] = collections.deque()
        self._failed_at = -1e9
        self._failures = 0
        self._closed = False

    @property
    def ready(self) -> bool:
        """Whether batches can be submitted (the child runs)."""
        return self._proc is not None and self._reader is not None and not self._closed

    def ensure_started(self) -> None:
        """Start the child in the background unless it runs or starts, or failed recently.

        After a failure the next start waits ``retry_after`` seconds, doubled at
        each failure in a row up to ``max_retry`` (a child that dies at once is
        not restarted in a tight loop); an answered batch resets it.
        """
        if self.ready or self._closed or self._starting is not None:
            return
        loop = asyncio.get_running_loop()
        wait = min(self._max_retry, self._retry_after * 2 ** max(0, self._failures - 1))
        if loop.time() - self._failed_at < wait:
            return
        self._starting = loop.create_task(self.start())

    async def start(self) -> None:
        """Start the child (a failure is logged; `ready` stays False)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",  # the parent's import path only (below), not the working directory
                "-m",
                "chat_server.crypto.verifier_process",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                # No secret of the server's environment: the child needs only the code.
                env={"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            )
        except Exception as exc:
            self._failed(None)
            log.warning(
                "signature verifier process could not start; verifying on the event loop",
                extra={"error": repr(exc)},
            )
            return
        finally:
            self._starting = None
        if self._closed:
            await self._stop(proc)
            return
        self._proc = proc
        self._reader = asyncio.get_running_loop().create_task(self._read(proc))

    def submit(self, jobs: Sequence[_Job]) -> asyncio.Future[tuple[list[bool], float]]:
        """Send one batch; its future gives ``(results, seconds)`` or fails `VerifierGone`.

        Never raises: a child that is gone, stuck (its oldest batch unanswered
        for ``stuck_after`` seconds: it is killed) or whose pipe is closed fails
        the future (and every batch it had not answered).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[list[bool], float]] = loop.create_future()
        proc = self._proc
        if not self.ready or proc is None or proc.stdin is None:
            fut.set_exception(VerifierGone("no verifier process"))
            return fut
        now = loop.time()
        if self.check_stuck():
            fut.set_exception(VerifierGone("stuck"))
            return fut
        self._pending.append((len(jobs), fut, now))
        try:
            if proc.stdin.is_closing():
                raise ConnectionResetError("the pipe to the child is closed")
            proc.stdin.write(encode_batch(jobs))
        except (RuntimeError, OSError) as exc:  # uvloop raises on a closed pipe
            self._gone(proc, f"exited ({exc.__class__.__name__} on its pipe)")
        return fut

    def check_stuck(self) -> bool:
        """Kill the child if its oldest batch waits for more than ``stuck_after`` seconds.

        True if it did (the batches it had not answered fail with `VerifierGone`).
        """
        proc = self._proc
        if proc is None or not self._pending:
            return False
        if asyncio.get_running_loop().time() - self._pending[0][2] <= self._stuck_after:
            return False
        self._gone(proc, f"did not answer for {self._stuck_after:g} s")
        return True

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        out = proc.stdout
        why = "exited"
        try:
            while out is not None:
                seconds, count = _ANSWER.unpack(await out.readexactly(_ANSWER.size))
                results = await out.readexactly(count)
                if not self._pending or self._pending[0][0] != count:
                    why = "answered out of turn"
                    break
                _, fut, _sent = self._pending.popleft()
                self._failures = 0
                if not fut.done():
                    fut.set_result(([b == 1 for b in results], seconds))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self._gone(proc, why)

    def _failed(self, proc: asyncio.subprocess.Process | None) -> None:
        if proc is None or self._proc is proc:
            self._proc = None
            self._reader = None
        self._failures += 1
        self._failed_at = asyncio.get_running_loop().time()

    def _gone(self, proc: asyncio.subprocess.Process, why: str) -> None:
        """The child ``proc`` ended or misbehaves: fail what it had not answered, once."""
        if self._proc is not proc and not self._closed:
            return  # already handled (a failed write, then the reader's end of file)
        pending, self._pending = self._pending, collections.deque()
        for _, fut, _sent in pending:
            if not fut.done():
                fut.set_exception(VerifierGone(why))
        if self._closed:
            return
        self._failed(proc)
        if proc.returncode is None and not why.startswith("exited"):
            # Alive but misbehaving. (Killing one that exited would reap it under the
            # child watcher: Popen.send_signal polls first.)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        log.warning(
            "signature verifier process %s; batches it had not answered, verified on the "
            "event loop: %d; restarting it",
            why,
            len(pending),
            extra={"returncode": proc.returncode},
        )

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 2)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def close(self) -> None:
        """Stop the child (batches not answered fail with `VerifierGone`)."""
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        proc, reader = self._proc, self._reader
        self._proc = self._reader = None
        if proc is not None:
            await self._stop(proc)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for _, fut, _sent in self._pending:
            if not fut.done():
                fut.set_exception(VerifierGone("closed"))
        self._pending.clear()


def main() -> None:
    """The child's entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The pipe carries answers only: keep it on its own descriptor and point
    # descriptor 1 (and sys.stdout) at stderr, whatever else prints, C code included.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with contextlib.suppress(BrokenPipeError):
        serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
