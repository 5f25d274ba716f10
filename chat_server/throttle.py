"""Throttling of password and activation-code guesses: slow attackers, lock nobody out.

Three counters, each a window of ``LOGIN_WINDOW_SECONDS`` in the account store,
counted atomically *before* the check (so concurrent guesses cannot slip past a
limit) and taken back when the check succeeds:

- per client address (``ADDRESS_MAX_FAILURES``): every failed login and
  activation from one address, whatever the login: password spraying across
  accounts is stopped at the address;
- per login, for devices the account does not know (``LOGIN_MAX_FAILURES``):
  guessing one account's password from new devices is stopped at the login;
- per login and known device (a device registered to the account): never
  blocked by anyone else's failures. Its own failures past the limit impose a
  wait that doubles with each one (1 s, 2 s, ... at most 5 minutes): the owner
  is slowed down, never locked out, and a stolen device id buys no more.

Keys are hashed: the store never holds a typed login (it may be a password
typed in the wrong field) nor a client address, and windows that have passed
are deleted (``purge``).

The password hash itself (argon2id) runs in worker threads, at most
``PASSWORD_HASH_CONCURRENCY`` at once; with that many logins and activations
in progress plus ``PASSWORD_HASH_QUEUE`` waiting, new ones are refused at once
(503 ``busy``), before any store access: a login flood can neither starve the
event loop nor queue without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterator
from typing import TypeVar

from chat_server.rooms.errors import DomainError, Throttled
from chat_server.settings import Settings
from chat_server.storage.base import AccountStore

T = TypeVar("T")
BACKOFF_MAX = 300.0


class Busy(DomainError):
    """Too many password checks are waiting: retry in a moment."""

    code = "busy"
    status = 503

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyAttempts(Throttled):
    """A throttled attempt, with the seconds to wait before the next one."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _key(kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return f"{kind}:{digest}"


def address_key(address: str) -> str:
    """The counter of one client address."""
    return _key("address", address)


def login_key(login: str) -> str:
    """The counter of one login (case-insensitive), for devices it does not know."""
    return _key("login", login.strip().lower())


def device_key(login: str, device_id: str) -> str:
    """The counter of one login on one of its known devices."""
    return _key("device", login.strip().lower(), device_id)


class Throttle:
    """The limits above, on an ``AccountStore``'s counters."""

    def __init__(self, store: AccountStore, settings: Settings, clock: Callable[[], float]) -> None:
        self._store = store
        self._window = float(settings.login_window_seconds)
        self._per_login = settings.login_max_failures
        self._per_address = settings.address_max_failures
        self._clock = clock
        self._hashing = asyncio.Semaphore(settings.password_hash_concurrency)
        self._in_flight_max = settings.password_hash_concurrency + settings.password_hash_queue
        self._in_flight = 0

    async def take(self, key: str, limit: int) -> None:
        """Count an attempt on ``key``; refuse it (429) past ``limit`` in the window."""
        if await self._store.record_login_failure(key, self._clock(), self._window) > limit:
            raise TooManyAttempts("too many failed attempts; try again later", self._window)

    async def give_back(self, key: str) -> None:
        """The attempt counted on ``key`` succeeded: it is not a failure."""
        await self._store.record_login_failure(key, self._clock(), self._window, -1)

    async def address(self, address: str) -> str:
        """Count an attempt from ``address``; returns its key (for ``give_back``)."""
        key = address_key(address)
        await self.take(key, self._per_address)
        return key

    async def unknown_device(self, login: str) -> str:
        """Count an attempt on ``login`` from a device it does not know."""
        key = login_key(login)
        await self.take(key, self._per_login)
        return key

    async def known_device(self, login: str, device_id: str) -> str:
        """Refuse (429) while the device's backoff runs; the attempt is counted on failure."""
        key = device_key(login, device_id)
        now = self._clock()
        failures = await self._store.login_failures(key, now, self._window)
        if failures >= self._per_login:
            last = await self._store.last_login_failure(key, now, self._window) or now
            wait = min(BACKOFF_MAX, 2.0 ** (failures - self._per_login)) - (now - last)
            if wait > 0:
                raise TooManyAttempts("too many failed attempts; wait before retrying", wait)
        return key

    async def failed(self, key: str) -> None:
        """Record a failure of a known device (its backoff grows)."""
        await self._store.record_login_failure(key, self._clock(), self._window)

    async def forget(self, *keys: str) -> None:
        """A success: the login's counters start again from zero."""
        for key in keys:
            await self._store.clear_login_failures(key)

    async def purge(self) -> int:
        """Delete the counters of windows that have passed."""
        return await self._store.purge_login_failures(self._clock(), self._window)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the login slots for a login or an activation, or raise ``Busy``."""
        if self._in_flight >= self._in_flight_max:
            raise Busy("the server is busy checking passwords; retry in a moment")
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    async def hashing(self, work: Callable[[], T]) -> T:
        """Run a password hash in a worker thread, at most ``PASSWORD_HASH_CONCURRENCY`` at once."""
        async with self._hashing:
            return await asyncio.to_thread(work)
