"""The portfolio dashboard over a real server (issue #15, point 2): who sees which rows (a
counsellor their own beneficiaries, a supervisor their structure, per counsellor), what each
column says with seeded data, bad input, and the CSV export (server-visible fields only)."""

from __future__ import annotations

import csv
import io
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from chat_server.settings import Settings
from tests.conftest import serve
from tests.helpers import ServerInfo, World, WsClient, api, fast_world

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "texte que le serveur ne doit jamais recopier"


class Env:
    def __init__(self, server: ServerInfo, world: World, seeded: dict[str, Any]) -> None:
        self.server = server
        self.w = world
        self.seeded = seeded


async def _send(
    server: ServerInfo, token: str, conv: str, msg_type: str = "text", meta: Any = None
) -> dict[str, Any]:
    c = await WsClient.connect(server, token)
    try:
        extra: dict[str, Any] = {"msg_type": msg_type}
        if meta is not None:
            extra["meta"] = meta
        ack = await c.send_text(conv, SECRET, **extra)
        assert ack["type"] == "ack", ack
        return ack
    finally:
        await c.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        mongodb_url=mongo_url,
        mongodb_db="t_portfolio_" + secrets.token_hex(4),
        data_dir=Path(tmp_path_factory.mktemp("portfolio")),
        require_e2ee=False,
        rate_burst=10_000,
    )
    async with serve(settings) as server:
        w = await fast_world(server.services)
        now = int(time.time())
        # b1 wrote twice, nobody answered: waiting since the first.
        first = await _send(server, w.b1.token, w.conv["b1"])
        await _send(server, w.b1.token, w.conv["b1"])
        # b2: the counsellor wrote last; one overdue action, one due later, an appointment.
        await _send(server, w.b2.token, w.conv["b2"])
        await _send(server, w.c1.token, w.conv["b2"])
        late = {"item": "late-action-1", "event": "created", "status": "todo", "due": now - 120}
        later = {"item": "later-action", "event": "created", "status": "todo", "due": now + 86400}
        meeting = {"item": "meeting-0001", "event": "created", "starts_at": now + 2 * 86400}
        await _send(server, w.c1.token, w.conv["b2"], "action", late)
        await _send(server, w.c1.token, w.conv["b2"], "action", later)
        await _send(server, w.c1.token, w.conv["b2"], "appointment", meeting)
        r = await api(
            server, "POST", f"/api/conversations/{w.conv['b2']}/flag", w.c1.token, {"flagged": True}
        )
        assert r.status_code == 200, r.text
        yield Env(server, w, {"b1_first_at": first["created_at"], "meeting": now + 2 * 86400})


async def _rows(env: Env, token: str | None, query: str = "") -> Any:
    return await api(env.server, "GET", "/api/portfolio" + query, token)


def _by_login(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["beneficiary"]["login"]: r for r in body["rows"]}


async def test_counsellor_sees_own_beneficiaries_with_their_columns(env: Env) -> None:
    r = await _rows(env, env.w.c1.token)
    assert r.status_code == 200, r.text
    rows = _by_login(r.json())
    assert set(rows) == {"b1", "b2"}
    b1, b2 = rows["b1"], rows["b2"]
    assert b1["waiting_since"] == pytest.approx(env.seeded["b1_first_at"])
    assert b1["unread_counsellor"] == 2
    assert b1["overdue_actions"] == 0
    assert b1["next_appointment"] is None
    assert b1["last_app_activity"] >= env.seeded["b1_first_at"] - 1
    assert b2["waiting_since"] is None
    assert b2["open_actions"] == 2
    assert b2["overdue_actions"] == 1
    assert b2["next_appointment"] == env.seeded["meeting"]
    assert b2["unread_beneficiary"] == 4  # the counsellor's four
    assert b2["flagged"] is True
    assert b1["flagged"] is False
    assert b1["counsellor"] == {"id": env.w.c1.user.id, "display_name": "Claire Un"}
    assert SECRET not in r.text
    # c2 follows b3 only.
    r = await _rows(env, env.w.c2.token)
    assert set(_by_login(r.json())) == {"b3"}


async def test_supervisor_sees_the_structure_per_counsellor(env: Env) -> None:
    w = env.w
    r = await _rows(env, w.sup.token)
    assert r.status_code == 200, r.text
    rows = _by_login(r.json())
    assert set(rows) == {"b1", "b2", "b3"}
    assert rows["b3"]["counsellor"]["id"] == w.c2.user.id
    r = await _rows(env, w.sup.token, f"?counsellor={w.c2.user.id}")
    assert set(_by_login(r.json())) == {"b3"}
    r = await _rows(env, w.other_sup.token)
    assert r.status_code == 200
    assert r.json()["rows"] == []
    r = await _rows(env, w.other_sup.token, f"?counsellor={w.c1.user.id}")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("actor", "query", "status", "code"),
    [
        ("b1", "", 403, "forbidden"),
        ("c1", "?counsellor=c2", 403, "forbidden"),
        ("sup", "?counsellor=b1", 404, "not_found"),
        ("sup", "?counsellor=unknown0000", 404, "not_found"),
        ("sup", "?counsellor=../etc", 422, "invalid_field"),
        (None, "", 401, "unauthenticated"),
    ],
)
async def test_refusals(env: Env, actor: str | None, query: str, status: int, code: str) -> None:
    w = env.w
    ids = {"c2": w.c2.user.id, "b1": w.b1.user.id}
    for name, user_id in ids.items():
        query = query.replace(f"={name}", f"={user_id}")
    token = {"b1": w.b1.token, "c1": w.c1.token, "sup": w.sup.token}.get(actor or "")
    for path in ("/api/portfolio", "/api/portfolio.csv"):
        r = await api(env.server, "GET", path + query, token)
        assert r.status_code == status, (path, r.text)
        assert r.json()["error"]["code"] == code


async def test_csv_export(env: Env) -> None:
    w = env.w
    svc = env.server.services
    await svc.accounts.create_beneficiary(w.c2.user, "formule", "=HYPERLINK(1)", "CEJ")
    r = await api(env.server, "GET", "/api/portfolio.csv", w.sup.token)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    assert r.content.startswith("\ufeff".encode())
    assert SECRET not in r.text
    table = list(csv.reader(io.StringIO(r.text.lstrip("\ufeff")), delimiter=";"))
    header, rows = table[0], table[1:]
    assert header[0] == "Bénéficiaire"
    assert "Démarches en retard" in header
    by_login = {row[1]: dict(zip(header, row, strict=True)) for row in rows}
    assert set(by_login) == {"b1", "b2", "b3", "formule"}
    assert by_login["b2"]["Démarches en retard"] == "1"
    assert by_login["b2"]["Prioritaire"] == "oui"
    assert by_login["b1"]["En attente de réponse depuis"] != ""
    assert by_login["formule"]["Bénéficiaire"] == "'=HYPERLINK(1)"
    # A counsellor's export has their own rows only.
    r = await api(env.server, "GET", "/api/portfolio.csv", w.c1.token)
    logins = [row[1] for row in csv.reader(io.StringIO(r.text.lstrip("\ufeff")), delimiter=";")]
    assert sorted(logins[1:]) == ["b1", "b2"]
