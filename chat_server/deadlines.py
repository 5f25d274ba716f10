"""Coarse deadlines for many short operations, watched by one timer per event loop.

``asyncio.timeout_at`` arms a timer per operation and re-arms it on every
``reschedule``: about 16 µs per ``message.send`` on the benchmark machine,
a few percent of a whole signed send (docs/benchmarks.md, issue #16). A
`Deadlines` keeps the operations in flight in a dict instead, and one timer
ticks every ``tick`` seconds while any is registered; a tick cancels the
task of each operation whose deadline has passed.

The contract of `Deadlines.scope` (a plain ``with`` block inside a task):

- the block's task is cancelled at most ``tick`` seconds after ``deadline``
  (never before it), and the block then raises `TimeoutError` (from the
  `asyncio.CancelledError`), exactly as ``asyncio.timeout_at`` does:
  a cancellation that does not come from the deadline, or that comes
  together with another one, propagates as `asyncio.CancelledError`;
- ``scope.deadline`` can be changed inside the block (`None`: no deadline
  until it is set again); a deadline already passed fires at the next tick;
- leaving the block, normally or not, unregisters it; the timer stops at
  its next tick once no block is registered.

A `Deadlines` follows the running loop: used from another loop (tests), it
forgets the blocks of the previous one.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["Deadlines", "Scope"]


class Scope:
    """One ``with`` block under a deadline (`Deadlines.scope`)."""

    __slots__ = ("_cancelling", "_owner", "_task", "deadline", "expired")

    def __init__(self, owner: Deadlines, deadline: float | None) -> None:
        self._owner = owner
        #: When the block's task is cancelled (loop time), or None for never.
        self.deadline = deadline
        #: Whether the deadline cancelled the task.
        self.expired = False
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    def __enter__(self) -> Scope:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._owner._register(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner._scopes.pop(self, None)
        task = self._task
        if (
            self.expired
            and task is not None
            and task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc


class Deadlines:
    """The operations in flight under a deadline, and the one timer that watches them."""

    def __init__(self, tick: float = 0.05) -> None:
        if tick <= 0:
            raise ValueError("tick must be > 0")
        self.tick = tick
        self._scopes: dict[Scope, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def scope(self, deadline: float | None) -> Scope:
        """A ``with`` block whose task is cancelled once ``deadline`` (loop time) passes."""
        return Scope(self, deadline)

    def _register(self, scope: Scope) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._timer = loop, None
            self._scopes.clear()
        self._scopes[scope] = None
        if self._timer is None:
            self._timer = loop.call_at(loop.time() + self.tick, self._check)

    def _check(self) -> None:
        loop = self._loop
        self._timer = None
        if loop is None or not self._scopes:
            return
        now = loop.time()
        for scope in list(self._scopes):
            when = scope.deadline
            if when is not None and when <= now and not scope.expired:
                scope.expired = True
                del self._scopes[scope]
                if scope._task is not None:
                    scope._task.cancel()
        if self._scopes:
            self._timer = loop.call_at(now + self.tick, self._check)
