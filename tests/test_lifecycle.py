"""The data lifecycle with a controllable clock: retention, erasure, archives.

Every test runs against the embedded engine and the in-memory store, through
the real services (``build_services`` with a clock the test moves by years).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from chat_server import protocol as p
from chat_server.crypto.tokens import token_hash
from chat_server.lifecycle.retention import DAY, TOMBSTONE_DAYS, RetentionReport
from chat_server.lifecycle.service import ArchiveExpired, NotArchived
from chat_server.rooms.errors import (
    ConversationArchived,
    ConversationDeleted,
    Forbidden,
    InvalidInput,
    Unauthenticated,
    WrongPassword,
)
from chat_server.rooms.models import Device, Role, User
from chat_server.services import Services, build_services
from chat_server.settings import Settings
from chat_server.throttle import login_key
from tests.helpers import (
    PASSWORD,
    ServerInfo,
    WsClient,
    api,
    close_code,
    dump_database,
    fast_world,
)

T0 = 1_800_000_000.0  # 2027-01-15
YEAR = 365 * DAY


class Clock:
    """A clock the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Env:
    svc: Services
    clock: Clock
    settings: Settings
    counsellor: User
    supervisor: User
    beneficiary: User
    conv: str

    async def everything(self) -> str:
        """Every record the store holds, as one string (to search for an id)."""
        if self.settings.store == "memory":
            return repr(dataclasses.asdict(self.svc.database._state))  # type: ignore[attr-defined]
        assert self.settings.mongodb_url is not None
        return await dump_database(self.settings.mongodb_url, self.settings.mongodb_db)


@pytest.fixture(params=["embedded", "memory"])
async def env(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Env]:
    clock = Clock(T0)
    s = replace(settings, retention_job="off", retention_batch_size=50)
    if request.param == "memory":
        s = replace(s, store="memory")
    svc = await build_services(s, clock=clock)
    try:
        acc = svc.accounts
        st = await acc.create_structure("Mission Locale Test", "mission_locale", ("CEJ",))
        counsellor = await acc.create_user(Role.COUNSELLOR, "c1", "Claire Un", st.id, PASSWORD)
        sup = await acc.create_user(Role.SUPERVISOR, "sup", "Sophie Sup", st.id, PASSWORD)
        nb = await acc.create_beneficiary(counsellor, "b1", "Inès Moreau", "CEJ")
        await acc.set_password(nb.user.id, PASSWORD)
        yield Env(svc, clock, s, counsellor, sup, nb.user, nb.conversation.id)
    finally:
        await svc.close()


async def _send(env: Env, user: User, text: str) -> int:
    frame = p.MessageSend(
        id="f" + secrets.token_hex(3),
        conversation=env.conv,
        client_id=secrets.token_hex(8),
        msg_type="text",
        body=text.encode(),
    )
    stored, _ = await env.svc.conversations.send(user, "dev-" + user.login, frame, "")
    return stored.seq


async def _types(env: Env, user: User) -> list[str]:
    page, _ = await env.svc.conversations.history(user, env.conv, None, 0, 200)
    return [m.msg_type for m in page]


async def _run(env: Env) -> RetentionReport:
    return await env.svc.retention.run_once()


# ---------------------------------------------------------------- inactivity


async def test_inactive_account_is_warned_30_days_before_then_deleted(env: Env) -> None:
    acc = env.svc.accounts
    await acc.login("b1", PASSWORD, None)
    await acc.login("c1", PASSWORD, None)
    await _send(env, env.beneficiary, "bonjour")
    warn_at = 2 * YEAR - 30 * DAY
    env.clock.advance(warn_at - DAY)
    await acc.login("c1", PASSWORD, None)  # the counsellor keeps working
    await acc.login("sup", PASSWORD, None)
    report = await _run(env)
    assert report.warned == 0
    assert report.inactive_erased == 0

    env.clock.advance(2 * DAY)  # 701 days without a login
    report = await _run(env)
    assert report.warned == 1
    page, _ = await env.svc.conversations.history(env.counsellor, env.conv, None, 0, 200)
    notice = [m for m in page if m.msg_type == "system.inactivity_notice"]
    assert len(notice) == 1
    # Warned a day after the earliest date: still 30 days of notice.
    assert notice[0].meta["deletion_at"] == pytest.approx(T0 + 2 * YEAR + DAY, abs=1)
    assert notice[0].meta["days"] == 30
    assert (await _run(env)).warned == 0  # warned once

    env.clock.advance(29 * DAY)  # one day before the deletion date
    assert (await _run(env)).inactive_erased == 0
    env.clock.advance(2 * DAY)
    report = await _run(env)
    assert report.inactive_erased == 1
    assert await env.svc.accounts_store.get_user(env.beneficiary.id) is None
    with pytest.raises(Unauthenticated):
        await acc.login("b1", PASSWORD, None)
    conv = await env.svc.messages.get_conversation(env.conv)
    assert conv is not None
    assert conv.deleted_at == env.clock.now
    assert await env.svc.messages.last_seq(env.conv) == 0
    # A second run removes nothing more.
    again = await _run(env)
    assert again.removed() == 0
    assert again.warned == 0


async def test_a_login_after_the_warning_keeps_the_account(env: Env) -> None:
    env.clock.advance(2 * YEAR - 10 * DAY)
    assert (await _run(env)).warned >= 1
    user = await env.svc.accounts_store.get_user(env.beneficiary.id)
    assert user is not None
    assert user.notice_at == env.clock.now
    await env.svc.accounts.login("b1", PASSWORD, None)
    user = await env.svc.accounts_store.get_user(env.beneficiary.id)
    assert user is not None
    assert user.notice_at is None
    assert user.active_at == env.clock.now
    env.clock.advance(60 * DAY)
    report = await _run(env)
    assert await env.svc.accounts_store.get_user(env.beneficiary.id) is not None
    assert report.inactive_erased == 1  # the supervisor, who follows nobody
    assert report.kept_staff == 1  # the counsellor, who follows b1


async def test_staff_who_still_follow_someone_are_kept(env: Env) -> None:
    await env.svc.accounts.login("b1", PASSWORD, None)
    env.clock.advance(2 * YEAR - 30 * DAY + DAY)
    await env.svc.accounts.login("b1", PASSWORD, None)
    assert (await _run(env)).warned == 2  # the counsellor and the supervisor
    env.clock.advance(31 * DAY)
    await env.svc.accounts.login("b1", PASSWORD, None)
    report = await _run(env)
    assert report.kept_staff == 1  # the counsellor follows b1
    assert report.inactive_erased == 1  # the supervisor follows nobody
    assert await env.svc.accounts_store.get_user(env.counsellor.id) is not None
    assert await env.svc.accounts_store.get_user(env.supervisor.id) is None


# ---------------------------------------------------------------- expiring records


async def test_expired_sessions_codes_and_counters_disappear(env: Env) -> None:
    acc, store = env.svc.accounts, env.svc.accounts_store
    login = await acc.login("b1", PASSWORD, None)
    nb = await acc.create_beneficiary(env.counsellor, "b2", "Lucas Petit", "CEJ")
    with pytest.raises(Unauthenticated):
        await acc.login("b1", "not the password", None)
    key = login_key("b1")
    assert await store.login_failures(key, env.clock.now, 900) == 1

    env.clock.advance(env.settings.activation_ttl_hours * 3600 + 1)
    report = await _run(env)
    assert report.activations == 2  # b2's and b1's (never used: b1 got a password)
    assert report.login_failures >= 1
    assert report.sessions == 0
    assert nb.activation_code is not None
    assert await store.consume_activation(token_hash(nb.activation_code), 0.0) is None
    assert await store.login_failures(key, 0.0, 10 * YEAR) == 0
    assert await store.get_session(token_hash(login.token), 0.0) is not None

    # A process of a multi-process deployment that stopped, with a counter of b1's.
    presence = env.svc.database.presence()
    await presence.process_alive("gone", env.clock.now)
    await presence.connected(env.beneficiary.id, "gone", 1, env.clock.now)
    env.clock.advance(env.settings.session_ttl_days * DAY)
    report = await _run(env)
    assert report.sessions == 1
    assert report.processes == 2
    assert await store.get_session(token_hash(login.token), 0.0) is None
    assert (await _run(env)).removed() == 0


async def test_purges_work_in_bounded_batches(env: Env) -> None:
    from chat_server.crypto.tokens import new_token
    from chat_server.rooms.models import Session

    for _ in range(120):
        await env.svc.accounts_store.add_session(
            Session(token_hash(new_token()), env.counsellor.id, "d", T0, T0 + 10)
        )
    env.clock.advance(60)
    first = await _run(env)
    assert first.sessions == 50
    assert (await _run(env)).sessions == 50
    assert (await _run(env)).sessions == 20
    assert (await _run(env)).sessions == 0


async def test_the_job_runs_on_its_own_timer_until_the_process_stops(env: Env) -> None:
    """What ``RETENTION_JOB=in-process`` starts: a run every interval, stopped with the process."""
    from chat_server.crypto.tokens import new_token
    from chat_server.lifecycle.retention import run_periodically
    from chat_server.rooms.models import Session

    store = env.svc.accounts_store
    hashes = [token_hash(new_token()) for _ in range(3)]
    for h in hashes:
        await store.add_session(Session(h, env.counsellor.id, "d", T0, T0 + 10))
    env.clock.advance(60)  # expired: only the job removes them (nobody calls run_once here)

    async def left() -> int:
        return sum([await store.get_session(h, 0.0) is not None for h in hashes])

    assert await left() == 3
    stopping = asyncio.Event()
    task = asyncio.create_task(
        run_periodically(env.svc.retention, 0.02, stopping, first_delay=0.01)
    )
    try:
        for _ in range(500):  # at most ~5 s
            if await left() == 0:
                break
            await asyncio.sleep(0.01)
        assert await left() == 0
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)
    assert task.exception() is None

# ---------------------------------------------------------------- deletion by the beneficiary


async def test_deletion_leaves_only_pseudonymised_audit_records(env: Env) -> None:
    svc = env.svc
    await svc.accounts.login("b1", PASSWORD, "phone-1")
    await _send(env, env.beneficiary, "mon CV")
    await _send(env, env.counsellor, "merci")
    await svc.conversations.mark_read(env.beneficiary, env.conv, 2)
    await svc.key_store.put_backup(env.beneficiary.id, {"ct": "x"}, env.clock.now)
    c2 = await svc.accounts.create_user(
        Role.COUNSELLOR, "c2", "Cédric Deux", env.counsellor.structure_id
    )
    await svc.keys.transfer(env.supervisor, env.conv, c2.id, "permanent", None)
    await svc.keys.transfer(env.supervisor, env.conv, env.counsellor.id, "permanent", None)
    await svc.lifecycle.archive(env.counsellor, env.conv, "emploi")
    await svc.lifecycle.restore(env.supervisor, env.conv)
    before = await svc.lifecycle_store.audit_involving(env.beneficiary.id)
    assert before == []  # transfers name counsellors, not the beneficiary

    with pytest.raises(WrongPassword):
        await svc.lifecycle.delete_own_account(env.beneficiary, "wrong password!")
    assert await svc.accounts_store.get_user(env.beneficiary.id) is not None
    with pytest.raises(Forbidden):
        await svc.lifecycle.delete_own_account(env.counsellor, PASSWORD)
    await svc.lifecycle.delete_own_account(env.beneficiary, PASSWORD)

    dump = await env.everything()
    assert env.beneficiary.id not in dump
    assert "Inès Moreau" not in dump
    audit = await svc.key_store.audit_for(env.conv)
    deleted = [r for r in audit if r.action == "account.deleted"]
    assert len(deleted) == 1
    pseudonym = deleted[0].actor_id
    assert pseudonym.startswith("deleted-")
    assert deleted[0].details["account"] == pseudonym
    assert deleted[0].details["cause"] == "self"
    assert [r.action for r in audit] == [
        "transfer.permanent",
        "transfer.permanent",
        "conversation.archived",
        "conversation.restored",
        "account.deleted",
    ]
    conv = await svc.messages.get_conversation(env.conv)
    assert conv is not None
    assert conv.beneficiary_id == pseudonym
    assert conv.deleted_at is not None
    summaries = await svc.conversations.summaries(env.counsellor)
    assert [s["deleted_at"] for s in summaries] == [conv.deleted_at]
    with pytest.raises(ConversationDeleted):
        await _send(env, env.counsellor, "vous êtes là ?")
    with pytest.raises(ConversationDeleted):
        await svc.keys.transfer(env.supervisor, env.conv, c2.id, "permanent", None)
    # The tombstone goes after its own period; audit records after theirs.
    env.clock.advance(TOMBSTONE_DAYS * DAY + 1)
    assert (await _run(env)).tombstones == 1
    assert await svc.messages.get_conversation(env.conv) is None
    env.clock.advance(5 * YEAR)
    await svc.accounts.login("c1", PASSWORD, None)
    report = await _run(env)
    assert report.audit == 5
    assert await svc.key_store.audit_for(env.conv) == []


async def test_staff_audit_records_are_pseudonymised_when_staff_go(env: Env) -> None:
    svc = env.svc
    c2 = await svc.accounts.create_user(
        Role.COUNSELLOR, "c2", "Cédric Deux", env.counsellor.structure_id
    )
    await svc.keys.transfer(env.supervisor, env.conv, c2.id, "permanent", None)
    await svc.keys.transfer(env.supervisor, env.conv, env.counsellor.id, "permanent", None)
    assert len(await svc.lifecycle_store.audit_involving(c2.id)) == 2
    erasure = await svc.lifecycle.eraser.erase(c2, "retention", "inactivity")
    assert erasure is not None
    assert await svc.lifecycle_store.audit_involving(c2.id) == []
    renamed = await svc.lifecycle_store.audit_involving(erasure.pseudonym)
    assert [r.action for r in renamed] == [
        "transfer.permanent",
        "transfer.permanent",
        "account.deleted",
    ]
    assert renamed[0].details["to"] == erasure.pseudonym
    assert renamed[1].details["from"] == erasure.pseudonym
    assert renamed[0].actor_id == env.supervisor.id


async def test_an_interrupted_erasure_is_finished_by_the_next_run(env: Env) -> None:
    await _send(env, env.beneficiary, "bonjour")
    lc = env.svc.lifecycle_store
    pseudonym = await lc.begin_erasure(env.beneficiary.id, "deleted-0123456789abcdef")
    assert pseudonym == "deleted-0123456789abcdef"
    # A second begin keeps the first pseudonym; the account can no longer log in.
    assert await lc.begin_erasure(env.beneficiary.id, "deleted-ffff") == pseudonym
    with pytest.raises(Unauthenticated):
        await env.svc.accounts.login("b1", PASSWORD, None)
    report = await _run(env)
    assert report.erasures_resumed == 1
    assert await env.svc.accounts_store.get_user(env.beneficiary.id) is None
    conv = await env.svc.messages.get_conversation(env.conv)
    assert conv is not None
    assert conv.beneficiary_id == pseudonym
    assert (await _run(env)).erasures_resumed == 0


# ---------------------------------------------------------------- archives


async def test_archive_is_read_only_restored_by_a_supervisor_then_deleted(env: Env) -> None:
    svc = env.svc
    await _send(env, env.beneficiary, "bonjour")
    with pytest.raises(InvalidInput):
        await svc.lifecycle.archive(env.counsellor, env.conv, "vacances")
    with pytest.raises(Forbidden):
        await svc.lifecycle.archive(env.beneficiary, env.conv, "emploi")
    conv = await svc.lifecycle.archive(env.counsellor, env.conv, "formation")
    assert conv.archive_reason == "formation"
    assert conv.archived_by == env.counsellor.id
    with pytest.raises(ConversationArchived):
        await svc.lifecycle.archive(env.counsellor, env.conv, "emploi")
    for user in (env.beneficiary, env.counsellor):
        with pytest.raises(ConversationArchived):
            await _send(env, user, "encore là ?")
    types = await _types(env, env.beneficiary)
    assert types[-1] == "system.archived"
    (summary,) = await svc.conversations.summaries(env.beneficiary)
    assert summary["archived"]["reason"] == "formation"
    # History stays readable (read-only, not hidden).
    assert "text" in types

    with pytest.raises(Forbidden):
        await svc.lifecycle.restore(env.counsellor, env.conv)
    await svc.lifecycle.restore(env.supervisor, env.conv)
    with pytest.raises(NotArchived):
        await svc.lifecycle.restore(env.supervisor, env.conv)
    assert await _send(env, env.beneficiary, "de retour") > 0
    assert (await _types(env, env.counsellor))[-2:] == ["system.restored", "text"]

    await svc.lifecycle.archive(env.counsellor, env.conv, "demenagement")
    env.clock.advance(2 * YEAR - DAY)
    await svc.accounts.login("b1", PASSWORD, None)  # not inactive: the archive decides
    await svc.accounts.login("c1", PASSWORD, None)
    assert (await _run(env)).archives_erased == 0
    env.clock.advance(2 * DAY)
    with pytest.raises(ArchiveExpired):
        await svc.lifecycle.restore(env.supervisor, env.conv)
    report = await _run(env)
    assert report.archives_erased == 1
    assert await svc.accounts_store.get_user(env.beneficiary.id) is None
    audit = await svc.key_store.audit_for(env.conv)
    assert [r.action for r in audit][-1] == "account.deleted"
    assert audit[-1].details["cause"] == "archive_expired"
    assert (await _run(env)).removed() == 0


async def test_report_counts_are_named() -> None:
    r = RetentionReport(sessions=2, warned=1, kept_staff=3)
    assert r.removed() == 2
    d: dict[str, Any] = r.as_dict()
    assert d["kept_staff"] == 3


# ---------------------------------------------------------------- over HTTP and WebSocket


async def test_archive_delete_and_restore_over_the_api(server: ServerInfo) -> None:
    world = await fast_world(server.services)
    await server.services.accounts.set_password(world.b1.user.id, PASSWORD)
    conv = world.conv["b1"]
    b1 = await WsClient.connect(server, world.b1.token)
    c1 = await WsClient.connect(server, world.c1.token)
    try:
        r = await api(
            server, "POST", f"/api/conversations/{conv}/archive", world.c1.token, {"reason": "nope"}
        )
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "invalid_input"
        r = await api(
            server,
            "POST",
            f"/api/conversations/{conv}/archive",
            world.b1.token,
            {"reason": "emploi"},
        )
        assert r.status_code == 403
        r = await api(
            server,
            "POST",
            f"/api/conversations/{conv}/archive",
            world.c1.token,
            {"reason": "emploi"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["archived"]["reason"] == "emploi"
        update = await b1.expect("conversation.updated")
        assert update["conversation"]["archived"]["reason"] == "emploi"
        created = await b1.expect("message.created")
        assert created["message"]["msg_type"] == "system.archived"
        refused = await b1.send_text(conv, "bonjour ?")
        assert refused["type"] == "error"
        assert refused["code"] == "conversation_archived"
        refused = await c1.send_text(conv, "bonjour ?")
        assert refused["code"] == "conversation_archived"
        r = await api(server, "POST", f"/api/conversations/{conv}/restore", world.other_sup.token)
        assert r.status_code == 403  # another structure's supervisor
        r = await api(server, "POST", f"/api/conversations/{conv}/restore", world.sup.token)
        assert r.status_code == 200, r.text
        r = await api(server, "POST", f"/api/conversations/{conv}/restore", world.sup.token)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "not_archived"
        assert (await b1.send_text(conv, "me revoilà"))["type"] == "ack"

        r = await api(
            server,
            "POST",
            "/api/account/delete",
            world.b1.token,
            {"password": "pas le bon mot de passe"},
        )
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "wrong_password"
        r = await api(server, "POST", "/api/account/delete", world.b1.token, {})
        assert r.json()["error"]["code"] == "missing_field"
        r = await api(server, "POST", "/api/account/delete", world.c1.token, {"password": PASSWORD})
        assert r.status_code == 403
        r = await api(server, "POST", "/api/account/delete", world.b1.token, {"password": PASSWORD})
        assert r.status_code == 200, r.text
        gone = await c1.expect("conversation.updated", timeout=5)
        while gone["conversation"].get("deleted_at") is None:
            gone = await c1.expect("conversation.updated", timeout=5)
        assert gone["conversation"]["beneficiary_id"].startswith("deleted-")
        assert await close_code(b1.ws) is not None
        r = await api(server, "GET", "/api/me", world.b1.token)
        assert r.status_code == 401
        r = await api(server, "GET", "/api/conversations", world.c1.token)
        (item,) = [c for c in r.json()["conversations"] if c["id"] == conv]
        assert item["deleted_at"] is not None
        assert item["unread"] == 0
        refused = await c1.send_text(conv, "vous êtes là ?")
        assert refused["code"] == "conversation_deleted"
    finally:
        await b1.close()
        await c1.close()


def test_chat_admin_runs_the_retention_job_once(
    mongo_url: str,
    db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from chat_server import admin

    monkeypatch.setenv("MONGODB_URL", mongo_url)
    monkeypatch.setenv("MONGODB_DB", db_name)
    assert admin.main(["retention"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "sessions 0" in lines
    assert "inactive_erased 0" in lines
    assert len(lines) == len(RetentionReport().as_dict())


def test_chat_admin_exports_what_the_server_holds_about_an_account(
    mongo_url: str,
    db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio
    import json

    from chat_server import admin

    settings = Settings(mongodb_url=mongo_url, mongodb_db=db_name, require_e2ee=False)

    async def seed() -> tuple[str, str]:
        svc = await build_services(replace(settings, retention_job="off"))
        try:
            acc = svc.accounts
            st = await acc.create_structure("ML", "mission_locale", ("CEJ",))
            c = await acc.create_user(Role.COUNSELLOR, "c1", "Claire Un", st.id, PASSWORD)
            nb = await acc.create_beneficiary(c, "b1", "Inès Moreau", "CEJ")
            await acc.set_password(nb.user.id, PASSWORD)
            await acc.login("b1", PASSWORD, "phone-1")
            phone = Device("phone-1", nb.user.id, b"1" * 32, b"2" * 32, b"3", 1.0, name="Mon tél")
            await svc.key_store.add_device(phone)
            for user, text in ((nb.user, "texte secret"), (c, "réponse")):
                frame = p.MessageSend(
                    id="f1",
                    conversation=nb.conversation.id,
                    client_id=secrets.token_hex(8),
                    msg_type="text",
                    body=text.encode(),
                )
                await svc.conversations.send(user, "dev", frame, "")
            await svc.lifecycle.archive(c, nb.conversation.id, "emploi")
            return nb.user.id, nb.conversation.id
        finally:
            await svc.close()

    user_id, conv_id = asyncio.run(seed())
    monkeypatch.setenv("MONGODB_URL", mongo_url)
    monkeypatch.setenv("MONGODB_DB", db_name)
    assert admin.main(["export-account", "B1"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["account"]["id"] == user_id
    assert data["account"]["display_name"] == "Inès Moreau"
    assert data["structure"]["name"] == "ML"
    assert [s["device_id"] for s in data["sessions"]] == ["phone-1"]
    assert [(d["id"], d["name"]) for d in data["devices"]] == [("phone-1", "Mon tél")]
    (conv,) = data["conversations"]
    assert conv["id"] == conv_id
    assert conv["archived"]["reason"] == "emploi"
    assert [m["type"] for m in conv["messages"]] == ["text", "text", "system.archived"]
    assert conv["messages"][0]["sender"] == user_id
    assert "texte secret" not in out  # bodies are not the server's to read
    assert "chiffré de bout en bout" in data["message_bodies"]
    assert [a["action"] for a in data["audit"]] == []  # the archive names the counsellor
    assert "argon2" in data["account"]["password"]
    assert admin.main(["export-account", "personne"]) == 2
    assert "personne" in capsys.readouterr().err

    # An erasure request.
    with pytest.raises(SystemExit):
        admin.main(["delete-account", "b1"])  # --yes is required
    capsys.readouterr()
    assert admin.main(["delete-account", "c1", "--yes"]) == 2
    assert "still follows beneficiaries" in capsys.readouterr().err
    assert admin.main(["delete-account", "b1", "--yes"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"erased b1 \(audit records now name deleted-[0-9a-f]{16}\)\n", out), out
    assert admin.main(["export-account", "b1"]) == 2
    assert admin.main(["delete-account", "b1", "--yes"]) == 2

    async def audit() -> list[str]:
        svc = await build_services(replace(settings, retention_job="off"))
        try:
            return [str(r.details.get("cause", "")) for r in await svc.key_store.audit_for(conv_id)]
        finally:
            await svc.close()

    assert asyncio.run(audit())[-1] == "request"
