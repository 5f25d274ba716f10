"""Renewing the recovery key from the Python client (``docs/security.md``,
"Renewing the recovery key"; the server side is ``chat_server.tools.devices``).

The browser does the same in ``web_client/shared/recovery.js``.
"""

from __future__ import annotations

import secrets

from chat_server.crypto.backup import (
    BackupContents,
    DeviceSecret,
    format_recovery_key,
    generate_recovery_key,
    seal_backup,
)
from chat_server.crypto.encoding import b64decode, b64encode
from chat_server.crypto.envelope import wrap_epoch_key
from chat_server.crypto.keys import DeviceKeys, sign_registration
from chat_server.sdk.client import Client, ClientError


async def renew_recovery(client: Client, password: str, name: str = "") -> tuple[Client, str]:
    """Give the account a new recovery key; return ``(new client, recovery key text)``.

    ``client`` (an approved device) makes a new device identity, sends it with
    the new backup and the password, re-wraps every epoch key it holds for it,
    logs in as the new device, and removes itself. ``client`` is closed; the
    returned client is the new device, its envelopes opened.
    """
    keys = DeviceKeys.generate()
    device_id = "r" + secrets.token_urlsafe(15)
    recovery = generate_recovery_key()
    backup = seal_backup(
        BackupContents(client.user_id, (DeviceSecret(device_id, keys.dh_priv, keys.sig_priv),), ()),
        recovery,
    )
    await client.request(
        "POST",
        "/api/keys/backup/renew",
        {
            "password": password,
            "device": {
                "device_id": device_id,
                "dh_pub": b64encode(keys.public.dh_pub),
                "sig_pub": b64encode(keys.public.sig_pub),
                "registration_sig": b64encode(sign_registration(keys, client.user_id, device_id)),
                "name": name,
            },
            "backup": backup.to_json(),
        },
    )
    listing = await client.request("GET", "/api/conversations")
    for conv in (str(c["id"]) for c in listing["conversations"]):
        await client.fetch_envelopes(conv)
        info = await client.devices(conv)
        target = next(
            (
                d
                for g in info["members"]
                for d in g["devices"]
                if d["device_id"] == device_id and b64decode(d["dh_pub"]) == keys.public.dh_pub
            ),
            None,
        )
        if target is None:
            raise ClientError("renewal_failed", f"the new device is not listed in {conv}")
        envelopes = [
            wrap_epoch_key(
                key,
                sender=client.keys,
                sender_device=client.device_id,
                recipient_device=device_id,
                recipient_dh_pub=keys.public.dh_pub,
                conversation=c,
                epoch=epoch,
            ).to_json()
            for (c, epoch), key in sorted(client.state.epoch_keys.items())
            if c == conv
        ]
        if envelopes:
            await client.request(
                "POST", f"/api/conversations/{conv}/envelopes", {"envelopes": envelopes}
            )
    renewed = await Client.login(
        client.base_url,
        str(client.user["login"]),
        password,
        keys=keys,
        device_id=device_id,
        register=False,
    )
    await renewed.request("DELETE", f"/api/devices/{client.device_id}")
    await client.close()
    await renewed.fetch_envelopes()
    return renewed, format_recovery_key(recovery)
