"""The end-to-end key API: devices, epochs, envelopes, key requests, backups, transfers.

Binary fields are base64url without padding (docs/crypto-format.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chat_server.api.common import BadRequest, current, endpoint, error, json_body, ok, services
from chat_server.crypto.encoding import b64decode
from chat_server.crypto.errors import MalformedInput
from chat_server.rooms.keys import EpochConflict, device_json
from chat_server.rooms.models import Role
from chat_server.rooms.service import archive_json

B64 = Annotated[str, Meta(min_length=1, max_length=200)]
# A backup holds a device's keys and up to thousands of epoch keys (~100 bytes each).
MAX_BACKUP_BYTES = 2 * 1024 * 1024
IdStr = Annotated[str, Meta(min_length=1, max_length=64)]
Envelopes = Annotated[list[dict[str, Any]], Meta(max_length=500)]


#: A device's name as its owner sees it in their device list (no control characters).
DeviceName = Annotated[str, Meta(max_length=60, pattern=r"^[^\x00-\x1f\x7f-\x9f]*\Z")]


class DeviceBody(Struct, forbid_unknown_fields=True):
    dh_pub: B64
    sig_pub: B64
    registration_sig: B64
    name: DeviceName = ""


class EpochBody(Struct, forbid_unknown_fields=True):
    epoch: Annotated[int, Meta(ge=1, le=2**31)]
    envelopes: Envelopes
    # Required: absent, they are refused as `bad_commitment` after the envelope checks.
    commitment: Annotated[str, Meta(max_length=200)] = ""
    commitment_sig: Annotated[str, Meta(max_length=200)] = ""


class EnvelopesBody(Struct, forbid_unknown_fields=True):
    envelopes: Envelopes


class ApproveBody(Struct, forbid_unknown_fields=True):
    conversation: IdStr
    device_id: IdStr


class ReportBody(Struct, forbid_unknown_fields=True):
    conversation: IdStr
    epoch: Annotated[int, Meta(ge=1, le=2**31)]
    sender_device: IdStr
    #: The envelope was sealed to the structure key (not to the caller's device).
    structure: bool = False


class BackupBody(Struct, forbid_unknown_fields=True):
    v: Annotated[int, Meta(ge=1, le=1)]
    nonce: Annotated[str, Meta(min_length=1, max_length=64)]
    blob: Annotated[str, Meta(min_length=1, max_length=MAX_BACKUP_BYTES)]


class TransferBody(Struct, forbid_unknown_fields=True):
    mode: Annotated[str, Meta(max_length=20)]
    to: IdStr | None = None
    until: float | None = None


def _b64(value: str, name: str, length: int) -> bytes:
    try:
        return b64decode(value, length=length, what=name)
    except MalformedInput as exc:
        raise BadRequest("invalid_field", str(exc)) from None


@endpoint
async def register_device(request: Request) -> Response:
    """POST /api/devices: register the session's device keys (self-signed)."""
    user, session = await current(request)
    body = await json_body(request, DeviceBody)
    device, created = await services(request).keys.register_device(
        user,
        session.device_id,
        _b64(body.dh_pub, "dh_pub", 32),
        _b64(body.sig_pub, "sig_pub", 32),
        _b64(body.registration_sig, "registration_sig", 64),
        name=body.name.strip(),
    )
    return ok({"device": device_json(device)}, 201 if created else 200)


@endpoint
async def remove_device(request: Request) -> Response:
    """DELETE /api/devices/{device_id}: remove a device and end its sessions."""
    user, _ = await current(request)
    svc = services(request)
    await svc.keys.remove_device(user, request.path_params["device_id"])
    await svc.push.forget_device(user.id, request.path_params["device_id"])
    return ok({"ok": True})


@endpoint
async def conversation_devices(request: Request) -> Response:
    """GET /api/conversations/{id}/devices: the devices to wrap an epoch for."""
    user, _ = await current(request)
    return ok(await services(request).keys.conversation_devices(user, request.path_params["id"]))


@endpoint
async def create_epoch(request: Request) -> Response:
    """POST /api/conversations/{id}/epochs: a new epoch with one envelope per device."""
    user, session = await current(request)
    body = await json_body(request, EpochBody)
    try:
        epoch = await services(request).keys.create_epoch(
            user,
            session.device_id,
            request.path_params["id"],
            body.epoch,
            body.envelopes,
            _b64(body.commitment, "commitment", 32) if body.commitment else b"",
            _b64(body.commitment_sig, "commitment_sig", 64) if body.commitment_sig else b"",
        )
    except EpochConflict as exc:
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}, "current": exc.current},
            status_code=409,
        )
    return ok({"epoch": epoch}, 201)


@endpoint
async def add_envelopes(request: Request) -> Response:
    """POST /api/conversations/{id}/envelopes: re-wrapped earlier epochs."""
    user, session = await current(request)
    body = await json_body(request, EnvelopesBody)
    added = await services(request).keys.add_envelopes(
        user, session.device_id, request.path_params["id"], body.envelopes
    )
    return ok({"added": added})


@endpoint
async def my_envelopes(request: Request) -> Response:
    """GET /api/keys/envelopes?conversation=: envelopes addressed to the caller's device,
    and the signed key commitments of their epochs."""
    user, session = await current(request)
    conv = request.query_params.get("conversation") or None
    svc = services(request)
    device = await svc.key_store.get_device(session.device_id)
    if device is None or device.user_id != user.id:
        return ok({"envelopes": [], "epochs": []})
    envs = await svc.keys.envelopes_for(session.device_id, conv)
    convs = {str(e["conversation"]) for e in envs}
    if conv is not None and conv not in convs:
        # A member's device without envelopes yet (a first phone opening the
        # activation box) still needs the commitments to check its keys.
        found = await svc.messages.get_conversation(conv)
        if found is not None and user.id in found.members:
            convs.add(conv)
    epochs = await svc.keys.commitments_for(sorted(convs))
    answer: dict[str, Any] = {"envelopes": envs, "epochs": epochs}
    if conv is not None:
        answer["structure"] = await svc.keys.structure_envelopes(user, session.device_id, conv)
    return ok(answer)


@endpoint
async def get_device(request: Request) -> Response:
    """GET /api/keys/devices/{device_id}: any device's public keys (to check a signature)."""
    await current(request)
    device = await services(request).key_store.get_device(request.path_params["device_id"])
    if device is None:
        return error(404, "not_found", "no such device")
    return ok({"device": device_json(device)})


@endpoint
async def key_requests(request: Request) -> Response:
    """GET /api/keys/requests: devices waiting for keys this device may hold."""
    user, session = await current(request)
    return ok({"requests": await services(request).keys.open_requests(user, session.device_id)})


@endpoint
async def approve(request: Request) -> Response:
    """POST /api/keys/requests/approve: the counsellor approves a beneficiary's new device."""
    user, _ = await current(request)
    body = await json_body(request, ApproveBody)
    await services(request).keys.approve_device(user, body.conversation, body.device_id)
    return ok({"ok": True})


@endpoint
async def report(request: Request) -> Response:
    """POST /api/keys/report: an envelope whose key fails its epoch's commitment."""
    user, session = await current(request)
    body = await json_body(request, ReportBody)
    await services(request).keys.report_envelope(
        user,
        session.device_id,
        body.conversation,
        body.epoch,
        body.sender_device,
        structure=body.structure,
    )
    return ok({"ok": True})


@endpoint
async def backup(request: Request) -> Response:
    """PUT/GET /api/keys/backup: the caller's encrypted key backup."""
    user, session = await current(request)
    keys = services(request).keys
    if request.method == "GET":
        stored = await keys.get_backup(user)
        return ok({"v": int(stored["v"]), "nonce": stored["nonce"], "blob": stored["blob"]})
    body = await json_body(request, BackupBody, limit=MAX_BACKUP_BYTES)
    # The backup holds the keys of the device that wrote it (e2ee.js setup()): a renewal
    # of the recovery key removes that device (chat_server/tools/devices.py).
    await keys.put_backup(
        user,
        {"v": str(body.v), "nonce": body.nonce, "blob": body.blob, "device_id": session.device_id},
    )
    return ok({"ok": True})


@endpoint
async def transfer(request: Request) -> Response:
    """POST /api/conversations/{id}/transfer: a supervisor reassigns a beneficiary."""
    user, _ = await current(request)
    body = await json_body(request, TransferBody)
    conv = await services(request).keys.transfer(
        user, request.path_params["id"], body.to, body.mode, body.until
    )
    return ok(
        {
            "conversation": conv.id,
            "counsellor_id": conv.counsellor_id,
            "previous_counsellor_id": conv.previous_counsellor_id,
            "temporary_until": conv.temporary_until,
            "rotation_required": conv.rotation_required,
        }
    )


@endpoint
async def structure_counsellors(request: Request) -> Response:
    """GET /api/structure: the caller's structure, its counsellors and their beneficiaries.

    Supervisors use it to choose a transfer.
    """
    user, _ = await current(request)
    svc = services(request)
    if user.structure_id is None:
        return error(404, "not_found", "you belong to no structure")
    counsellors = await svc.accounts_store.users_in_structure(user.structure_id, Role.COUNSELLOR)
    convs: list[dict[str, Any]] = []
    if user.role is Role.SUPERVISOR:
        for conv in await svc.messages.conversations_in_structure(user.structure_id):
            convs.append(
                {
                    "id": conv.id,
                    "beneficiary_id": conv.beneficiary_id,
                    "counsellor_id": conv.counsellor_id,
                    "previous_counsellor_id": conv.previous_counsellor_id,
                    "temporary_until": conv.temporary_until,
                    "archived": archive_json(conv),
                    "deleted_at": conv.deleted_at,
                }
            )
        people = await svc.accounts_store.get_users([str(i["beneficiary_id"]) for i in convs])
        for item in convs:
            b = people.get(str(item["beneficiary_id"]))
            item["beneficiary"] = b.public() if b else None
    return ok(
        {
            "structure_id": user.structure_id,
            "counsellors": [u.public() for u in counsellors],
            "conversations": convs,
        }
    )


routes = [
    Route("/api/devices", register_device, methods=["POST"]),
    Route("/api/devices/{device_id}", remove_device, methods=["DELETE"]),
    Route("/api/conversations/{id}/devices", conversation_devices, methods=["GET"]),
    Route("/api/conversations/{id}/epochs", create_epoch, methods=["POST"]),
    Route("/api/conversations/{id}/envelopes", add_envelopes, methods=["POST"]),
    Route("/api/conversations/{id}/transfer", transfer, methods=["POST"]),
    Route("/api/keys/envelopes", my_envelopes, methods=["GET"]),
    Route("/api/keys/devices/{device_id}", get_device, methods=["GET"]),
    Route("/api/keys/requests", key_requests, methods=["GET"]),
    Route("/api/keys/requests/approve", approve, methods=["POST"]),
    Route("/api/keys/report", report, methods=["POST"]),
    Route("/api/keys/backup", backup, methods=["GET", "PUT"]),
    Route("/api/structure", structure_counsellors, methods=["GET"]),
]
