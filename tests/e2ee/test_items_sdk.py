"""The SDK and ``chat-client`` create and show the thread's items, end to end, on a real server.

The counsellor drives the Python SDK; the young person the terminal client (a
real ``chat-client`` process). Both fold the same encrypted items; the server
only sees ``meta``; every check a device makes before sending refuses with its
code and sends nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from chat_server.sdk import Client, ClientError
from chat_server.sdk import items as it
from tests.e2ee.helpers import run_cli
from tests.helpers import PASSWORD, ServerInfo, seed_world

DAY = 86400


def _day(days: int) -> str:
    return (datetime.now() + timedelta(days=days)).strftime("%Y-%m-%d")


async def test_items_made_by_the_sdk_and_the_terminal_fold_the_same(
    e2ee_server: ServerInfo, tmp_path: Path
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    code, out = await run_cli(tmp_path, e2ee_server, "login", "b1")
    assert code == 0, out
    counsellor = await Client.login(e2ee_server.http, "c1", PASSWORD)
    await counsellor.connect()
    try:
        offer = it.offer(
            "alternance",
            "Vendeur·se en boulangerie",
            company="Boulangerie du Marché",
            place="Lyon 3e",
            url="https://emploi.example.org/offres/1",
        )
        await counsellor.send_draft(conv, offer)
        action = it.action("Mettre à jour mon CV", int(time.time()) + 7 * DAY)
        ack = await counsellor.send_draft(conv, action)
        assert action.client_id == action.meta["item"]
        assert ack["seq"] >= 2
        rdv = it.appointment(
            int(time.time()) + 3 * DAY, kind="atelier", title="Atelier CV", place="Salle 2"
        )
        await counsellor.send_draft(conv, rdv)
        action_id, rdv_id = action.meta["item"], rdv.meta["item"]

        # The young person's terminal: a line per item, decrypted on their device.
        code, out = await run_cli(tmp_path, e2ee_server, "items", conv)
        assert code == 0, out
        assert f"[démarche {action_id}] « Mettre à jour mon CV » : À faire, avant le" in out
        assert f"[rendez-vous {rdv_id}] « Atelier CV »" in out
        assert "(30 min), Salle 2" in out
        code, out = await run_cli(tmp_path, e2ee_server, "status", conv, action_id, "done")
        assert code == 0, out
        assert "« Mettre à jour mon CV » : Terminée" in out
        code, out = await run_cli(tmp_path, e2ee_server, "answer", conv, rdv_id, "oui")
        assert code == 0, out
        code, out = await run_cli(
            tmp_path, e2ee_server, "comment", conv, action_id, "C'est fait, avec le stage."
        )
        assert code == 0, out
        code, out = await run_cli(
            tmp_path,
            e2ee_server,
            "action",
            conv,
            "--title",
            "Appeler la Mission Locale",
            "--due",
            _day(5),
        )
        assert code == 0, out
        assert "« Appeler la Mission Locale » : À faire" in out
        code, out = await run_cli(
            tmp_path, e2ee_server, "offer", conv, "--kind", "immersion", "--title", "Immersion"
        )
        assert code == 0, out

        # The counsellor's SDK folds the same state; the server's view agrees.
        folded = it.fold(await counsellor.all_history(conv))
        assert folded.items[action_id].status == "done"
        assert folded.items[rdv_id].answer == "yes"
        mine = [i for i in folded.items.values() if i.creator == w.b1.user.id]
        assert [i.title for i in mine] == ["Appeler la Mission Locale"]
        server = {i["id"]: i for i in (await counsellor.items(conv))["items"]}
        assert server[action_id]["status"] == "done"
        assert server[rdv_id]["last_event"] == "answered"
        assert set(server) == set(folded.items)

        await counsellor.send_draft(
            conv,
            it.appointment(
                int(time.time()) + 4 * DAY,
                kind="atelier",
                title="Atelier CV",
                place="Salle 3",
                item=rdv_id,
            ),
        )
        await counsellor.send_draft(conv, it.appointment_cancel(rdv_id))
        # The whole thread in the terminal: one line per message and per item event.
        code, out = await run_cli(tmp_path, e2ee_server, "history", conv)
        assert code == 0, out
        lines = out.splitlines()
        assert any("Offre (Alternance) : Vendeur·se en boulangerie" in x for x in lines)
        assert any("Boulangerie du Marché · Lyon 3e" in x for x in lines)
        assert any("je serai présent·e au rendez-vous « Atelier CV »" in x for x in lines)
        assert any("Commentaire sur « Mettre à jour mon CV » : C'est fait" in x for x in lines)
        assert any("Rendez-vous « Atelier CV » annulé." in x for x in lines)
        assert any("Offre (Immersion) : Immersion" in x for x in lines)
        code, out = await run_cli(tmp_path, e2ee_server, "items", conv)
        assert f"[rendez-vous {rdv_id}] « Atelier CV »" in out
        assert "Salle 3 : annulé" in out

        # Edits and deletes of one's own messages, from the terminal.
        code, out = await run_cli(tmp_path, e2ee_server, "send", conv, "Je viens mardi")
        seq = int(out.split("seq ")[1].rstrip(")\n"))
        code, out = await run_cli(tmp_path, e2ee_server, "edit", conv, str(seq), "Mercredi")
        assert code == 0, out
        code, out = await run_cli(tmp_path, e2ee_server, "history", conv)
        assert f"[{seq}] moi: Mercredi (modifié)" in out
        code, out = await run_cli(tmp_path, e2ee_server, "delete", conv, str(seq))
        assert code == 0, out
        code, out = await run_cli(tmp_path, e2ee_server, "history", conv)
        assert f"[{seq}] moi: (message supprimé)" in out
        folded = it.fold(await counsellor.all_history(conv))
        assert seq in folded.deleted

        # The counsellor's notice, then lifted early; the terminal shows both lines.
        now = int(time.time())
        await counsellor.send_draft(conv, it.notice("Absent jeudi", now - 60, now + 2 * DAY))
        assert (await counsellor.items(conv))["notice"]["ends_at"] == now + 2 * DAY
        await counsellor.send_draft(conv, it.lift_notice())
        assert (await counsellor.items(conv))["notice"] is None
        code, out = await run_cli(tmp_path, e2ee_server, "history", conv)
        assert "Message important du " in out
        assert ": Absent jeudi" in out
        assert "Message important retiré." in out
    finally:
        await counsellor.close()


async def test_the_device_refuses_what_it_can_see_and_sends_nothing(
    e2ee_server: ServerInfo, tmp_path: Path
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    now = int(time.time())
    refusals: dict[str, Callable[[], it.Draft]] = {
        "field_too_long": lambda: it.action("x" * 121, now + DAY),
        "field_required": lambda: it.offer("emploi", "  "),
        "invalid_url": lambda: it.offer("emploi", "Offre", url="javascript:alert(1)"),
        "invalid_date": lambda: it.action("CV", now - DAY),
        "invalid_duration": lambda: it.appointment(now + DAY, duration=601, place="ici"),
        "invalid_transition": lambda: it.action_status("act-00000001", "done", "cancelled"),
        "invalid_input": lambda: it.offer("cdi", "Offre"),
    }
    for expected, build in refusals.items():
        with pytest.raises(ClientError) as caught:
            build()
        assert caught.value.code == expected
        assert caught.value.message
    with pytest.raises(ClientError, match="invalid_date"):
        it.appointment(now + 800 * DAY, place="ici")
    with pytest.raises(ClientError, match="invalid_date"):
        it.notice("Absent", now + 2 * DAY, now + DAY)

    assert (await run_cli(tmp_path, e2ee_server, "login", "b1"))[0] == 0
    before = await e2ee_server.services.messages.last_seq(conv)  # the device's arrival
    code, out = await run_cli(
        tmp_path, e2ee_server, "action", conv, "--title", "CV", "--due", _day(-3)
    )
    assert (code, out.strip()) == (2, "chat-client: invalid_date: Cette date est déjà passée.")
    code, out = await run_cli(
        tmp_path, e2ee_server, "offer", conv, "--kind", "emploi", "--title", "T" * 200
    )
    assert code == 2
    assert "field_too_long" in out
    code, out = await run_cli(tmp_path, e2ee_server, "status", conv, "nope-0000001", "done")
    assert code == 2
    assert "unknown_item" in out
    assert await e2ee_server.services.messages.last_seq(conv) == before
