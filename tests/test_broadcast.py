"""Broadcast over a real server (issue #15, point 1): lists of a counsellor's own
beneficiaries only; bad input (unknown beneficiary, another counsellor's beneficiary, empty
list, too long a name) stores nothing; another counsellor's list or record is not found;
beneficiaries and supervisors have none; the broadcast record links each copy to its stored
message by client id and reports pending / delivered / read; a permanent transfer removes a
beneficiary from the list, a temporary one marks them absent; erasure forgets them."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from chat_server.settings import Settings
from chat_server.tools.broadcast import KEPT_BROADCASTS, MAX_RECIPIENTS
from tests.conftest import serve
from tests.helpers import ServerInfo, World, WsClient, api, fast_world

pytestmark = pytest.mark.asyncio(loop_scope="module")


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
        mongodb_db="t_broadcast_" + secrets.token_hex(4),
        data_dir=Path(tmp_path_factory.mktemp("broadcast")),
        require_e2ee=False,
        rate_burst=10_000,
    )
    async with serve(settings) as server:
        yield Env(server, await fast_world(server.services))


async def _create(env: Env, token: str | None, body: Any) -> Any:
    return await api(env.server, "POST", "/api/broadcast-lists", token, body)


def _members(lst: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["beneficiary"]["login"]: m for m in lst["members"]}


async def _lists(env: Env, token: str) -> list[dict[str, Any]]:
    r = await api(env.server, "GET", "/api/broadcast-lists", token)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["lists"]
    return found


async def test_create_rename_change_delete(env: Env) -> None:
    w = env.w
    b1, b2 = w.b1.user.id, w.b2.user.id
    r = await _create(env, w.c1.token, {"name": "  Atelier   CV ", "members": [b1, b2, b1]})
    assert r.status_code == 201, r.text
    lst = r.json()["list"]
    assert lst["name"] == "Atelier CV"
    members = _members(lst)
    assert set(members) == {"b1", "b2"}
    assert members["b1"]["conversation_id"] == w.conv["b1"]
    assert members["b1"]["state"] == "present"
    assert members["b1"]["absent_until"] is None
    r = await api(
        env.server,
        "PATCH",
        f"/api/broadcast-lists/{lst['id']}",
        w.c1.token,
        {"name": "Atelier CV — décembre", "members": [b2]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["list"]["name"] == "Atelier CV — décembre"
    assert set(_members(r.json()["list"])) == {"b2"}
    r = await api(
        env.server, "PATCH", f"/api/broadcast-lists/{lst['id']}", w.c1.token, {"name": "Juste"}
    )
    assert r.status_code == 200, r.text
    assert set(_members(r.json()["list"])) == {"b2"}  # members kept
    assert [x["id"] for x in await _lists(env, w.c1.token)] == [lst["id"]]
    r = await api(env.server, "DELETE", f"/api/broadcast-lists/{lst['id']}", w.c1.token)
    assert r.status_code == 200, r.text
    assert await _lists(env, w.c1.token) == []


@pytest.mark.parametrize(
    ("members", "name", "status", "code"),
    [
        ("unknown", "Liste", 422, "unknown_beneficiary"),
        ("other", "Liste", 422, "unknown_beneficiary"),
        ("mixed", "Liste", 422, "unknown_beneficiary"),
        ("counsellor", "Liste", 422, "unknown_beneficiary"),
        ("empty", "Liste", 422, "empty_list"),
        ("b1", "   ", 422, "invalid_input"),
        ("b1", "x" * 81, 422, "invalid_input"),
        ("bad-id", "Liste", 400, "invalid_field"),
    ],
)
async def test_bad_list_input_stores_nothing(
    env: Env, members: str, name: str, status: int, code: str
) -> None:
    w = env.w
    ids = {
        "unknown": ["f" * 32],
        "other": [w.b3.user.id],  # c2's beneficiary
        "mixed": [w.b1.user.id, w.b3.user.id],
        "counsellor": [w.c2.user.id],
        "empty": [],
        "b1": [w.b1.user.id],
        "bad-id": ["not an id!"],
    }[members]
    r = await _create(env, w.c1.token, {"name": name, "members": ids})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    assert await _lists(env, w.c1.token) == []


async def test_list_body_shape(env: Env) -> None:
    w = env.w
    for body, code in (
        ({"name": "X"}, "missing_field"),
        ({"name": "X", "members": [w.b1.user.id], "owner": "x"}, "unknown_field"),
        ({"name": 3, "members": []}, "invalid_field"),
    ):
        r = await _create(env, w.c1.token, body)
        assert (r.status_code, r.json()["error"]["code"]) == (400, code), r.text
    r = await api(env.server, "POST", "/api/broadcast-lists", w.c1.token, content=b"[not json")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_json")
    assert await _lists(env, w.c1.token) == []


async def test_only_the_owner_counsellor(env: Env) -> None:
    w = env.w
    r = await _create(env, w.c1.token, {"name": "Privée", "members": [w.b1.user.id]})
    assert r.status_code == 201, r.text
    list_id = r.json()["list"]["id"]
    # Another counsellor: not found, nothing changed.
    assert await _lists(env, w.c2.token) == []
    for method, body in (("PATCH", {"name": "Volée"}), ("DELETE", None)):
        r = await api(env.server, method, f"/api/broadcast-lists/{list_id}", w.c2.token, body)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = await api(env.server, "PATCH", "/api/broadcast-lists/nope", w.c1.token, {"name": "X"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    # A broadcast naming another counsellor's list: not found.
    r = await api(
        env.server,
        "POST",
        "/api/broadcasts",
        w.c2.token,
        {"list_id": list_id, "copies": [{"conversation_id": w.conv["b3"], "client_id": "x1"}]},
    )
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    # Beneficiaries and supervisors have no lists or broadcasts; strangers are not
    # authenticated.
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/api/broadcast-lists", None),
        ("POST", "/api/broadcast-lists", {"name": "X", "members": [w.b1.user.id]}),
        ("PATCH", f"/api/broadcast-lists/{list_id}", {"name": "X"}),
        ("DELETE", f"/api/broadcast-lists/{list_id}", None),
        ("GET", "/api/broadcasts", None),
        (
            "POST",
            "/api/broadcasts",
            {"copies": [{"conversation_id": w.conv["b1"], "client_id": "x2"}]},
        ),
    ]
    for token in (w.b1.token, w.sup.token):
        for method, path, body in calls:
            r = await api(env.server, method, path, token, body)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden"), r.text
    for method, path in (("GET", "/api/broadcast-lists"), ("GET", "/api/broadcasts")):
        r = await api(env.server, method, path, None)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthenticated")
    assert [x["name"] for x in await _lists(env, w.c1.token)] == ["Privée"]
    await api(env.server, "DELETE", f"/api/broadcast-lists/{list_id}", w.c1.token)


async def _broadcasts(env: Env, token: str) -> list[dict[str, Any]]:
    r = await api(env.server, "GET", "/api/broadcasts", token)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["broadcasts"]
    return found


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("none", 422, "no_recipients"),
        ("other", 422, "unknown_beneficiary"),
        ("unknown", 422, "unknown_beneficiary"),
        ("twice", 422, "invalid_input"),
        ("too_many", 422, "invalid_input"),
        ("bad_client_id", 400, "invalid_field"),
        ("missing", 400, "missing_field"),
    ],
)
async def test_bad_broadcast_input_stores_nothing(
    env: Env, case: str, status: int, code: str
) -> None:
    w = env.w
    before = await _broadcasts(env, w.c1.token)

    def copy(conv: str, cid: str = "") -> dict[str, str]:
        return {"conversation_id": conv, "client_id": cid or secrets.token_hex(8)}

    bodies: dict[str, Any] = {
        "none": {"copies": []},
        "other": {"copies": [copy(w.conv["b1"]), copy(w.conv["b3"])]},
        "unknown": {"copies": [copy("f" * 32)]},
        "twice": {"copies": [copy(w.conv["b1"]), copy(w.conv["b1"])]},
        "too_many": {"copies": [copy(w.conv["b1"])] * (MAX_RECIPIENTS + 1)},
        "bad_client_id": {"copies": [copy(w.conv["b1"], "no spaces allowed")]},
        "missing": {"copies": [{"conversation_id": w.conv["b1"]}]},
    }
    body = bodies[case]
    r = await api(env.server, "POST", "/api/broadcasts", w.c1.token, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert await _broadcasts(env, w.c1.token) == before
    for limit in ("0", "%C2%B2", "101"):  # %C2%B2: a superscript two, a digit int() refuses
        r = await api(env.server, "GET", f"/api/broadcasts?limit={limit}", w.c1.token)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_field"), limit


async def test_record_links_copies_and_reports_read(env: Env) -> None:
    w = env.w
    ids = {"b1": "bc-" + secrets.token_hex(6), "b2": "bc-" + secrets.token_hex(6)}
    r = await _create(
        env, w.c1.token, {"name": "Les deux", "members": [w.b1.user.id, w.b2.user.id]}
    )
    assert r.status_code == 201, r.text
    list_id = r.json()["list"]["id"]
    body = {
        "list_id": list_id,
        "copies": [{"conversation_id": w.conv[k], "client_id": v} for k, v in ids.items()],
    }
    r = await api(env.server, "POST", "/api/broadcasts", w.c1.token, body)
    assert r.status_code == 201, r.text
    created = r.json()["broadcast"]
    assert created["label"] == "Les deux"
    assert created["list_id"] == list_id
    assert (created["total"], created["delivered"], created["read"]) == (2, 0, 0)
    assert {c["state"] for c in created["copies"]} == {"pending"}
    # The copies: ordinary messages, sent over the socket with the recorded client ids.
    c = await WsClient.connect(env.server, w.c1.token)
    try:
        acks = {
            k: await c.send_text(w.conv[k], "Atelier jeudi", client_id=v) for k, v in ids.items()
        }
    finally:
        await c.close()
    one = await api(env.server, "GET", f"/api/broadcasts/{created['id']}", w.c1.token)
    assert one.status_code == 200, one.text
    got = {x["beneficiary"]["id"]: x for x in one.json()["broadcast"]["copies"]}
    assert got[w.b1.user.id]["seq"] == acks["b1"]["seq"]
    assert got[w.b2.user.id]["seq"] == acks["b2"]["seq"]
    assert {x["state"] for x in got.values()} == {"delivered"}
    assert "Atelier" not in one.text
    # b1 reads it: read by 1 of 2.
    r = await api(
        env.server,
        "POST",
        f"/api/conversations/{w.conv['b1']}/read",
        w.b1.token,
        {"seq": acks["b1"]["seq"]},
    )
    assert r.status_code == 200, r.text
    (latest, *_) = await _broadcasts(env, w.c1.token)
    assert latest["id"] == created["id"]
    assert (latest["total"], latest["delivered"], latest["read"]) == (2, 2, 1)
    states = {x["beneficiary"]["login"]: x["state"] for x in latest["copies"]}
    assert states == {"b1": "read", "b2": "delivered"}
    # The seqs were stored in the record (not looked up again).
    stored = await env.server.services.database.broadcasts().get_broadcast(created["id"])
    assert stored is not None
    assert {x.seq for x in stored.copies} == {acks["b1"]["seq"], acks["b2"]["seq"]}
    # Another counsellor: not found; a copy sent under another client id stays pending.
    r = await api(env.server, "GET", f"/api/broadcasts/{created['id']}", w.c2.token)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    assert await _broadcasts(env, w.c2.token) == []
    await api(env.server, "DELETE", f"/api/broadcast-lists/{list_id}", w.c1.token)


async def test_an_edit_during_a_reads_clean_up_is_kept(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that drops someone transferred away must not overwrite an edit that landed
    between its read of the list and its clean-up (compare-and-set)."""
    w = env.w
    r = await _create(env, w.c1.token, {"name": "Course", "members": [w.b1.user.id]})
    assert r.status_code == 201, r.text
    list_id = r.json()["list"]["id"]
    store = env.server.services.broadcasts._store
    stale = await store.get_list(list_id)
    assert stale is not None
    # The list as read names someone c1 no longer follows ("gone"): the read drops them.
    # Meanwhile, an edit adds b2.
    real_lists_of = store.lists_of

    async def lists_of_then_edit(owner_id: str) -> Any:
        found = await real_lists_of(owner_id)
        if owner_id == w.c1.user.id:
            await store.update_list(list_id, "Course", [w.b1.user.id, w.b2.user.id], time.time())
            return [
                replace(x, members=(*x.members, "gone")) if x.id == list_id else x for x in found
            ]
        return found

    monkeypatch.setattr(store, "lists_of", lists_of_then_edit)
    (seen,) = await _lists(env, w.c1.token)
    assert set(_members(seen)) == {"b1"}  # what that read saw, without "gone"
    monkeypatch.undo()
    stored = await store.get_list(list_id)
    assert stored is not None
    assert stored.members == (w.b1.user.id, w.b2.user.id)  # the edit won
    (now,) = await _lists(env, w.c1.token)
    assert set(_members(now)) == {"b1", "b2"}
    await api(env.server, "DELETE", f"/api/broadcast-lists/{list_id}", w.c1.token)


async def test_pending_copies_of_old_records_are_looked_up_sparingly(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies that never reached the thread are not looked up at every read: a fresh
    record at each read, an older one once per interval, and never more than
    MAX_LOOKUPS_PER_READ look-ups for one read."""
    from chat_server.tools import broadcast as bc

    w = env.w
    service = env.server.services.broadcasts
    owner = w.c1.user.id
    old = time.time() - 3 * bc.FRESH_SECONDS
    for i in range(3):
        copies = tuple(
            bc.Copy(w.conv[k], getattr(w, k).user.id, f"never-{i}-{k}") for k in ("b1", "b2")
        )
        await service._store.add_broadcast(
            bc.Broadcast(f"old-{i}-{secrets.token_hex(4)}", owner, None, None, old + i, copies),
            KEPT_BROADCASTS,
        )
    calls: list[str] = []
    real = service._messages.message_by_client_id

    async def counted(conversation_id: str, sender_id: str, client_id: str) -> Any:
        calls.append(client_id)
        return await real(conversation_id, sender_id, client_id)

    monkeypatch.setattr(service._messages, "message_by_client_id", counted)
    monkeypatch.setattr(bc, "MAX_LOOKUPS_PER_READ", 4)
    await _broadcasts(env, w.c1.token)
    never = [c for c in calls if c.startswith("never-")]
    assert len(never) == 4  # two records' copies; the third waits for a later read
    calls.clear()
    records = await _broadcasts(env, w.c1.token)
    never = [c for c in calls if c.startswith("never-")]
    assert sorted(never) == ["never-0-b1", "never-0-b2"]  # only the one not looked up yet
    assert all(
        x["state"] == "pending" for r in records if r["id"].startswith("old-") for x in r["copies"]
    )
    calls.clear()
    await _broadcasts(env, w.c1.token)
    assert [c for c in calls if c.startswith("never-")] == []
    # A fresh record is looked up at every read.
    body = {
        "copies": [{"conversation_id": w.conv["b1"], "client_id": "fresh-" + secrets.token_hex(4)}]
    }
    r = await api(env.server, "POST", "/api/broadcasts", w.c1.token, body)
    assert r.status_code == 201, r.text
    calls.clear()
    await _broadcasts(env, w.c1.token)
    await _broadcasts(env, w.c1.token)
    assert len([c for c in calls if c.startswith("fresh-")]) == 2


async def test_records_are_capped(env: Env) -> None:
    w = env.w
    copies = [{"conversation_id": w.conv["b1"], "client_id": "cap"}]
    first = None
    for i in range(KEPT_BROADCASTS + 2):
        r = await api(env.server, "POST", "/api/broadcasts", w.c1.token, {"copies": copies})
        assert r.status_code == 201, r.text
        if i == 0:
            first = r.json()["broadcast"]["id"]
    r = await api(env.server, "GET", "/api/broadcasts?limit=100", w.c1.token)
    assert len(r.json()["broadcasts"]) == 100
    r = await api(env.server, "GET", f"/api/broadcasts/{first}", w.c1.token)
    assert r.status_code == 404


async def test_editing_a_list_keeps_those_away_on_a_temporary_transfer(
    settings: Settings,
) -> None:
    # The console sends the members it can pick (those the counsellor follows now): b2,
    # away on a temporary transfer, stays on the list through a rename or a new member list.
    async with serve(replace(settings, rate_burst=10_000)) as server:
        w = await fast_world(server.services)
        b1, b2 = w.b1.user.id, w.b2.user.id
        r = await api(
            server,
            "POST",
            "/api/broadcast-lists",
            w.c1.token,
            {"name": "Tous", "members": [b1, b2]},
        )
        assert r.status_code == 201, r.text
        path = f"/api/broadcast-lists/{r.json()['list']['id']}"
        until = time.time() + 7 * 86400
        r = await api(
            server,
            "POST",
            f"/api/conversations/{w.conv['b2']}/transfer",
            w.sup.token,
            {"to": w.c2.user.id, "mode": "temporary", "until": until},
        )
        assert r.status_code == 200, r.text
        r = await api(server, "PATCH", path, w.c1.token, {"name": "Renommée", "members": [b1]})
        assert r.status_code == 200, r.text
        members = _members(r.json()["list"])
        assert set(members) == {"b1", "b2"}
        assert members["b2"]["state"] == "absent"
        r = await api(server, "PATCH", path, w.c1.token, {"name": "Encore"})
        assert r.status_code == 200, r.text
        assert set(_members(r.json()["list"])) == {"b1", "b2"}
        # An id away on a temporary transfer is accepted too (the list as it was shown).
        r = await api(server, "PATCH", path, w.c1.token, {"members": [b2, b1]})
        assert r.status_code == 200, r.text
        assert set(_members(r.json()["list"])) == {"b1", "b2"}
        # A new list still takes only the beneficiaries followed now.
        r = await api(
            server, "POST", "/api/broadcast-lists", w.c1.token, {"name": "Non", "members": [b2]}
        )
        assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_beneficiary")


async def test_transfers_leave_or_mark_absent(env: Env) -> None:
    w = env.w
    r = await _create(env, w.c1.token, {"name": "Tous", "members": [w.b1.user.id, w.b2.user.id]})
    assert r.status_code == 201, r.text
    until = time.time() + 7 * 86400
    transfer = f"/api/conversations/{w.conv['b2']}/transfer"
    r = await api(
        env.server,
        "POST",
        transfer,
        w.sup.token,
        {"to": w.c2.user.id, "mode": "temporary", "until": until},
    )
    assert r.status_code == 200, r.text
    transfer = f"/api/conversations/{w.conv['b1']}/transfer"
    r = await api(
        env.server, "POST", transfer, w.sup.token, {"to": w.c2.user.id, "mode": "permanent"}
    )
    assert r.status_code == 200, r.text
    (lst,) = await _lists(env, w.c1.token)
    members = _members(lst)
    assert set(members) == {"b2"}
    assert members["b2"]["state"] == "absent"
    assert members["b2"]["absent_until"] == pytest.approx(until)
    stored = await env.server.services.database.broadcasts().get_list(lst["id"])
    assert stored is not None
    assert stored.members == (w.b2.user.id,)
    # Neither can be in a new list or a new broadcast of c1 now.
    r = await _create(env, w.c1.token, {"name": "Encore", "members": [w.b2.user.id]})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_beneficiary")
    r = await api(
        env.server,
        "POST",
        "/api/broadcasts",
        w.c1.token,
        {"copies": [{"conversation_id": w.conv["b1"], "client_id": "late"}]},
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_beneficiary")
    # Past records: the copy of b1 (gone for good) is "transferred", no read state.
    latest = (await _broadcasts(env, w.c1.token))[0]
    assert {x["state"] for x in latest["copies"]} == {"transferred"}
    # The erasure of b2 removes them from the list and from c1's records.
    removed = await env.server.services.broadcasts.erase_user(w.b2.user.id, [w.conv["b2"]])
    assert removed >= 1
    (lst,) = await _lists(env, w.c1.token)
    assert lst["members"] == []
    for record in await _broadcasts(env, w.c1.token):
        assert all(x["conversation_id"] != w.conv["b2"] for x in record["copies"])
    # The erasure of the owner removes their lists and records.
    await env.server.services.broadcasts.erase_user(w.c1.user.id, [])
    assert await _lists(env, w.c1.token) == []
    assert await _broadcasts(env, w.c1.token) == []
