"""The data lifecycle in Chromium, two people: export, archive and restore, account deletion.

One server process (``--demo``, E2EE required) and one browser for the module;
the tests run in order: the counsellor (console) and a beneficiary (app) write
a 200-message thread, each exports it (decrypted on their device: JSON and a
printable page, saved as PDF), the counsellor archives the conversation and a
supervisor restores it, then the beneficiary deletes their account from the app
and the store holds nothing of them but pseudonymised audit records.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect

from tests.web.harness import (
    DEMO_PASSWORD,
    ServerProcess,
    axe_serious,
    chromium,
    run_server,
    save_screenshot,
)

pytestmark = pytest.mark.browser

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
BENEFICIARY = "Inès Moreau"
COUNSELLOR = "Karim Benali"
APP_COUNT = 120
ACTION_TITLE = "Mettre à jour mon CV avant le forum"
CONSOLE_COUNT = 80
DAY = 86400

expect.set_options(timeout=30_000)


@dataclass
class World:
    server: ServerProcess
    browser: Browser
    console_ctx: BrowserContext
    app_ctx: BrowserContext
    console: Page
    app: Page
    texts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _watch(page: Page, name: str, problems: list[str]) -> None:
    page.on("pageerror", lambda err: problems.append(f"{name} page error: {err}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"{name} CSP: {msg.text}")
            if "Content Security Policy" in msg.text
            else None
        ),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("lifecycle-server")
    with run_server(data_dir) as server, chromium() as browser:
        console_ctx = browser.new_context(
            viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris", accept_downloads=True
        )
        app_ctx = browser.new_context(
            viewport=PHONE,
            locale="fr-FR",
            timezone_id="Europe/Paris",
            has_touch=True,
            accept_downloads=True,
        )
        try:
            w = World(
                server, browser, console_ctx, app_ctx, console_ctx.new_page(), app_ctx.new_page()
            )
            _watch(w.console, "console", w.problems)
            _watch(w.app, "app", w.problems)
            yield w
        finally:
            console_ctx.close()
            app_ctx.close()


def _ack_recovery_key(page: Page) -> None:
    expect(page.locator("#recovery-key")).to_be_visible()
    page.get_by_label("J'ai noté ma clé de récupération").check()
    page.get_by_role("button", name="Continuer").click()


def _login(page: Page, url: str, login: str) -> None:
    page.goto(url)
    page.locator("#login-name").fill(login)
    page.locator("#login-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    _ack_recovery_key(page)


def _send_many(page: Page, texts: list[str]) -> None:
    """Type and send each text through the page's own composer (as fast as it takes them)."""
    page.evaluate(
        """async (texts) => {
            const input = document.querySelector("#message");
            const form = document.querySelector("#composer");
            for (const text of texts) {
                input.value = text;
                form.requestSubmit();
                await new Promise((r) => setTimeout(r, 5));
            }
        }""",
        texts,
    )


def _bubble(page: Page, cls: str, text: str) -> Any:
    return page.locator(f".{cls}", has=page.locator(".msg-text", has_text=text))


def _download_json(page: Page) -> dict[str, Any]:
    with page.expect_download() as info:
        page.locator("#export-view").get_by_role("button", name="Télécharger (JSON)").click()
    path = info.value.path()
    data: dict[str, Any] = json.loads(Path(path).read_text("utf-8"))
    return data


def test_two_people_write_a_200_message_thread(world: World) -> None:
    console, app = world.console, world.app
    _login(console, world.server.url + "/console/", "conseiller.demo")
    _login(app, world.server.url + "/app/", "jeune1.demo")
    expect(app.locator("#peer-name")).to_have_text(COUNSELLOR)
    # The app's login re-renders her row in the console (online): click once it has, not
    # during it (a click on the row being replaced opened nothing, in one run of 5).
    row = console.locator(".conv", has_text=BENEFICIARY)
    expect(row).to_contain_text("En ligne")
    row.click()
    expect(console.locator("#thread-title")).to_contain_text(BENEFICIARY)

    first = "Bonjour Inès, voici votre espace d'échange 🙂"
    console.get_by_label("Votre message").fill(first)
    console.get_by_label("Votre message").press("Enter")
    expect(_bubble(app, "msg-peer", first)).to_have_count(1)
    mine = [f"Message {i:03d} d'Inès : « question n°{i} » é à ç" for i in range(1, APP_COUNT + 1)]
    _send_many(app, mine)
    expect(_bubble(console, "msg-peer", mine[-1])).to_have_count(1, timeout=90_000)
    theirs = [f"Réponse {i:03d} du conseiller" for i in range(1, CONSOLE_COUNT)]
    _send_many(console, theirs)
    expect(_bubble(app, "msg-peer", theirs[-1])).to_have_count(1, timeout=90_000)
    world.texts = [first, *mine, *theirs]
    assert len(world.texts) == 200
    # An item too: the export names it with its title.
    console.get_by_role("button", name="Créer une démarche").click()
    dialog = console.get_by_role("dialog", name="Créer une démarche")
    dialog.get_by_label("Titre").fill(ACTION_TITLE)
    due = console.evaluate("() => new Date(Date.now() + 10 * 86400000).toISOString().slice(0, 10)")
    dialog.get_by_label("À réaliser avant le").fill(due)
    dialog.get_by_role("button", name="Créer une démarche").click()
    expect(dialog).to_be_hidden()
    expect(app.locator(".card", has_text=ACTION_TITLE)).to_be_visible()
    expect(app.locator(".msg-pending")).to_have_count(0)
    expect(console.locator(".msg-pending")).to_have_count(0)


def test_beneficiary_exports_the_whole_thread_decrypted(world: World) -> None:
    app = world.app
    app.get_by_role("button", name="Menu").click()
    app.get_by_role("button", name="Exporter ma conversation").click()
    view = app.locator("#export-view")
    expect(view).to_be_visible(timeout=60_000)
    expect(view.get_by_role("heading", name=f"Conversation avec {COUNSELLOR}")).to_be_visible()
    expect(app.locator("#screen-thread")).to_be_hidden()  # only the document is shown
    lines = view.locator(".export-text").all_text_contents()
    shown = [t for t in lines if t in world.texts]
    assert shown == world.texts
    assert any(ACTION_TITLE in t for t in lines)
    save_screenshot(app, "app-export.png")
    assert axe_serious(app) == []

    data = _download_json(app)
    assert data["format"] == "cej-chat-export"
    assert data["exported_by"]["display_name"] == BENEFICIARY
    assert data["conversation"]["with"] == COUNSELLOR
    texts = [m for m in data["messages"] if m["type"] == "text"]
    assert [m["text"] for m in texts] == world.texts
    assert all(m["verified"] for m in texts)
    (action,) = [m for m in data["messages"] if m["type"] == "action"]
    assert ACTION_TITLE in action["text"]
    assert action["content"]["title"] == ACTION_TITLE
    assert action["meta"]["event"] == "created"
    assert [m["author"] for m in texts[:2]] == [COUNSELLOR, BENEFICIARY]
    seqs = [m["seq"] for m in data["messages"]]
    assert seqs == sorted(seqs)
    assert seqs == list(range(1, len(seqs) + 1))  # every stored message, none skipped

    # The printable page, as the browser saves it as PDF.
    app.emulate_media(media="print")
    save_screenshot(app, "app-export-print.png")
    pdf = app.pdf(format="A4")
    app.emulate_media(media="screen")
    assert pdf[:5] == b"%PDF-"
    assert len(pdf) > 20_000
    view.get_by_role("button", name="Fermer").click()
    expect(view).to_be_hidden()
    expect(app.locator("#screen-thread")).to_be_visible()


def test_counsellor_exports_the_conversation_for_the_file(world: World) -> None:
    console = world.console
    console.get_by_role("button", name="Exporter", exact=True).click()
    view = console.locator("#export-view")
    expect(view).to_be_visible(timeout=60_000)
    expect(view.get_by_role("heading")).to_have_text(f"Conversation avec {BENEFICIARY}")
    data = _download_json(console)
    texts = [m["text"] for m in data["messages"] if m["type"] == "text"]
    assert texts == world.texts
    save_screenshot(console, "console-export.png")
    assert axe_serious(console) == []
    view.get_by_role("button", name="Fermer").click()
    expect(console.locator("#thread-view")).to_be_visible()


def test_archive_is_read_only_for_both_and_a_supervisor_restores_it(world: World) -> None:
    console, app = world.console, world.app
    console.get_by_role("button", name="Archiver").click()
    dialog = console.get_by_role("dialog", name="Archiver la conversation")
    expect(dialog).to_contain_text("lecture seule")
    assert axe_serious(console) == []
    dialog.get_by_label("Motif").select_option(label="Sortie en emploi")
    dialog.get_by_role("button", name="Archiver").click()
    expect(console.locator("#archived-banner")).to_contain_text("sortie en emploi")
    expect(console.get_by_label("Votre message")).to_be_disabled()
    expect(console.get_by_role("button", name="Archiver")).to_be_hidden()
    expect(console.locator(".conv", has_text=BENEFICIARY).locator(".tag-archived")).to_have_text(
        "Archivé"
    )
    expect(app.locator("#archived-banner")).to_contain_text("clôturé votre accompagnement")
    expect(app.get_by_label("Votre message")).to_be_disabled()
    expect(app.get_by_role("button", name="Envoyer")).to_be_disabled()
    expect(
        app.locator(".msg-system", has_text="Accompagnement clôturé (sortie en emploi)")
    ).to_have_count(1)
    save_screenshot(app, "app-archived.png")
    save_screenshot(console, "console-archived.png")
    assert axe_serious(app) == []
    assert axe_serious(console) == []

    ctx = world.browser.new_context(viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris")
    try:
        sup = ctx.new_page()
        _watch(sup, "supervisor", world.problems)
        _login(sup, world.server.url + "/console/", "superviseur.demo")
        row = sup.locator("#supervision-body tr", has_text=BENEFICIARY)
        expect(row).to_contain_text("archivé : sortie en emploi")
        row.get_by_role("button", name=f"Restaurer {BENEFICIARY}").click()
        expect(sup.locator("#supervision-status")).to_have_text("Conversation restaurée.")
        expect(row.get_by_role("button", name=f"Transférer {BENEFICIARY}")).to_be_visible()
        assert axe_serious(sup) == []
    finally:
        ctx.close()
    expect(app.locator("#archived-banner")).to_be_hidden()
    expect(app.get_by_label("Votre message")).to_be_enabled()
    expect(app.locator(".msg-system", has_text="rouverte par un superviseur")).to_have_count(1)
    expect(console.get_by_label("Votre message")).to_be_enabled()
    back = "Merci, je reprends contact pour une formation"
    app.get_by_label("Votre message").fill(back)
    app.get_by_role("button", name="Envoyer").click()
    expect(_bubble(console, "msg-peer", back)).to_have_count(1)


def test_loading_earlier_messages_keeps_the_readers_place(world: World) -> None:
    app = world.app
    app.reload()  # the thread opens on its latest page (50 messages)
    older = app.get_by_role("button", name="Charger les messages précédents")
    expect(older).to_be_visible()
    expect(app.locator("#messages .msg")).not_to_have_count(0)
    waiting = app.locator(".msg-text", has_text="en attente de la clé")
    expect(waiting).to_have_count(0)  # the page is decrypted before the reader scrolls up
    app.locator("#log").evaluate("(el) => { el.scrollTop = 0; }")
    where = """(text) => {
        const log = document.querySelector("#log");
        const nodes = [...log.querySelectorAll(".msg-text")];
        const el = text ? nodes.find((n) => n.textContent === text) : nodes[0];
        return {
            text: el.textContent,
            top: el.getBoundingClientRect().top - log.getBoundingClientRect().top,
            count: log.querySelectorAll(".msg").length,
        };
    }"""
    before: dict[str, Any] = app.evaluate(where, None)
    assert before["text"] in world.texts
    older.click()
    expect(app.locator("#messages .msg")).not_to_have_count(before["count"])
    expect(waiting).to_have_count(0)
    after: dict[str, Any] = app.evaluate(where, before["text"])
    assert after["count"] > before["count"]
    # The message the reader was looking at has not moved (the earlier ones are above it).
    assert abs(after["top"] - before["top"]) < 4, (before, after)
    first = app.locator(".msg-text").first.text_content()
    assert first != before["text"]


def test_an_inactive_beneficiary_is_warned_in_the_app(world: World) -> None:
    from pymongo import MongoClient  # noqa: TID251 - the test ages the account in the store

    app = world.app
    client: MongoClient[dict[str, Any]] = MongoClient(
        world.server.engine_url(), serverSelectionTimeoutMS=10_000
    )
    try:
        aged = time.time() - 701 * DAY  # 29 days before the 730-day limit
        done = client["cejchat"].users.update_one(
            {"login_lower": "jeune1.demo"}, {"$set": {"active_at": aged}}
        )
        assert done.modified_count == 1
    finally:
        client.close()
    env = {**os.environ, "MONGODB_URL": world.server.engine_url(), "MONGODB_DB": "cejchat"}
    run = subprocess.run(
        [sys.executable, "-m", "chat_server.admin", "retention"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warned 1" in run.stdout.splitlines()
    app.reload()
    warning = app.locator(".msg-system", has_text="Sans connexion de votre part")
    expect(warning).to_have_count(1)
    expect(warning).to_contain_text("seront supprimés le")
    expect(warning).to_contain_text("Connectez-vous pour le conserver.")
    save_screenshot(app, "app-inactivity-warning.png")
    assert axe_serious(app) == []
    # The counsellor reads it about the young person, not about their own account.
    console = world.console
    console.reload()
    console.locator(".conv", has_text=BENEFICIARY).click()
    about = console.locator(".msg-system", has_text="ne s'est pas connecté·e depuis longtemps")
    expect(about).to_have_count(1)
    expect(about).to_contain_text(f"{BENEFICIARY} ne s'est pas connecté·e")
    expect(console.locator(".msg-system", has_text="Sans connexion de votre part")).to_have_count(0)


def test_beneficiary_deletes_their_account_from_the_app(world: World) -> None:
    from pymongo import MongoClient  # noqa: TID251 - the test reads the store directly

    console, app = world.console, world.app
    client: MongoClient[dict[str, Any]] = MongoClient(
        world.server.engine_url(), serverSelectionTimeoutMS=10_000
    )
    try:
        db = client["cejchat"]
        user = db.users.find_one({"login_lower": "jeune1.demo"})
        assert user is not None
        user_id = user["_id"]

        app.get_by_role("button", name="Menu").click()
        app.get_by_role("button", name="Supprimer mon compte").click()
        dialog = app.get_by_role("dialog", name="Supprimer mon compte")
        expect(dialog).to_contain_text("ne peut pas être annulée")
        dialog.get_by_label("Mot de passe (pour confirmer)").fill("pas-le-bon-mot-de-passe")
        dialog.get_by_role("button", name="Supprimer définitivement").click()
        expect(dialog.locator("#delete-error")).to_have_text("Mot de passe incorrect.")
        assert db.users.find_one({"_id": user_id}) is not None
        save_screenshot(app, "app-delete-account.png")
        assert axe_serious(app) == []
        dialog.get_by_label("Mot de passe (pour confirmer)").fill(DEMO_PASSWORD)
        dialog.get_by_role("button", name="Supprimer définitivement").click()
        expect(app.get_by_role("heading", name="Compte supprimé")).to_be_visible()
        save_screenshot(app, "app-deleted.png")
        assert axe_serious(app) == []
        left = app.evaluate(
            """() => new Promise((resolve) => {
                const req = indexedDB.open("cejchat");
                req.onsuccess = () => {
                    const db = req.result;
                    const names = [...db.objectStoreNames];
                    const t = db.transaction(names, "readonly");
                    let n = 0;
                    for (const name of names) {
                        t.objectStore(name).count().onsuccess = (e) => { n += e.target.result; };
                    }
                    t.oncomplete = () => resolve(n);
                };
            })"""
        )
        assert left == 0

        conv = console.locator(".conv", has_text="Compte supprimé")
        expect(conv).to_have_count(1)
        expect(console.locator("#thread-title")).to_have_text("Compte supprimé")
        expect(console.locator("#archived-banner")).to_contain_text("supprimé son compte")
        expect(console.get_by_label("Votre message")).to_be_disabled()
        expect(console.locator("#messages .msg")).to_have_count(0)  # nothing of it is shown
        expect(conv).not_to_contain_text("En ligne")
        save_screenshot(console, "console-deleted.png")
        assert axe_serious(console) == []

        # Every collection: the person's id is nowhere; the audit record is pseudonymised.
        found = []
        for name in db.list_collection_names():
            for doc in db[name].find():
                if user_id in repr(doc) or BENEFICIARY in repr(doc):
                    found.append(name)
        assert found == []
        deleted = list(db.audit.find({"action": "account.deleted"}))
        assert len(deleted) == 1
        assert re.fullmatch(r"deleted-[0-9a-f]{16}", deleted[0]["actor_id"])
        assert db.messages.count_documents({"conversation_id": deleted[0]["conversation_id"]}) == 0
    finally:
        client.close()


def test_pages_ran_without_csp_violation_or_error(world: World) -> None:
    assert world.problems == []
