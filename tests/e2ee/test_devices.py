"""A person's own devices (names, dates, removal) and the renewal of the recovery key.

Issue #15 point 4, server side: ``GET /api/devices``, ``DELETE /api/devices/{id}``,
``POST /api/keys/backup/renew`` (``chat_server.tools.devices``), with real SDK
clients doing the end-to-end work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from chat_server.crypto.encoding import b64encode
from chat_server.crypto.errors import DecryptError
from chat_server.crypto.keys import DeviceKeys, sign_registration
from chat_server.sdk import Client, ClientError
from chat_server.sdk.recovery import renew_recovery
from chat_server.storage.base import StoreUnavailable
from tests.e2ee.helpers import wait_text
from tests.helpers import PASSWORD, ServerInfo, seed_world


async def _register(client: Client, name: Any) -> Any:
    pub = client.keys.public
    return await client.request(
        "POST",
        "/api/devices",
        {
            "dh_pub": b64encode(pub.dh_pub),
            "sig_pub": b64encode(pub.sig_pub),
            "registration_sig": b64encode(
                sign_registration(client.keys, client.user_id, client.device_id)
            ),
            "name": name,
        },
    )


async def _ids(client: Client) -> list[str]:
    return [d["device_id"] for d in (await client.request("GET", "/api/devices"))["devices"]]


async def test_listing_has_names_dates_and_the_current_device(e2ee_server: ServerInfo) -> None:
    await seed_world(e2ee_server)
    phone = await Client.login(e2ee_server.http, "b1", PASSWORD, register=False)
    laptop = await Client.login(e2ee_server.http, "b1", PASSWORD, register=False)
    counsellor = await Client.login(e2ee_server.http, "c1", PASSWORD)
    try:
        created = await _register(phone, "  Chrome sur Android ")
        assert created["device"]["device_id"] == phone.device_id
        await _register(laptop, "Firefox sur Linux")
        listing = (await phone.request("GET", "/api/devices"))["devices"]
        by_id = {d["device_id"]: d for d in listing}
        assert by_id[phone.device_id]["name"] == "Chrome sur Android"
        assert by_id[laptop.device_id]["name"] == "Firefox sur Linux"
        assert by_id[phone.device_id]["current"] is True
        assert by_id[laptop.device_id]["current"] is False
        for d in listing:
            assert d["created_at"] > 0
            assert d["last_login_at"] >= d["created_at"] - 60
            assert d["user_id"] == phone.user_id
        # Only one's own devices, and names are not shown to the other member.
        assert await _ids(counsellor) == [counsellor.device_id]
        conv = (await counsellor.request("GET", "/api/conversations"))["conversations"][0]["id"]
        shared = await counsellor.request("GET", f"/api/conversations/{conv}/devices")
        for group in shared["members"]:
            for d in group["devices"]:
                assert "name" not in d
    finally:
        for c in (phone, laptop, counsellor):
            await c.close()


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("x" * 61, "invalid_field"),
        ("onglet\u0007", "invalid_field"),
        ("ligne\u0085suivante", "invalid_field"),  # C1 control characters too
        (7, "invalid_field"),
    ],
)
async def test_bad_device_name_is_refused(e2ee_server: ServerInfo, name: Any, code: str) -> None:
    await seed_world(e2ee_server)
    phone = await Client.login(e2ee_server.http, "b1", PASSWORD, register=False)
    try:
        with pytest.raises(ClientError) as exc:
            await _register(phone, name)
        assert (exc.value.status, exc.value.code) == (400, code)
        assert await _ids(phone) == []
    finally:
        await phone.close()


async def test_only_ones_own_device_can_be_removed(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    counsellor = await Client.login(e2ee_server.http, "c1", PASSWORD)
    phone = await Client.login(e2ee_server.http, "b1", PASSWORD)
    laptop = await Client.login(e2ee_server.http, "b1", PASSWORD)
    supervisor = await Client.login(e2ee_server.http, "sup", PASSWORD)
    try:
        # The counsellor approves a beneficiary's devices but cannot remove one;
        # nor can a supervisor, nor the beneficiary a counsellor's.
        for who, target in (
            (counsellor, laptop.device_id),
            (supervisor, laptop.device_id),
            (phone, counsellor.device_id),
            (phone, "no-such-device"),
            (phone, "x" * 300),
        ):
            with pytest.raises(ClientError) as exc:
                await who.request("DELETE", f"/api/devices/{target}")
            assert (exc.value.status, exc.value.code) == (404, "not_found")
        assert sorted(await _ids(phone)) == sorted([phone.device_id, laptop.device_id])
        # The person removes their other device: its session ends, the list updates,
        # and the conversation needs a new epoch the removed device will not get.
        await phone.request("DELETE", f"/api/devices/{laptop.device_id}")
        with pytest.raises(ClientError) as gone:
            await laptop.request("GET", "/api/me")
        assert gone.value.status == 401
        assert await _ids(phone) == [phone.device_id]
        info = await counsellor.devices(conv)
        assert info["rotation_required"] is True
        # Removing it again (a retry) is a no-op.
        await phone.request("DELETE", f"/api/devices/{laptop.device_id}")
        assert await _ids(phone) == [phone.device_id]
    finally:
        for c in (counsellor, phone, laptop, supervisor):
            await c.close()


async def _renew_body(client: Client, password: str, **device: Any) -> dict[str, Any]:
    keys = DeviceKeys.generate()
    device_id = device.pop("device_id", "renewed-device")
    return {
        "password": password,
        "device": {
            "device_id": device_id,
            "dh_pub": b64encode(keys.public.dh_pub),
            "sig_pub": b64encode(keys.public.sig_pub),
            "registration_sig": b64encode(sign_registration(keys, client.user_id, device_id)),
        }
        | device,
        "backup": {"v": 1, "nonce": b64encode(b"\x01" * 12), "blob": b64encode(b"\x02" * 48)},
    }


async def test_renewal_retires_the_old_key_and_the_new_one_restores(
    e2ee_server: ServerInfo,
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    counsellor = await Client.login(e2ee_server.http, "c1", PASSWORD)
    phone = await Client.login(e2ee_server.http, "b1", PASSWORD)
    restored: Client | None = None
    renewed: Client | None = None
    try:
        await counsellor.connect()
        await phone.connect()
        await counsellor.send_text(conv, "Bonjour, voici l'historique")
        await wait_text(phone, "Bonjour, voici l'historique")
        old_key = await phone.backup()
        old_backup = await phone.request("GET", "/api/keys/backup")

        # A wrong password changes nothing.
        with pytest.raises(ClientError) as exc:
            await phone.request("POST", "/api/keys/backup/renew", await _renew_body(phone, "x"))
        assert (exc.value.status, exc.value.code) == (403, "wrong_password")
        assert await phone.request("GET", "/api/keys/backup") == old_backup
        assert await _ids(phone) == [phone.device_id]

        old_device = phone.device_id
        renewed, new_key = await renew_recovery(phone, PASSWORD, name="Nouvelle identité")
        assert new_key != old_key
        # The device the old key opens is removed: its session is gone, it gets no new epoch.
        async with httpx.AsyncClient(base_url=e2ee_server.http) as http:
            r = await http.get("/api/me", headers={"authorization": f"Bearer {phone.token}"})
            assert r.status_code == 401
        assert await _ids(renewed) == [renewed.device_id]
        members = (await counsellor.devices(conv))["members"]
        assert old_device not in {d["device_id"] for g in members for d in g["devices"]}
        # The old recovery key no longer opens the server's backup.
        with pytest.raises(DecryptError):
            await Client.restore(e2ee_server.http, "b1", PASSWORD, old_key)
        # The new one restores the whole history on a fresh device.
        restored = await Client.restore(e2ee_server.http, "b1", PASSWORD, new_key)
        await restored.connect()
        texts = [m.text for m in await restored.all_history(conv)]
        assert "Bonjour, voici l'historique" in texts
        # And what is written after the renewal reaches it (the next epoch is wrapped for it).
        await counsellor.send_text(conv, "Après le renouvellement")
        await wait_text(restored, "Après le renouvellement")
    finally:
        for c in (counsellor, phone, renewed, restored):
            if c is not None:
                await c.close()


async def test_renewal_from_another_device_removes_the_backed_up_one(
    e2ee_server: ServerInfo,
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    counsellor = await Client.login(e2ee_server.http, "c1", PASSWORD)
    first = await Client.login(e2ee_server.http, "b1", PASSWORD)
    second = await Client.login(e2ee_server.http, "b1", PASSWORD)
    renewed: Client | None = None
    try:
        await counsellor.ensure_epoch(conv)
        await first.backup()
        # The second phone waits for the counsellor: it cannot vouch for a new identity.
        with pytest.raises(ClientError) as exc:
            await second.request(
                "POST", "/api/keys/backup/renew", await _renew_body(second, PASSWORD)
            )
        assert (exc.value.status, exc.value.code) == (403, "device_not_approved")
        await counsellor.approve_device(conv, second.device_id)
        await second.fetch_envelopes(conv)
        renewed, _ = await renew_recovery(second, PASSWORD)
        # The phone whose keys the old backup held is removed with the old key.
        assert await _ids(renewed) == [renewed.device_id]
        with pytest.raises(ClientError) as gone:
            await first.request("GET", "/api/me")
        assert gone.value.status == 401
    finally:
        for c in (counsellor, first, second, renewed):
            if c is not None:
                await c.close()


@asynccontextmanager
async def _two_phones(server: ServerInfo) -> AsyncIterator[tuple[Client, Client]]:
    """b1's two approved phones: ``first``, whose keys the backup holds, and ``second``
    (c1 made the conversation's epoch and approved it); all closed at the end."""
    w = await seed_world(server)
    conv = w.conv["b1"]
    counsellor = await Client.login(server.http, "c1", PASSWORD)
    first = await Client.login(server.http, "b1", PASSWORD)
    second = await Client.login(server.http, "b1", PASSWORD)
    try:
        await counsellor.ensure_epoch(conv)
        await first.backup()
        await counsellor.approve_device(conv, second.device_id)
        yield first, second
    finally:
        for c in (counsellor, first, second):
            await c.close()


async def test_renewal_whose_backup_fails_removes_the_old_device_and_leaves_no_orphan(
    e2ee_server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old key's device is removed before the backup is stored; when storing the
    # backup fails, the new device is removed again: a retry removes nothing it should not.
    async with _two_phones(e2ee_server) as (first, second):
        old_backup = await second.request("GET", "/api/keys/backup")
        store = e2ee_server.services.devices._key_store

        async def failing_put_backup(*args: Any) -> bool:
            raise StoreUnavailable("injected: backup write failed")

        monkeypatch.setattr(store, "swap_backup", failing_put_backup)
        with pytest.raises(ClientError) as exc:
            await second.request(
                "POST", "/api/keys/backup/renew", await _renew_body(second, PASSWORD)
            )
        assert exc.value.status == 503
        # The device the old backup held is gone, and the new one is not left approved.
        assert await _ids(second) == [second.device_id]
        renewed = await store.get_device("renewed-device")
        assert renewed is not None
        assert renewed.removed_at is not None
        with pytest.raises(ClientError) as gone:
            await first.request("GET", "/api/me")
        assert gone.value.status == 401
        monkeypatch.undo()
        assert await second.request("GET", "/api/keys/backup") == old_backup


async def test_renewal_bad_input(e2ee_server: ServerInfo) -> None:
    await seed_world(e2ee_server)
    phone = await Client.login(e2ee_server.http, "b1", PASSWORD)
    unregistered = await Client.login(e2ee_server.http, "b1", PASSWORD, register=False)
    try:
        before = await _ids(phone)
        good = await _renew_body(phone, PASSWORD)
        cases: list[tuple[Client, Any, int, str]] = [
            (phone, {"password": PASSWORD}, 400, "missing_field"),
            (phone, good | {"extra": 1}, 400, "unknown_field"),
            (phone, await _renew_body(phone, PASSWORD, device_id="a b"), 400, "invalid_field"),
            (phone, await _renew_body(phone, PASSWORD, name="\n"), 400, "invalid_field"),
            (phone, good | {"backup": {"v": 2, "nonce": "a", "blob": "b"}}, 400, "invalid_field"),
            (
                phone,
                await _renew_body(phone, PASSWORD, registration_sig=b64encode(b"\0" * 64)),
                422,
                "bad_registration_signature",
            ),
            (
                phone,
                await _renew_body(phone, PASSWORD, device_id=phone.device_id),
                422,
                "device_exists",
            ),
            (unregistered, good, 403, "device_not_approved"),
        ]
        for who, body, status, code in cases:
            with pytest.raises(ClientError) as exc:
                await who.request("POST", "/api/keys/backup/renew", body)
            assert (exc.value.status, exc.value.code) == (status, code), body
        assert await _ids(phone) == before
        with pytest.raises(ClientError) as none:
            await phone.request("GET", "/api/keys/backup")
        assert none.value.status == 404
    finally:
        await phone.close()
        await unregistered.close()


async def test_concurrent_renewals_one_wins_the_other_is_refused_and_leaves_no_orphan(
    e2ee_server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two devices of one person renew at once: both read the same old backup. The first
    # to store its backup wins; the other gets 409 renewal_conflict, its new device is
    # removed again, and the backup is the winner's (its key was not silently replaced).
    async with _two_phones(e2ee_server) as (_, second):
        store = e2ee_server.services.devices._key_store
        real_get = store.get_backup
        winner = await _renew_body(second, PASSWORD, device_id="winner-device")
        raced: list[bool] = []

        async def get_then_race(user_id: str) -> Any:
            found = await real_get(user_id)
            if not raced:  # the loser's read; the winner renews before the loser writes
                raced.append(True)
                await second.request("POST", "/api/keys/backup/renew", winner)
            return found

        monkeypatch.setattr(store, "get_backup", get_then_race)
        with pytest.raises(ClientError) as exc:
            await second.request(
                "POST",
                "/api/keys/backup/renew",
                await _renew_body(second, PASSWORD, device_id="loser-device"),
            )
        monkeypatch.undo()
        assert (exc.value.status, exc.value.code) == (409, "renewal_conflict")
        stored = await store.get_backup(second.user_id)
        assert stored is not None
        assert stored["device_id"] == "winner-device"
        loser = await store.get_device("loser-device")
        assert loser is not None
        assert loser.removed_at is not None
        assert sorted(await _ids(second)) == sorted([second.device_id, "winner-device"])
