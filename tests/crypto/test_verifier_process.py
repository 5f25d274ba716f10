"""The verifier child process: the inline check's answers, in order; it survives its death."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
import uvloop

from chat_server.crypto.keys import DeviceKeys, verify_signature
from chat_server.crypto.verifier_process import VerifierProcess, decode_batch, encode_batch, serve
from chat_server.crypto.verify_pool import MIN_CHUNK, PROCESS_CHUNK, Backlogged, SignatureChecks

Job = tuple[bytes, bytes, bytes]


def _jobs(count: int, bad: set[int]) -> list[Job]:
    keys = DeviceKeys.generate()
    out = []
    for i in range(count):
        data = f"message {i}".encode() * (i % 7)  # empty data included
        sig = keys.sign(data)
        if i in bad:
            sig = sig[:-1] + bytes([sig[-1] ^ 1])
        out.append((keys.public.sig_pub, data, sig))
    out.append((b"\x00" * 32, b"x", b"\x00" * 64))  # small-order key: refused
    out.append((b"short", b"x", b"\x00" * 70))  # malformed key and signature: refused
    return out


def _child(checks: SignatureChecks) -> VerifierProcess:
    proc = checks._proc
    assert proc is not None
    return proc


async def _ready(proc: VerifierProcess) -> int:
    """Wait until the child runs; its pid."""
    for _ in range(400):
        proc.ensure_started()
        if proc.ready and proc._proc is not None:
            return proc._proc.pid
        await asyncio.sleep(0.025)
    raise AssertionError("the verifier process did not start within 10 s")


def _chunks(n: int) -> list[int]:
    return [min(PROCESS_CHUNK, n - i) for i in range(0, n, PROCESS_CHUNK)]


def _count_submits(proc: VerifierProcess) -> list[int]:
    sizes: list[int] = []
    real = proc.submit

    def submit(jobs: Sequence[Job]) -> asyncio.Future[tuple[list[bool], float]]:
        sizes.append(len(jobs))
        return real(jobs)

    proc.submit = submit  # type: ignore[method-assign]
    return sizes


def test_a_batch_reads_back_as_written() -> None:
    jobs = _jobs(20, bad=set())
    buf = io.BytesIO(encode_batch(jobs) + encode_batch([]) + encode_batch(jobs[:3]))
    assert decode_batch(buf) == jobs
    assert decode_batch(buf) == []
    assert decode_batch(buf) == jobs[:3]
    assert decode_batch(buf) is None  # the end of the input
    assert decode_batch(io.BytesIO(encode_batch(jobs)[:-1])) is None  # cut short


def test_serve_answers_each_batch_in_order() -> None:
    jobs = _jobs(12, bad={4})
    out = io.BytesIO()
    serve(io.BytesIO(encode_batch(jobs) + encode_batch(jobs[:5])), out)
    raw = out.getvalue()
    first = raw[12 : 12 + len(jobs)]
    second = raw[12 + len(jobs) + 12 :]
    assert [b == 1 for b in first] == [verify_signature(*j) for j in jobs]
    assert [b == 1 for b in second] == [verify_signature(*j) for j in jobs[:5]]
    assert first.count(0) == 3  # the bad one, the small-order key, the malformed one


async def test_same_answers_as_inline_through_the_child() -> None:
    checks = SignatureChecks(0, process=True)
    proc = _child(checks)
    try:
        await _ready(proc)
        sizes = _count_submits(proc)
        jobs = _jobs(60, bad={13, 40})
        got = await asyncio.gather(*(checks.verify(*j) for j in jobs))
        # Then two batches at once: the second is answered after the first.
        more = _jobs(30, bad={2})
        first = asyncio.gather(*(checks.verify(*j) for j in more))
        await asyncio.sleep(0)
        second = asyncio.gather(*(checks.verify(*j) for j in jobs[:MIN_CHUNK]))
        got_more, got_second = await first, await second
    finally:
        await checks.close()
    assert got == [verify_signature(*j) for j in jobs]
    assert [i for i, ok in enumerate(got) if not ok] == [13, 40, 60, 61]
    assert got_more == [verify_signature(*j) for j in more]
    assert got_second == got[:MIN_CHUNK]
    # Each turn's batch goes to the child in chunks of at most PROCESS_CHUNK, in order.
    assert sizes == [
        *_chunks(len(jobs)),
        *_chunks(len(more)),
        *_chunks(MIN_CHUNK),
    ]


async def test_before_the_child_runs_the_loop_verifies() -> None:
    checks = SignatureChecks(0, process=True)
    jobs = _jobs(20, bad={3})
    try:
        got = await asyncio.gather(*(checks.verify(*j) for j in jobs))
    finally:
        await checks.close()
    assert got == [verify_signature(*j) for j in jobs]


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _on(loop: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``scenario`` on asyncio's loop or on uvloop (the server's, in production)."""
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario())


def _arrived(order: list[int], i: int, _task: object) -> None:
    order.append(i)


def _in_order(checks: SignatureChecks, jobs: list[Job], order: list[int]) -> list[Awaitable[bool]]:
    """Ask for each job's check; ``order`` gets each index as its answer arrives."""
    out: list[Awaitable[bool]] = []
    for i, job in enumerate(jobs):
        task = asyncio.ensure_future(checks.verify(*job))
        task.add_done_callback(functools.partial(_arrived, order, i))
        out.append(task)
    return out


@pytest.mark.parametrize("loop", LOOPS)
def test_a_dead_child_loses_no_answer_keeps_the_order_says_so_and_is_restarted(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        checks = SignatureChecks(0, process=True)
        proc = _child(checks)
        proc._retry_after = 0.05
        try:
            pid = await _ready(proc)
            jobs = _jobs(400, bad={7, 333})
            caplog.set_level(logging.WARNING, logger="chat_server.crypto.verifier_process")
            order: list[int] = []
            first = _in_order(checks, jobs, order)
            for _ in range(5):  # the tasks ask, then the loop's next turn sends the batch
                await asyncio.sleep(0)
            assert proc._pending
            os.kill(pid, signal.SIGKILL)
            # More checks asked right after the death, before the loop has seen it.
            later = _in_order(checks, jobs[:3], order)
            got = await asyncio.wait_for(asyncio.gather(*first, *later), 20)
            assert got == [verify_signature(*j) for j in [*jobs, *jobs[:3]]]
            assert order == [*range(len(jobs)), 0, 1, 2]  # arrival order, kept
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 1, lines
            assert lines[0].startswith("signature verifier process exited")
            assert "batches it had not answered, verified on the event loop:" in lines[0]
            unanswered = int(lines[0].rsplit(": ", 1)[1].split(";")[0])
            assert 1 <= unanswered <= len(_chunks(len(jobs))) + 1
            assert caplog.records[0].exc_info is None  # an expected fault: no traceback
            new_pid = await _ready(proc)
            assert new_pid != pid
            again = await asyncio.gather(*(checks.verify(*j) for j in jobs[:50]))
            assert again == got[:50]
        finally:
            await checks.close()

    _on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("fault", ["killed", "pipe closed"])
def test_checks_asked_after_an_unnoticed_fault_are_answered(loop: str, fault: str) -> None:
    async def scenario() -> None:
        checks = SignatureChecks(0, process=True, max_wait=1)
        proc = _child(checks)
        try:
            pid = await _ready(proc)
            child = proc._proc
            assert child is not None
            assert child.stdin is not None
            if fault == "killed":
                os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(0.2)  # the pipe may be closed before the reader sees it
            else:
                child.stdin.close()  # as uvloop does when the child dies, before the reader
            jobs = _jobs(PROCESS_CHUNK + 5, bad={2})
            got = await asyncio.wait_for(asyncio.gather(*(checks.verify(*j) for j in jobs)), 10)
            assert got == [verify_signature(*j) for j in jobs]
            assert not checks._inflight  # nothing left behind to refuse later sends with
            await asyncio.wait_for(child.wait(), 10)  # ended (a closed input ends the child)
            again = await asyncio.gather(*(checks.verify(*j) for j in jobs))
            assert again == got
        finally:
            await checks.close()

    _on(loop, scenario)


async def test_a_stuck_child_is_killed_and_its_checks_done_on_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    checks = SignatureChecks(0, process=True, max_wait=0.1)
    proc = _child(checks)
    proc._stuck_after = 0.3
    proc._retry_after = 0.05
    caplog.set_level(logging.WARNING, logger="chat_server.crypto.verifier_process")
    try:
        pid = await _ready(proc)
        os.kill(pid, signal.SIGSTOP)  # alive, never answers
        jobs = _jobs(PROCESS_CHUNK, bad={5})
        first = asyncio.gather(*(checks.verify(*j) for j in jobs))
        await asyncio.sleep(0.2)
        with pytest.raises(Backlogged):  # behind: refused, nothing verified
            await checks.verify(*jobs[0])
        assert not first.done()
        await asyncio.sleep(0.2)
        # Past stuck_after: the next sender's refusal finds the child stuck and kills it,
        # and what it had not answered is verified on the loop.
        with pytest.raises(Backlogged):
            await checks.verify(*jobs[0])
        expected = [verify_signature(*j) for j in jobs]
        assert await asyncio.wait_for(first, 10) == expected
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1, lines
        assert lines[0].startswith("signature verifier process did not answer for 0.3 s")
        assert await _ready(proc) != pid  # a new child
        assert await asyncio.gather(*(checks.verify(*j) for j in jobs)) == expected
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        await checks.close()


def _environ_names(pid: int) -> set[str]:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return {e.split(b"=", 1)[0].decode() for e in environ if e}


async def test_the_child_gets_no_secret_of_the_servers_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAPID_PRIVATE_KEY", "secret-of-the-server")
    checks = SignatureChecks(0, process=True)
    proc = _child(checks)
    try:
        pid = await _ready(proc)
        names = _environ_names(pid)
    finally:
        await checks.close()
    assert names == {"PYTHONPATH"}


async def test_close_stops_the_child_and_later_checks_run_inline() -> None:
    checks = SignatureChecks(0, process=True)
    proc = _child(checks)
    await _ready(proc)
    child = proc._proc
    assert child is not None
    await checks.close()
    assert child.returncode is not None
    jobs = _jobs(MIN_CHUNK * 2, bad={1})
    got = await asyncio.gather(*(checks.verify(*j) for j in jobs))
    assert got == [verify_signature(*j) for j in jobs]


def test_the_child_checks_with_the_servers_function_only() -> None:
    with pytest.raises(ValueError, match="verify_signature"):
        SignatureChecks(0, process=True, check=lambda pub, data, sig: True)
