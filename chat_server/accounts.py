"""Accounts: structures, users, activation, login, sessions, throttling."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from chat_server.crypto.passwords import PasswordPolicyError, Passwords
from chat_server.crypto.tokens import (
    new_activation_code,
    new_id,
    new_token,
    normalise_code,
    token_hash,
)
from chat_server.rooms.errors import (
    Forbidden,
    InvalidDisplayName,
    InvalidInput,
    InvalidLogin,
    LoginTaken,
    NotFound,
    Unauthenticated,
    WrongPassword,
)
from chat_server.rooms.models import Conversation, Role, Session, Structure, User
from chat_server.settings import Settings
from chat_server.storage.base import (
    AccountStore,
    Conflict,
    KeyStore,
    LifecycleStore,
    MessageStore,
)
from chat_server.throttle import Throttle

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Login:
    """A new session: the token is shown to the client once and never stored."""

    token: str
    user: User
    device_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class NewBeneficiary:
    """A created beneficiary, their one-time activation code and their conversation."""

    user: User
    #: None when the counsellor's client made the code (only its proof reached the server).
    activation_code: str | None
    activation_expires: float
    conversation: Conversation


def _check_login(login: str) -> str:
    login = login.strip()
    if not 2 <= len(login) <= 64 or not all(ch.isalnum() or ch in "._-@" for ch in login):
        raise InvalidLogin("login must be 2 to 64 letters, digits or . _ - @")
    return login


def _check_name(name: str) -> str:
    name = " ".join(name.split())
    if not 1 <= len(name) <= 100:
        raise InvalidDisplayName("display name must be 1 to 100 characters")
    return name


class AccountService:
    """Creates accounts and sessions; the one place passwords are checked."""

    def __init__(
        self,
        accounts: AccountStore,
        messages: MessageStore,
        passwords: Passwords,
        settings: Settings,
        clock: Clock,
        devices: KeyStore | None = None,
        lifecycle: LifecycleStore | None = None,
    ) -> None:
        self._accounts = accounts
        self._lifecycle = lifecycle
        self._messages = messages
        self._passwords = passwords
        self._settings = settings
        self._clock = clock
        self._devices = devices
        self.throttle = Throttle(accounts, settings, clock)

    async def create_structure(
        self, name: str, kind: str, programmes: tuple[str, ...]
    ) -> Structure:
        """Create a structure (admin)."""
        s = Structure(new_id(), _check_name(name), kind, programmes)
        await self._accounts.add_structure(s)
        return s

    async def create_user(
        self,
        role: Role,
        login: str,
        display_name: str,
        structure_id: str | None,
        password: str | None = None,
        programme: str | None = None,
    ) -> User:
        """Create an account; with ``password`` it can log in at once.

        Counsellors and supervisors belong to a structure: without one, refused.
        """
        if structure_id is None and role in (Role.COUNSELLOR, Role.SUPERVISOR):
            raise InvalidInput(f"a {role.value} must belong to a structure")
        if structure_id is not None and await self._accounts.get_structure(structure_id) is None:
            raise NotFound("no such structure")
        if password is not None:
            try:
                Passwords.check_policy(password)
            except PasswordPolicyError as exc:
                raise InvalidInput(str(exc)) from None
        user = User(
            id=new_id(),
            role=role,
            login=_check_login(login),
            display_name=_check_name(display_name),
            structure_id=structure_id,
            programme=programme,
            password_hash=self._passwords.hash(password) if password else None,
            created_at=(now := self._clock()),
            active_at=now,
        )
        try:
            await self._accounts.add_user(user)
        except Conflict:
            raise LoginTaken(f"login {user.login!r} is already taken") from None
        return user

    async def create_beneficiary(
        self,
        counsellor: User,
        login: str,
        display_name: str,
        programme: str | None,
        activation_proof: str | None = None,
    ) -> NewBeneficiary:
        """A counsellor creates a beneficiary, their conversation, and an activation code.

        With ``activation_proof`` the counsellor's client made the code
        (``chat_server.crypto.activation``): the server keeps only the SHA-256 of
        the proof, never sees the code, and returns no code.
        """
        if counsellor.role is not Role.COUNSELLOR:
            raise Forbidden("only a counsellor can create a beneficiary")
        user = await self.create_user(
            Role.BENEFICIARY, login, display_name, counsellor.structure_id, programme=programme
        )
        now = self._clock()
        conv = Conversation(
            id=new_id(),
            beneficiary_id=user.id,
            counsellor_id=counsellor.id,
            structure_id=counsellor.structure_id,
            created_at=now,
            last_at=now,
        )
        await self._messages.add_conversation(conv)
        if activation_proof is not None:
            expires = await self.set_activation_proof(user.id, activation_proof)
            return NewBeneficiary(user, None, expires, conv)
        code, expires = await self.reset_activation(user.id)
        return NewBeneficiary(user, code, expires, conv)

    async def set_password(self, user_id: str, password: str) -> None:
        """Set a password directly (admin and demo seeding); checks the policy."""
        try:
            Passwords.check_policy(password)
        except PasswordPolicyError as exc:
            raise InvalidInput(str(exc)) from None
        await self._accounts.set_password_hash(user_id, self._passwords.hash(password))

    async def set_activation_proof(self, user_id: str, proof: str) -> float:
        """Replace the activation code by one the counsellor's client made, known here only
        by its proof (the old code stops working); returns when it expires."""
        expires = self._clock() + self._settings.activation_ttl_hours * 3600
        await self._accounts.set_activation(user_id, token_hash(proof), expires)
        return expires

    async def reset_activation(self, user_id: str) -> tuple[str, float]:
        """Issue a new one-time activation code (the old one stops working)."""
        code = new_activation_code()
        expires = self._clock() + self._settings.activation_ttl_hours * 3600
        await self._accounts.set_activation(user_id, token_hash(normalise_code(code)), expires)
        return code, expires

    async def activate(
        self,
        code: str | None,
        password: str,
        device_id: str | None,
        client: str = "-",
        proof: str | None = None,
    ) -> Login:
        """Consume an activation code, set the password, and open a session (see ``_activate``).

        Refused at once (503 ``busy``) while the password checks in progress are at their bound.
        """
        with self.throttle.admit():
            return await self._activate(code, password, device_id, client, proof)

    async def _activate(
        self, code: str | None, password: str, device_id: str | None, client: str, proof: str | None
    ) -> Login:
        """Consume an activation code, set the password, and open a session.

        Wrong codes count against the client address (``client``, see
        ``chat_server.throttle``): guessing is throttled without letting one
        client lock out everyone's activation.
        """
        try:
            Passwords.check_policy(password)
        except PasswordPolicyError as exc:
            raise InvalidInput(str(exc)) from None
        address = await self.throttle.address(client)
        now = self._clock()
        # A code the server made is sent as is; a code the counsellor's client made
        # is never sent: only its proof (docs/crypto-format.md, "Activation").
        secret = proof if proof is not None else normalise_code(code or "")
        user = await self._accounts.consume_activation(token_hash(secret), now)
        if user is None:
            raise Unauthenticated("this activation code is unknown, used or expired")
        await self.throttle.give_back(address)
        hashed = await self.throttle.hashing(lambda: self._passwords.hash(password))
        await self._accounts.set_password_hash(user.id, hashed)
        login = await self._open_session(user, device_id)
        # The device that proved the code is the account's one trusted first device
        # (docs/security.md), whichever device happens to register first.
        await self._accounts.claim_first_device(user.id, login.device_id)
        return login

    async def login(
        self, login: str, password: str, device_id: str | None, client: str = "-"
    ) -> Login:
        """Check a password and open a session bound to a device (see ``_login``).

        Refused at once (503 ``busy``) while the password checks in progress are at their bound.
        """
        with self.throttle.admit():
            return await self._login(login, password, device_id, client)

    async def _login(
        self, login: str, password: str, device_id: str | None, client: str
    ) -> Login:
        """Check a password and open a session bound to a device.

        Throttled per client address, per login for unknown devices, and with
        a backoff per known device (``chat_server.throttle``): attempts are
        counted *before* the password is checked, so concurrent guesses cannot
        slip past a limit, and the owner on a device of theirs is never locked
        out by someone else's guesses. argon2 runs in a worker thread, within
        the throttle's concurrency bound, so the event loop keeps serving.
        """
        name = login.strip()
        throttle = self.throttle
        address = await throttle.address(client)
        user = await self._accounts.find_user_by_login(name)
        known = device_id is not None and await self._known_device(user, device_id)
        key = (
            await throttle.known_device(name, device_id)
            if known and device_id is not None
            else await throttle.unknown_device(name)
        )
        ok, rehash = (False, None)
        if user is not None and user.erasing is not None:
            user = None  # being erased: as if it no longer existed
        if user is not None and user.password_hash:
            stored = user.password_hash
            ok, rehash = await throttle.hashing(lambda: self._passwords.verify(stored, password))
        else:
            # Same cost whether or not the login exists.
            dummy = _DUMMY_HASH.get(self._passwords)
            await throttle.hashing(lambda: self._passwords.verify(dummy, password))
        if not ok or user is None:
            if known:
                await throttle.failed(key)
            raise Unauthenticated("wrong login or password")
        await throttle.give_back(address)
        await throttle.forget(key)
        if rehash:
            await self._accounts.set_password_hash(user.id, rehash)
        return await self._open_session(user, device_id)

    async def _known_device(self, user: User | None, device_id: str) -> bool:
        """Whether ``device_id`` is a registered, not removed, device of ``user``."""
        if user is None or self._devices is None:
            return False
        device = await self._devices.get_device(device_id)
        return device is not None and device.user_id == user.id and device.removed_at is None

    async def _open_session(self, user: User, device_id: str | None) -> Login:
        now = self._clock()
        token = new_token()
        expires = now + self._settings.session_ttl_days * 86400
        device = device_id or new_id()
        await self._accounts.add_session(Session(token_hash(token), user.id, device, now, expires))
        if self._lifecycle is not None:
            await self._lifecycle.record_login(user.id, now)
        log.info("session opened", extra={"user_id": user.id, "device_id": device})
        return Login(token, user, device, expires)

    async def authenticate(self, token: str) -> tuple[User, Session]:
        """Resolve a bearer token; raise ``Unauthenticated`` if unknown or expired."""
        if not token or len(token) > 512:
            raise Unauthenticated("missing or invalid session token")
        session = await self._accounts.get_session(token_hash(token), self._clock())
        if session is None:
            raise Unauthenticated("session expired or revoked; log in again")
        user = await self._accounts.get_user(session.user_id)
        if user is None or user.erasing is not None:
            raise Unauthenticated("account no longer exists")
        return user, session

    async def confirm_password(self, user: User, password: str) -> None:
        """Check the password of a logged-in user before an irreversible action.

        Raises ``WrongPassword`` (403); throttled like logins from unknown devices
        (``LOGIN_MAX_FAILURES`` per window, then 429), and bounded like every hash.
        """
        with self.throttle.admit():
            key = await self.throttle.unknown_device(user.login)
            stored = (await self._accounts.get_user(user.id) or user).password_hash
            ok = False
            if stored:
                ok, _ = await self.throttle.hashing(
                    lambda: self._passwords.verify(stored, password)
                )
            if not ok:
                raise WrongPassword("the password is not correct")
            await self.throttle.give_back(key)

    async def logout(self, token: str) -> None:
        """End this session."""
        await self._accounts.delete_session(token_hash(token))

    async def logout_everywhere(self, user_id: str) -> int:
        """End every session of the user; returns how many."""
        return await self._accounts.delete_user_sessions(user_id)


class _DummyHash:
    """One hash per hasher, computed lazily, to equalise timing for unknown logins."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def get(self, passwords: Passwords) -> str:
        key = id(passwords)
        if key not in self._cache:
            self._cache[key] = passwords.hash("not-a-real-password")
        return self._cache[key]


_DUMMY_HASH = _DummyHash()
