"""A person's own devices and the renewal of their recovery key (issue #15, point 4).

The device list is the caller's registered devices with what their owner
needs to recognise them: the name the device gave itself at registration, when
it was registered, when a session was last opened on it, and which one is the
caller's. Only the owner sees it; removing a device stays
``DELETE /api/devices/{id}`` (``KeyService.remove_device``), which only ever
removes one of the caller's own devices: a counsellor approves a beneficiary's
new phone but cannot remove one.

Renewing the recovery key (``docs/security.md``, "Renewing the recovery key").
A backup holds the private keys of one device, the one that wrote it; whoever
opens it with the recovery key can act as that device. So a new recovery key
must come with a new device identity, and the identity the old key opens must
be removed, so that it is given nothing new:

1. the caller's device ``Y`` (registered, not waiting for approval) makes a
   new device ``R`` and the new backup holding ``R``'s keys, sealed with the new
   recovery key, and sends both with the account password;
2. the server checks the password, registers ``R`` as approved (vouched by
   ``Y``: nobody is asked for keys), removes the device the old backup held if
   it is neither ``Y`` nor ``R``, then replaces the backup (if either step fails,
   ``R`` is removed again and the request fails);
3. ``Y`` re-wraps the epoch keys it holds for ``R``, opens a session as ``R``,
   and removes ``Y`` (``DELETE /api/devices/{Y}``): the browser is now ``R``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chat_server.accounts import AccountService
from chat_server.rooms.errors import DomainError, E2EEError, NotFound, RenewalConflict
from chat_server.rooms.keys import KeyService, device_json
from chat_server.rooms.models import Device, Role, Session, User
from chat_server.storage.base import KeyStore, LifecycleStore, MessageStore

log = logging.getLogger(__name__)


class DeviceNotApproved(DomainError):
    """The caller's device cannot vouch for a new one (unregistered, or still waiting)."""

    code = "device_not_approved"
    status = 403


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A device's public keys as sent by the client (raw bytes), and its name."""

    device_id: str
    dh_pub: bytes
    sig_pub: bytes
    registration_sig: bytes
    name: str


class DeviceTools:
    """The caller's own device list and recovery-key renewal."""

    def __init__(
        self,
        keys: KeyService,
        key_store: KeyStore,
        accounts: AccountService,
        sessions: LifecycleStore,
        messages: MessageStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._key_store = key_store
        self._accounts = accounts
        self._sessions = sessions
        self._messages = messages

    async def own_devices(self, user: User, session: Session) -> list[dict[str, Any]]:
        """The caller's devices (oldest first), each with ``name``, ``created_at``,
        ``last_login_at`` (the latest session opened on it, or null) and ``current``."""
        devices = await self._keys.list_devices(user)
        last: dict[str, float] = {}
        for s in await self._sessions.sessions_of(user.id):
            last[s.device_id] = max(last.get(s.device_id, 0.0), s.created_at)
        return [
            device_json(d)
            | {
                "name": d.name,
                "last_login_at": last.get(d.id),
                "current": d.id == session.device_id,
            }
            for d in devices
        ]

    async def _vouching_device(self, user: User, session: Session) -> Device:
        device = await self._key_store.get_device(session.device_id)
        if device is None or device.user_id != user.id or device.removed_at is not None:
            raise DeviceNotApproved("this session's device has no registered keys")
        if user.role is Role.BENEFICIARY:
            convs = await self._messages.conversations_for(user.id)
            for conv in convs:
                if device.id in (await self._keys.device_sets(conv)).pending:
                    raise DeviceNotApproved("this device still waits for the counsellor's approval")
        return device

    async def renew_recovery(
        self,
        user: User,
        session: Session,
        password: str,
        new: NewDevice,
        backup: dict[str, str],
    ) -> dict[str, Any]:
        """Steps 1 and 2 of the module's renewal; returns ``{"device", "removed"}``.

        Refused before any change: ``wrong_password`` (403, throttled: 429),
        ``device_not_approved`` (403), ``bad_registration_signature`` (422),
        ``device_exists`` (422), ``too_many_devices`` (422).
        """
        vouching = await self._vouching_device(user, session)
        await self._accounts.confirm_password(user, password)
        if new.device_id == vouching.id or await self._key_store.get_device(new.device_id):
            raise E2EEError("device_exists", "this device id is already registered")
        device, _ = await self._keys.register_device(
            user,
            new.device_id,
            new.dh_pub,
            new.sig_pub,
            new.registration_sig,
            name=new.name,
            vouched=True,
        )
        # The old key's device goes before the new backup is stored: if the removal fails,
        # the old backup still names it and a retry removes it (never another device). If
        # either step fails, R is removed again so no approved device is left that no
        # backup holds.
        removed: list[str] = []
        try:
            old = await self._key_store.get_backup(user.id)
            held = (old or {}).get("device_id")
            if held and held not in (vouching.id, device.id):
                try:
                    await self._keys.remove_device(user, held)
                    removed.append(held)
                except NotFound:
                    pass  # already removed
            if not await self._key_store.swap_backup(
                user.id, old, backup | {"device_id": device.id}, self._clock()
            ):
                raise RenewalConflict(
                    "another renewal of your recovery key finished first: "
                    "renew again from this device"
                )
        except Exception:
            try:
                await self._keys.remove_device(user, device.id)
            except Exception as exc:  # best effort: the caller sees the first error
                log.warning(
                    "recovery renewal: new device not removed after a failed step: %r",
                    exc,
                    extra={"user_id": user.id, "device_id": device.id},
                )
            raise
        log.info(
            "recovery key renewed",
            extra={"user_id": user.id, "device_id": device.id, "removed": removed},
        )
        return {"device": device_json(device) | {"name": device.name}, "removed": removed}
