"""The caller's own devices and the renewal of their recovery key (``chat_server.tools.devices``).

``POST /api/devices`` (register) and ``DELETE /api/devices/{id}`` (remove) stay in
``chat_server.api.keys``.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.auth import DeviceId
from chat_server.api.common import current, endpoint, json_body, ok, services
from chat_server.api.keys import B64, MAX_BACKUP_BYTES, BackupBody, DeviceName, _b64
from chat_server.tools.devices import NewDevice


class RenewDevice(Struct, forbid_unknown_fields=True):
    device_id: DeviceId
    dh_pub: B64
    sig_pub: B64
    registration_sig: B64
    name: DeviceName = ""


class RenewBody(Struct, forbid_unknown_fields=True):
    password: Annotated[str, Meta(min_length=1, max_length=256)]
    device: RenewDevice
    backup: BackupBody


@endpoint
async def list_devices(request: Request) -> Response:
    """GET /api/devices: the caller's devices, with names, dates and which is this one."""
    user, session = await current(request)
    return ok({"devices": await services(request).devices.own_devices(user, session)})


@endpoint
async def renew_recovery(request: Request) -> Response:
    """POST /api/keys/backup/renew: a new recovery key, a new device identity in the backup."""
    user, session = await current(request)
    body = await json_body(request, RenewBody, limit=MAX_BACKUP_BYTES + 4096)
    d = body.device
    new = NewDevice(
        d.device_id,
        _b64(d.dh_pub, "dh_pub", 32),
        _b64(d.sig_pub, "sig_pub", 32),
        _b64(d.registration_sig, "registration_sig", 64),
        d.name.strip(),
    )
    backup = {"v": str(body.backup.v), "nonce": body.backup.nonce, "blob": body.backup.blob}
    answer = await services(request).devices.renew_recovery(
        user, session, body.password, new, backup
    )
    return ok(answer, 201)


routes = [
    Route("/api/devices", list_devices, methods=["GET"]),
    Route("/api/keys/backup/renew", renew_recovery, methods=["POST"]),
]
