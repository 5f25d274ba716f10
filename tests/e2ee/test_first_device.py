"""A beneficiary's first device is trusted because it proved the activation code.

Concurrent registrations end with exactly one trusted device (issue #10, point 1):
the one whose session came from the activation code, whichever registers first;
for an account given a password (no code), the first atomic claim.
"""

from __future__ import annotations

import asyncio

from chat_server.sdk import Client
from tests.helpers import PASSWORD, ServerInfo, seed_world


async def _trusted(counsellor: Client, conv: str, phones: list[Client]) -> list[str]:
    """The phones the conversation lists as trusted (the others must be pending)."""
    info = await counsellor.devices(conv)
    mine = {p.device_id for p in phones}
    listed = {d["device_id"] for g in info["members"] for d in g["devices"]} & mine
    assert listed | (set(info["pending"]) & mine) == mine  # every phone is registered
    assert not listed & set(info["pending"])
    return sorted(listed)


async def test_the_device_that_proved_the_code_is_the_one_trusted(
    e2ee_server: ServerInfo,
) -> None:
    await seed_world(e2ee_server)
    c = await Client.login(e2ee_server.http, "c1", PASSWORD)
    phones: list[Client] = []
    try:
        for trial in range(2):
            created = await c.request(
                "POST",
                "/api/beneficiaries",
                {"login": f"jeune.{trial}", "display_name": f"Jeune {trial}"},
            )
            conv = created["conversation_id"]
            code = created["activation_code"]
            first = await Client.activate(e2ee_server.http, code, PASSWORD, register=False)
            others = [
                await Client.login(e2ee_server.http, f"jeune.{trial}", PASSWORD, register=False)
                for _ in range(5)
            ]
            phones += [first, *others]
            if trial == 0:
                # All six at once.
                await asyncio.gather(*(p.register_device() for p in [*others, first]))
            else:
                # The five others even register before the one that proved the code.
                await asyncio.gather(*(p.register_device() for p in others))
                await first.register_device()
            assert await _trusted(c, conv, [first, *others]) == [first.device_id]
    finally:
        await c.close()
        for p in phones:
            await p.close()


async def test_six_concurrent_first_registrations_trust_exactly_one(
    e2ee_server: ServerInfo,
) -> None:
    """Accounts given a password (no activation code): the first claim wins, atomically."""
    w = await seed_world(e2ee_server)
    counsellors = {"b2": "c1"}
    phones: list[Client] = []
    try:
        for ben, counsellor_login in counsellors.items():
            c = await Client.login(e2ee_server.http, counsellor_login, PASSWORD)
            phones.append(c)
            six = [
                await Client.login(e2ee_server.http, ben, PASSWORD, register=False)
                for _ in range(6)
            ]
            phones += six
            await asyncio.gather(*(p.register_device() for p in six))
            assert len(await _trusted(c, w.conv[ben], six)) == 1
    finally:
        for p in phones:
            await p.close()
