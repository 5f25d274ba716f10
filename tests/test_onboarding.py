"""Onboarding and account help over a real server: a counsellor issues a new activation code
(re-issue before activation, password reset after), audited, with a system event; who may;
French-facing error codes for bad logins (issue #15, point 3)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from chat_server.settings import Settings
from tests.conftest import serve
from tests.helpers import PASSWORD, ServerInfo, World, api, fast_world

pytestmark = pytest.mark.asyncio(loop_scope="module")

NEW_PASSWORD = "un tout nouveau mot de passe"


class Env:
    def __init__(self, server: ServerInfo, world: World) -> None:
        self.server = server
        self.w = world


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        mongodb_url=mongo_url,
        mongodb_db="t_onboarding_" + secrets.token_hex(4),
        data_dir=Path(tmp_path_factory.mktemp("onboarding")),
        require_e2ee=False,
    )
    async with serve(settings) as server:
        yield Env(server, await fast_world(server.services))


async def _issue(env: Env, token: str | None, conv: str, body: Any = None) -> Any:
    return await api(env.server, "POST", f"/api/conversations/{conv}/activation", token, body)


async def _activate(env: Env, code: str, password: str = NEW_PASSWORD) -> Any:
    return await api(
        env.server, "POST", "/api/activate", json_body={"code": code, "password": password}
    )


async def _system_events(env: Env, token: str, conv: str) -> list[dict[str, Any]]:
    r = await api(env.server, "GET", f"/api/conversations/{conv}/messages?limit=200", token)
    assert r.status_code == 200, r.text
    return [m for m in r.json()["messages"] if m["msg_type"] == "system.activation_issued"]


@pytest.mark.parametrize(
    ("actor", "status", "code"),
    [
        ("beneficiary_own", 403, "forbidden"),
        ("beneficiary_other", 403, "not_member"),
        ("counsellor_other", 403, "not_member"),
        ("supervisor_same", 403, "not_member"),
        ("supervisor_other", 403, "not_member"),
        ("unauthenticated", 401, "unauthenticated"),
    ],
)
async def test_only_the_current_counsellor_issues_a_code(
    env: Env, actor: str, status: int, code: str
) -> None:
    w = env.w
    account = {
        "beneficiary_own": w.b1,
        "beneficiary_other": w.b2,
        "counsellor_other": w.c2,
        "supervisor_same": w.sup,
        "supervisor_other": w.other_sup,
    }.get(actor)
    conv = w.conv["b1"]
    before = await env.server.services.key_store.audit_for(conv)
    r = await _issue(env, account.token if account else None, conv)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert await env.server.services.key_store.audit_for(conv) == before
    assert await _system_events(env, w.c1.token, conv) == []


async def test_unknown_conversation_and_oversized_body(env: Env) -> None:
    r = await _issue(env, env.w.c1.token, "no-such-conversation")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_member")
    r = await api(
        env.server,
        "POST",
        f"/api/conversations/{env.w.conv['b2']}/activation",
        env.w.c1.token,
        content=b"x" * 5000,
    )
    assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")


async def test_reissue_kills_the_old_code_then_reset_replaces_the_password(env: Env) -> None:
    svc = env.server.services
    w = env.w
    conv = w.conv["b2"]
    user = w.b2.user
    # Before activation: a re-issue. The code made at creation dies.
    first_code, _ = await svc.accounts.reset_activation(user.id)
    r = await _issue(env, w.c1.token, conv, {})
    assert r.status_code == 200, r.text
    issued = r.json()
    assert issued["kind"] == "reissue"
    assert issued["user"]["login"] == user.login
    assert issued["activation_expires"] > 0
    assert "password_hash" not in issued["user"]
    r = await _activate(env, first_code)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthenticated")
    r = await _activate(env, issued["activation_code"], PASSWORD)
    assert r.status_code == 200, r.text

    # After activation: a password reset. The password stays until the code is used.
    r = await _issue(env, w.c1.token, conv)
    assert r.status_code == 200, r.text
    reset = r.json()
    assert reset["kind"] == "password_reset"
    assert reset["activation_code"] != issued["activation_code"]
    login = {"login": user.login, "password": PASSWORD}
    assert (await api(env.server, "POST", "/api/login", json_body=login)).status_code == 200
    r = await _activate(env, issued["activation_code"])  # the used code stays dead
    assert r.status_code == 401
    r = await _activate(env, reset["activation_code"])
    assert r.status_code == 200, r.text
    assert (await api(env.server, "POST", "/api/login", json_body=login)).status_code == 401
    login["password"] = NEW_PASSWORD
    assert (await api(env.server, "POST", "/api/login", json_body=login)).status_code == 200

    audit = [a for a in await svc.key_store.audit_for(conv) if a.action.startswith("activation.")]
    assert [a.action for a in audit] == ["activation.reissued", "activation.password_reset"]
    assert all(a.actor_id == w.c1.user.id for a in audit)
    assert all(a.details["beneficiary"] == user.id for a in audit)
    events = await _system_events(env, w.b2.token, conv)
    assert [e["meta"]["kind"] for e in events] == ["reissue", "password_reset"]
    assert all(e["sender"] == "system" and e["meta"]["by"] == w.c1.user.id for e in events)
    assert events[1]["meta"]["expires_at"] == int(reset["activation_expires"])
    # The code itself is in no system event and no audit record.
    for item in [*events, *audit]:
        assert reset["activation_code"] not in repr(item)
        assert issued["activation_code"] not in repr(item)


async def test_archived_conversation_refused(env: Env) -> None:
    w = env.w
    r = await api(
        env.server,
        "POST",
        f"/api/conversations/{w.conv['b3']}/archive",
        w.c2.token,
        {"reason": "emploi"},
    )
    assert r.status_code == 200, r.text
    r = await _issue(env, w.c2.token, w.conv["b3"])
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conversation_archived")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"login": "bad login!", "display_name": "X"}, "invalid_login"),
        ({"login": "é" * 65, "display_name": "X"}, "invalid_field"),
        ({"login": "nom.valide", "display_name": "   "}, "invalid_display_name"),
    ],
)
async def test_bad_beneficiary_names_have_their_own_codes(
    env: Env, body: dict[str, str], code: str
) -> None:
    r = await api(env.server, "POST", "/api/beneficiaries", env.w.c1.token, body)
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["code"] == code
