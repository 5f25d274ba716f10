"""Accounts over a real server: argon2id, activation, sessions, logout, throttling, admin CLI."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from chat_server import admin
from chat_server.accounts import AccountService
from chat_server.crypto.passwords import Passwords
from chat_server.crypto.tokens import token_hash
from chat_server.rooms.models import Role
from chat_server.services import build_services
from chat_server.settings import Settings
from tests.conftest import serve
from tests.helpers import (
    PASSWORD,
    REPO_ROOT,
    ServerInfo,
    WsClient,
    api,
    clean_env,
    close_code,
    dump_database,
    raw_ws,
)

NEW_PASSWORD = "a brand new passphrase"


async def _counsellor(server: ServerInfo, login: str = "c1") -> str:
    """A counsellor with a password; returns a session token from a real login."""
    acc = server.services.accounts
    st = await acc.create_structure("Mission Locale", "mission_locale", ("CEJ",))
    await acc.create_user(Role.COUNSELLOR, login, "Claire", st.id, PASSWORD)
    r = await api(server, "POST", "/api/login", json_body={"login": login, "password": PASSWORD})
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


async def test_password_hash_is_argon2id_and_rehashed_when_parameters_change(
    server: ServerInfo,
) -> None:
    svc = server.services
    weak = Passwords(time_cost=1, memory_cost=8192, parallelism=1)
    old_service = AccountService(svc.accounts_store, svc.messages, weak, svc.settings, time.time)
    st = await old_service.create_structure("ML", "mission_locale", ("CEJ",))
    user = await old_service.create_user(Role.COUNSELLOR, "claire", "Claire", st.id, PASSWORD)
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert "m=8192,t=1,p=1" in user.password_hash

    # The server's hasher uses the current parameters: a login upgrades the stored hash.
    r = await api(server, "POST", "/api/login", json_body={"login": "Claire", "password": PASSWORD})
    assert r.status_code == 200, r.text
    stored = await svc.accounts_store.get_user(user.id)
    assert stored is not None
    assert stored.password_hash is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert "m=19456,t=2,p=1" in stored.password_hash
    assert stored.password_hash != user.password_hash
    # ... and the password still works with the new hash, which is not rehashed again.
    r = await api(server, "POST", "/api/login", json_body={"login": "claire", "password": PASSWORD})
    assert r.status_code == 200
    again = await svc.accounts_store.get_user(user.id)
    assert again is not None
    assert again.password_hash == stored.password_hash
    r = await api(server, "POST", "/api/login", json_body={"login": "claire", "password": "nope"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"


async def test_beneficiary_activation_is_one_time(server: ServerInfo) -> None:
    token = await _counsellor(server)
    before = time.time()
    r = await api(
        server,
        "POST",
        "/api/beneficiaries",
        token,
        {"login": "ines", "display_name": "Inès", "programme": "CEJ"},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    code = created["activation_code"]
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    ttl = server.settings.activation_ttl_hours * 3600
    assert before + ttl - 5 <= created["activation_expires"] <= time.time() + ttl + 5
    assert created["user"]["role"] == "beneficiary"
    assert created["conversation_id"]

    # No password yet: login is impossible.
    r = await api(server, "POST", "/api/login", json_body={"login": "ines", "password": PASSWORD})
    assert r.status_code == 401
    # A password refused by the policy does not burn the code.
    r = await api(server, "POST", "/api/activate", json_body={"code": code, "password": "short"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_input"

    # Typed loosely (lower case, no dashes) it still matches.
    loose = code.replace("-", "").lower()
    r = await api(
        server,
        "POST",
        "/api/activate",
        json_body={"code": loose, "password": NEW_PASSWORD, "device_id": "phone-1"},
    )
    assert r.status_code == 200, r.text
    session = r.json()
    assert session["user"]["id"] == created["user"]["id"]
    assert session["device_id"] == "phone-1"
    me = await api(server, "GET", "/api/me", session["token"])
    assert me.status_code == 200
    assert me.json()["user"]["login"] == "ines"
    assert me.json()["device_id"] == "phone-1"

    # The code cannot be used twice; the new password works.
    r = await api(
        server, "POST", "/api/activate", json_body={"code": code, "password": NEW_PASSWORD}
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    r = await api(
        server, "POST", "/api/login", json_body={"login": "ines", "password": NEW_PASSWORD}
    )
    assert r.status_code == 200


async def test_expired_activation_code_is_refused(server: ServerInfo) -> None:
    svc = server.services
    token = await _counsellor(server)
    r = await api(
        server, "POST", "/api/beneficiaries", token, {"login": "lucas", "display_name": "Lucas"}
    )
    assert r.status_code == 201
    user_id = r.json()["user"]["id"]
    # The same service, but its clock says the code was issued longer ago than the TTL.
    ttl = svc.settings.activation_ttl_hours * 3600
    past = AccountService(
        svc.accounts_store, svc.messages, Passwords(), svc.settings, lambda: time.time() - ttl - 60
    )
    code, expires = await past.reset_activation(user_id)
    assert expires < time.time()
    r = await api(
        server, "POST", "/api/activate", json_body={"code": code, "password": NEW_PASSWORD}
    )
    assert r.status_code == 401
    user = await svc.accounts_store.get_user(user_id)
    assert user is not None
    assert user.password_hash is None
    # Issuing a new code replaces the old one, which stops working.
    fresh, _ = await svc.accounts.reset_activation(user_id)
    newer, _ = await svc.accounts.reset_activation(user_id)
    r = await api(
        server, "POST", "/api/activate", json_body={"code": fresh, "password": NEW_PASSWORD}
    )
    assert r.status_code == 401
    r = await api(
        server, "POST", "/api/activate", json_body={"code": newer, "password": NEW_PASSWORD}
    )
    assert r.status_code == 200


async def test_tokens_and_codes_are_stored_only_hashed(server: ServerInfo) -> None:
    token = await _counsellor(server)
    r = await api(
        server, "POST", "/api/beneficiaries", token, {"login": "yas", "display_name": "Yasmine"}
    )
    code = r.json()["activation_code"]
    pending = await dump_database(server.settings.mongodb_url or "", server.settings.mongodb_db)
    assert code not in pending
    assert code.replace("-", "") not in pending
    r = await api(
        server, "POST", "/api/activate", json_body={"code": code, "password": NEW_PASSWORD}
    )
    ben_token = r.json()["token"]
    everything = await dump_database(server.settings.mongodb_url or "", server.settings.mongodb_db)
    for secret in (token, ben_token, PASSWORD, NEW_PASSWORD):
        assert secret not in everything
    # What is stored is the SHA-256 of the token (the session key).
    assert token_hash(token) in everything
    assert token_hash(ben_token) in everything


async def test_logout_and_logout_all(server: ServerInfo) -> None:
    token_a = await _counsellor(server)
    sessions = []
    for device in ("laptop", "desk"):
        r = await api(
            server,
            "POST",
            "/api/login",
            json_body={"login": "c1", "password": PASSWORD, "device_id": device},
        )
        sessions.append(r.json()["token"])
    token_b, token_c = sessions
    for t in (token_a, token_b, token_c):
        assert (await api(server, "GET", "/api/me", t)).status_code == 200

    r = await api(server, "POST", "/api/logout", token_a)
    assert r.status_code == 200
    r = await api(server, "GET", "/api/me", token_a)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    assert (await api(server, "GET", "/api/me", token_b)).status_code == 200

    # A revoked token cannot open a WebSocket either.
    ws = await raw_ws(server)
    await ws.send(json.dumps({"type": "auth", "token": token_a}))
    assert await close_code(ws) == 4001
    await ws.close()

    r = await api(server, "POST", "/api/logout-all", token_b)
    assert r.status_code == 200
    assert r.json()["sessions_ended"] == 2
    for t in (token_b, token_c):
        assert (await api(server, "GET", "/api/me", t)).status_code == 401
    # Without any token: 401, not a crash.
    assert (await api(server, "POST", "/api/logout")).status_code == 401
    assert (await api(server, "GET", "/api/me", "not-a-token")).status_code == 401


async def test_connected_websocket_of_a_revoked_session_is_refused_on_reconnect(
    server: ServerInfo,
) -> None:
    token = await _counsellor(server)
    ws = await WsClient.connect(server, token)
    assert ws.auth["user"]["login"] == "c1"
    await ws.close()
    await api(server, "POST", "/api/logout", token)
    raw = await raw_ws(server)
    await raw.send(json.dumps({"type": "auth", "token": token}))
    err = await asyncio.wait_for(raw.recv(), 5)
    assert '"unauthenticated"' in str(err)
    assert await close_code(raw) == 4001
    await raw.close()


async def test_login_is_throttled_after_repeated_failures(settings: Settings) -> None:
    async with serve(replace(settings, login_max_failures=3)) as server:
        await _counsellor(server, "claire")
        acc = server.services.accounts
        structure = await acc.create_structure("Autre", "mission_locale", ())
        await acc.create_user(Role.COUNSELLOR, "other", "Other", structure.id, PASSWORD)
        for _ in range(3):
            r = await api(
                server, "POST", "/api/login", json_body={"login": "claire", "password": "wrong pw"}
            )
            assert r.status_code == 401
        # Even the right password is refused now, with a distinct code.
        r = await api(
            server, "POST", "/api/login", json_body={"login": "CLAIRE", "password": PASSWORD}
        )
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "too_many_attempts"
        # Other accounts are not affected.
        r = await api(
            server, "POST", "/api/login", json_body={"login": "other", "password": PASSWORD}
        )
        assert r.status_code == 200
        # Unknown logins are throttled the same way (no account enumeration by status).
        for _ in range(3):
            r = await api(
                server, "POST", "/api/login", json_body={"login": "ghost", "password": "x" * 12}
            )
            assert r.status_code == 401
        r = await api(
            server, "POST", "/api/login", json_body={"login": "ghost", "password": "x" * 12}
        )
        assert r.status_code == 429


async def test_successful_login_resets_the_failure_count(settings: Settings) -> None:
    async with serve(replace(settings, login_max_failures=3)) as server:
        await _counsellor(server, "claire")
        for _ in range(2):
            r = await api(
                server, "POST", "/api/login", json_body={"login": "claire", "password": "wrong pw"}
            )
            assert r.status_code == 401
        r = await api(
            server, "POST", "/api/login", json_body={"login": "claire", "password": PASSWORD}
        )
        assert r.status_code == 200
        for _ in range(2):
            r = await api(
                server, "POST", "/api/login", json_body={"login": "claire", "password": "wrong pw"}
            )
            assert r.status_code == 401
        r = await api(
            server, "POST", "/api/login", json_body={"login": "claire", "password": PASSWORD}
        )
        assert r.status_code == 200


async def test_login_taken_and_role_checks(server: ServerInfo) -> None:
    token = await _counsellor(server)
    body = {"login": "dup", "display_name": "Dup"}
    assert (await api(server, "POST", "/api/beneficiaries", token, body)).status_code == 201
    r = await api(server, "POST", "/api/beneficiaries", token, {**body, "login": "DUP"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "login_taken"
    r = await api(server, "POST", "/api/beneficiaries", token, {**body, "login": "bad login!"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_login"


# ---------------------------------------------------------------- admin command line


def test_admin_cli_creates_structure_and_counsellor(
    mongo_url: str,
    db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONGODB_URL", mongo_url)
    monkeypatch.setenv("MONGODB_DB", db_name)
    monkeypatch.setenv("REQUIRE_E2EE", "false")
    assert admin.main(["create-structure", "ML de Lyon", "--kind", "mission_locale"]) == 0
    out = capsys.readouterr().out
    m = re.fullmatch(r"structure ([0-9a-f]{32}) ML de Lyon\n", out)
    assert m is not None, out
    structure_id = m.group(1)
    argv = ["create-user", "--role", "counsellor", "--login", "c.martin", "--name", "Claire"]
    argv += ["--structure", structure_id, "--password", PASSWORD]
    assert admin.main(argv) == 0
    assert re.fullmatch(r"counsellor [0-9a-f]{32} c\.martin\n", capsys.readouterr().out)
    assert admin.main(["list-structures"]) == 0
    assert structure_id in capsys.readouterr().out
    # The same login again, or an unknown structure: exit status 2 and a message.
    assert admin.main(argv) == 2
    assert "taken" in capsys.readouterr().err
    argv[argv.index(structure_id)] = "0" * 32
    argv[argv.index("c.martin")] = "c.other"
    assert admin.main(argv) == 2
    assert "structure" in capsys.readouterr().err

    async def check() -> None:
        svc = await build_services(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
        try:
            login = await svc.accounts.login("c.martin", PASSWORD, None)
            assert login.user.role is Role.COUNSELLOR
            assert login.user.structure_id == structure_id
        finally:
            await svc.close()

    asyncio.run(check())


def test_chat_admin_demo_prints_logins(mongo_url: str, db_name: str) -> None:
    env = clean_env(MONGODB_URL=mongo_url, MONGODB_DB=db_name, PYTHONFAULTHANDLER="1")
    chat_admin = Path(REPO_ROOT) / ".venv" / "bin" / "chat-admin"
    cmd = (
        ["timeout", "-s", "ABRT", "15", str(chat_admin)]
        if chat_admin.exists()
        else ["python", "-m", "chat_server.admin"]
    )
    first = subprocess.run(
        [*cmd, "demo"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == 0, first.stderr
    for login in ("conseiller.demo", "superviseur.demo", "jeune1.demo", "jeune3.demo"):
        assert login in first.stdout
    assert admin.DEMO_PASSWORD in first.stdout
    # Seeding twice creates nothing new and says so.
    second = subprocess.run(
        [*cmd, "demo"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0
    assert "already seeded" in second.stdout

    async def check() -> None:
        svc = await build_services(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
        try:
            login = await svc.accounts.login("jeune1.demo", admin.DEMO_PASSWORD, None)
            convs = await svc.conversations.summaries(login.user)
            assert len(convs) == 1
            counsellor = await svc.accounts_store.find_user_by_login("conseiller.demo")
            assert counsellor is not None
            assert convs[0]["counsellor_id"] == counsellor.id
        finally:
            await svc.close()

    asyncio.run(check())
