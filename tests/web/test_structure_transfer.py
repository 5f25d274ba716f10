"""Issue #10 point 2, browser tests (b) and (c): a transfer's whole history with nobody online.

A real server (``--demo``) and Debian's Chromium. The supervisor's console makes
the structure key when she logs in and hands it to a staff device that registers
when she approves it (one click per device). Karim (the counsellor) and the
young person write 200 messages through the Python SDK (a browser would be too
slow), then close their clients: they stay offline. The supervisor transfers the young person in her
console; the new counsellor logs in on a new console and reads 100 % of the
history, each message opened from the epoch's structure envelope (her device
holds no envelope of those epochs). (c): a temporary transfer, a message by
the replacing counsellor, the take-back, and Karim, on a console that had
closed, reads everything, the replacing counsellor's epoch included.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from playwright.sync_api import Browser, BrowserContext, Page, expect

from chat_server.crypto.structure_key import sign_structure_key, structure_key_id
from chat_server.sdk import Client
from tests.web.harness import (
    DEMO_PASSWORD,
    DESKTOP,
    PHONE,
    ServerProcess,
    activate_app,
    axe_violations,
    chromium,
    login_demo,
    run_server,
    save_screenshot,
    serious,
    watch_page,
)

pytestmark = pytest.mark.browser

T = TypeVar("T")
HISTORY = 200
FIRST_NAMES = {"jeune2.demo": "Lucas", "jeune3.demo": "Yasmine"}


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run SDK coroutines on their own loop, in a thread (Playwright holds this one)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(make()))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="sdk")
    thread.start()
    thread.join(300)
    if errors:
        raise errors[0]
    assert out, "the SDK thread did not finish in time"
    return out[0]


async def _structure_key_exists(url: str) -> bool:
    """Wait for the supervisor's console to make the key; then Karim's device (the SDK's,
    as his console at login) pins and endorses it, for his young people's first pins."""
    karim = await Client.login(url, "conseiller.demo", DEMO_PASSWORD)
    try:
        for _ in range(200):
            if (await karim.request("GET", "/api/structure-key"))["key"] is not None:
                await karim.structure.load()
                return bool(karim.structure.endorsed)
            await asyncio.sleep(0.1)
        return False
    finally:
        await karim.close()


async def _seed(url: str, young: str, count: int) -> tuple[str, list[str]]:
    """Karim and ``young`` write ``count`` messages, in turns, then close their clients."""
    karim = await Client.login(url, "conseiller.demo", DEMO_PASSWORD)
    person = await Client.login(url, young, DEMO_PASSWORD)
    try:
        conv = str(next(c["id"] for c in await _conversations(person)))
        await karim.connect()
        await person.connect()
        texts = []
        for i in range(count):
            writer = person if i % 2 else karim
            text = f"Message {i + 1} de {FIRST_NAMES[young] if i % 2 else 'Karim'}"
            await writer.send_text(conv, text)
            texts.append(text)
        listing = await karim.devices(conv)
        assert listing["structure_key"] is not None, "the epoch was sealed to the structure key"
        return conv, texts
    finally:
        await karim.close()
        await person.close()


async def _conversations(client: Client) -> list[dict[str, Any]]:
    answer: dict[str, Any] = await client.request("GET", "/api/conversations")
    convs: list[dict[str, Any]] = answer["conversations"]
    return convs


async def _holds_no_envelope(url: str, login: str, conv: str) -> list[int]:
    """Epochs for which the devices of ``login`` have an envelope of their own (a new login's
    device: none is expected)."""
    c = await Client.login(url, login, DEMO_PASSWORD)
    try:
        data = await c.request("GET", f"/api/keys/envelopes?conversation={conv}")
        return [int(e["epoch"]) for e in data["envelopes"]]
    finally:
        await c.close()


@dataclass
class World:
    server: ServerProcess
    browser: Browser
    sup: Page
    problems: list[str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The demo server, Chromium, and the supervisor's console, online throughout: it makes
    the structure key at its login and hands it to the staff devices she approves."""
    with run_server(tmp_path_factory.mktemp("structure-web")) as server, chromium() as browser:
        problems: list[str] = []
        # axe-core is injected inline: this one context does not enforce the CSP.
        ctx, sup = _console(browser, server, "superviseur.demo", problems, axe=True)
        try:
            assert _run(lambda: _structure_key_exists(server.url))
            yield World(server, browser, sup, problems)
        finally:
            ctx.close()


def _console(
    browser: Browser, server: ServerProcess, login: str, problems: list[str], axe: bool = False
) -> tuple[BrowserContext, Page]:
    """A console on a new device (a new browser profile); an account that has a key
    backup from another console goes on without its recovery key."""
    ctx = browser.new_context(
        viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris", bypass_csp=axe
    )
    page = ctx.new_page()
    watch_page(page, login, problems)
    page.goto(server.url + "/console/")
    page.locator("#login-name").fill(login)
    page.locator("#login-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    without = page.get_by_role("button", name="Je n'ai pas ma clé de récupération")
    expect(page.locator("#recovery-key").or_(without)).to_be_visible()
    if without.is_visible():
        without.click()
        page.get_by_role("button", name="Continuer avec un nouvel appareil").click()
    expect(page.locator("#recovery-key")).to_be_visible()
    page.get_by_label("J'ai noté ma clé de récupération").check()
    page.get_by_role("button", name="Continuer").click()
    return ctx, page


def _approve(sup: Page, name: str) -> None:
    """The supervisor gives the structure key to ``name``'s newest device (her click; an
    older one, the SDK's of an earlier test, may wait too)."""
    sup.get_by_role("button", name=f"Confier la clé de la structure à {name}").last.click()
    expect(sup.locator("#structure-key-status")).to_have_text(
        f"Clé de la structure confiée à l'appareil de {name}."
    )


def _transfer(sup: Page, name: str, mode: str, to: str | None = None) -> None:
    sup.get_by_role("button", name=f"Transférer {name}").click()
    dialog = sup.get_by_role("dialog", name="Transférer")
    dialog.get_by_role("radio", name=mode).check()
    if to is not None:
        dialog.get_by_label("Nouveau conseiller").select_option(label=to)
    if mode == "Temporaire":
        tomorrow = sup.evaluate("() => new Date(Date.now() + 86400000).toISOString().slice(0, 10)")
        dialog.get_by_label("Jusqu'au (transfert temporaire)").fill(tomorrow)
    dialog.get_by_role("button", name="Transférer").click()
    expect(sup.locator("#supervision-status")).to_have_text("Transfert effectué.")


def _read_all(page: Page, name: str, expected: list[str]) -> list[str]:
    """Open ``name``'s thread, load every older page, wait until every expected text shows."""
    page.locator(".conv", has_text=name).click()
    expect(page.locator("#thread-title")).to_contain_text(name)
    older = page.locator("#btn-older")
    for _ in range(20):
        page.wait_for_timeout(300)
        if not older.is_visible():
            break
        older.click()
    script = "(els) => els.map((e) => e.textContent.trim())"
    texts: list[str] = []
    for _ in range(100):
        texts = [str(t) for t in page.locator("#messages .msg .msg-text").evaluate_all(script)]
        if set(expected) <= set(texts):
            break
        page.wait_for_timeout(300)
    return texts


def test_permanent_transfer_with_everyone_else_offline_reads_200_messages(
    world: World,
) -> None:
    server, browser, sup, problems = world.server, world.browser, world.sup, world.problems
    conv, sent = _run(lambda: _seed(server.url, "jeune2.demo", HISTORY))
    assert len(sent) == HISTORY
    # Karim and Lucas closed their clients before the transfer and stay offline.
    _transfer(sup, "Lucas Petit", "Définitif", to="Léa Dubois")
    lea_ctx, lea = _console(browser, server, "conseillere2.demo", problems)
    try:
        # Her new device waits for the structure key until the supervisor approves it.
        expect(sup.locator("#structure-key-box")).to_be_visible()
        save_screenshot(sup, "structure-key-approval.png", "console-structure-key-approval.png")
        assert serious(axe_violations(sup)) == []
        _approve(sup, "Léa Dubois")
        texts = _read_all(lea, "Lucas Petit", sent)
        shown = [t for t in texts if t in set(sent)]
        assert sorted(shown) == sorted(sent), f"{len(shown)} of {HISTORY} readable"
        assert not any("illisible" in t for t in texts)
        save_screenshot(lea, "structure-transfer.png", "console-transfer-structure-key.png")
        # Her device holds no envelope of its own: the structure key opened them all.
        assert _run(lambda: _holds_no_envelope(server.url, "conseillere2.demo", conv)) == []
    finally:
        lea_ctx.close()
    assert problems == []


def test_temporary_transfer_and_take_back_with_everyone_else_offline(
    world: World,
) -> None:
    server, browser, sup, problems = world.server, world.browser, world.sup, world.problems
    _, sent = _run(lambda: _seed(server.url, "jeune3.demo", HISTORY))
    _transfer(sup, "Yasmine Haddad", "Temporaire", to="Léa Dubois")
    lea_ctx, lea = _console(browser, server, "conseillere2.demo", problems)
    try:
        _approve(sup, "Léa Dubois")
        texts = _read_all(lea, "Yasmine Haddad", sent)
        assert sorted(t for t in texts if t in set(sent)) == sorted(sent)
        during = "Bonjour Yasmine, je remplace Karim cette semaine."
        lea.locator("#message").fill(during)
        lea.get_by_role("button", name="Envoyer").click()
        expect(lea.locator(".msg-mine", has_text=during).locator(".status-sent")).to_be_visible(
            timeout=20_000
        )
    finally:
        lea_ctx.close()
    _transfer(sup, "Yasmine Haddad", "Reprise par le conseiller habituel")
    # Karim comes back on his console (its first device here; his earlier devices
    # were the SDK's): everything, Léa's message included.
    karim_ctx, karim = _console(browser, server, "conseiller.demo", problems)
    try:
        _approve(sup, "Karim Benali")
        texts = _read_all(karim, "Yasmine Haddad", [*sent, during])
        assert sorted(t for t in texts if t in set(sent)) == sorted(sent)
        assert during in texts
        assert not any("illisible" in t for t in texts)
    finally:
        karim_ctx.close()
    assert problems == []


@contextlib.contextmanager
def _structure_keys(server: ServerProcess) -> Iterator[Any]:
    """The store's ``structure_keys`` collection, reached directly: the test plays the
    dishonest store."""
    from pymongo import MongoClient  # noqa: TID251 - the test plays the dishonest store

    client: MongoClient[dict[str, Any]] = MongoClient(
        server.engine_url(), serverSelectionTimeoutMS=10_000
    )
    try:
        for name in client.list_database_names():
            if "structure_keys" in client[name].list_collection_names():
                yield client[name].structure_keys
                return
        raise AssertionError("no structure key in the store")
    finally:
        client.close()


def _swap_structure_key(server: ServerProcess, fields: dict[str, Any]) -> dict[str, Any]:
    """Set fields of the structure's key in the store itself; return what they were."""
    with _structure_keys(server) as keys:
        docs = list(keys.find())
        assert len(docs) == 1
        keys.update_one({"_id": docs[0]["_id"]}, {"$set": fields})
        return {k: docs[0][k] for k in fields}


def _take_structure_key(server: ServerProcess) -> dict[str, Any]:
    """The dishonest store lists no structure key: remove it, return it (to put back)."""
    with _structure_keys(server) as keys:
        doc = keys.find_one()
        assert doc is not None
        keys.delete_many({})
        return dict(doc)


def _put_back_structure_key(server: ServerProcess, doc: dict[str, Any]) -> None:
    with _structure_keys(server) as keys:
        keys.delete_many({})
        keys.insert_one(doc)


def test_a_replaced_structure_key_is_refused_by_the_app_and_shown(world: World) -> None:
    """The ghost reader in the browser: the store's structure key is swapped for one the
    server holds. The young person's app refuses to seal the next epoch to it, says so
    in the thread, and sends nothing."""
    server, browser, sup, problems = world.server, world.browser, world.sup, world.problems
    ctx = browser.new_context(viewport=PHONE, locale="fr-FR", timezone_id="Europe/Paris")
    try:
        app = ctx.new_page()
        watch_page(app, "app", problems)
        login_demo(app, server.url + "/app/", "jeune1.demo")
        first = "Bonjour, c'est Inès."
        app.get_by_label("Votre message").fill(first)
        app.get_by_role("button", name="Envoyer").click()
        expect(app.locator(".msg-mine", has_text=first).locator(".status-sent")).to_be_visible()
        ghost = X25519PrivateKey.generate().public_key().public_bytes_raw()
        real = _swap_structure_key(server, {"public_key": ghost, "key_id": structure_key_id(ghost)})
        # A new epoch is due (a temporary transfer): the app must seal one, and refuses.
        _transfer(sup, "Inès Moreau", "Temporaire", to="Léa Dubois")
        expect(app.locator("#peer-name")).to_have_text("Léa Dubois")
        after = "Message après le changement de clé"
        app.get_by_label("Votre message").fill(after)
        app.get_by_role("button", name="Envoyer").click()
        alert = app.locator(".msg-security", has_text="clé de la structure")
        expect(alert.first).to_be_visible(timeout=20_000)
        expect(app.locator(".msg-mine", has_text=after).locator(".status-sent")).to_have_count(0)
        later = app.get_by_role("button", name="Plus tard")
        if later.is_visible():
            later.click()  # the notifications invitation, so the screenshot shows the thread
        alert.first.evaluate(
            "el => { el.scrollIntoView({block: 'center'}); window.scrollTo(0, 0); }"
        )
        save_screenshot(app, "structure-key-refused.png", "app-structure-key-refused.png")
        _swap_structure_key(server, real)  # the honest store again, for the other tests
        _downgrade_is_refused(app, server, sup)
    finally:
        ctx.close()
    # What the browser logged while refusing is expected here; nothing else is.
    assert [p for p in problems if "structure" not in p and "epoch" not in p] == []


def test_the_activation_box_carries_the_structure_key_to_the_first_phone(world: World) -> None:
    """Karim's console creates a young person: the activation box names the structure key
    his console sealed the first epoch to, and the phone pins it at activation."""
    import re

    server, browser, problems = world.server, world.browser, world.problems
    console_ctx, console = _console(browser, server, "conseiller.demo", problems)
    try:
        console.get_by_role("button", name="Nouveau bénéficiaire").click()
        dialog = console.get_by_role("dialog", name="Nouveau bénéficiaire")
        dialog.get_by_label("Nom et prénom").fill("Nora Benali")
        dialog.get_by_label("Identifiant").fill("nora.pin")
        dialog.get_by_role("button", name="Créer").click()
        code_el = console.locator("#activation-code")
        expect(code_el).to_have_text(re.compile(r"^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$"))
        code = (code_el.text_content() or "").strip()
    finally:
        console_ctx.close()
    app_ctx = browser.new_context(viewport=PHONE, locale="fr-FR", timezone_id="Europe/Paris")
    try:
        app = app_ctx.new_page()
        watch_page(app, "app-activation", problems)
        activate_app(app, server.url + "/app/", code, "mon-mot-de-passe-2026")
        expect(app.locator("#peer-name")).to_have_text("Karim Benali")
        pinned = _run(lambda: _structure_key_id(server.url))
        found = app.evaluate(
            """async () => {
              const db = await new Promise((ok, ko) => {
                const r = indexedDB.open("cejchat");
                r.onsuccess = () => ok(r.result);
                r.onerror = () => ko(r.error);
              });
              const all = await new Promise((ok) => {
                const r = db.transaction("kv").objectStore("kv").getAll(
                  IDBKeyRange.bound("structure-pin", "structure-pin\uffff"));
                r.onsuccess = () => ok(r.result);
              });
              return all.map((v) => v.keyId);
            }"""
        )
        assert found
        assert set(found) == {pinned}
    finally:
        app_ctx.close()
    assert problems == []


async def _structure_key_id(url: str) -> str:
    sup = await Client.login(url, "superviseur.demo", DEMO_PASSWORD)
    try:
        view = await sup.request("GET", "/api/structure-key")
        return str(view["key"]["key_id"])
    finally:
        await sup.close()


def _downgrade_is_refused(app: Page, server: ServerProcess, sup: Page) -> None:
    """The downgrade in the browser: once the app pinned the structure key, the server
    lists none (the new epoch would not follow a transfer). The app seals nothing,
    says so in the thread, and the message is not sent."""
    # A new epoch sealed to the honest key by this app: it pins the key.
    _transfer(sup, "Inès Moreau", "Reprise par le conseiller habituel")
    expect(app.locator("#peer-name")).to_have_text("Karim Benali")
    before = "Avant la disparition de la clé"
    app.get_by_label("Votre message").fill(before)
    app.get_by_role("button", name="Envoyer").click()
    expect(app.locator(".msg-mine", has_text=before).locator(".status-sent")).to_be_visible(
        timeout=20_000
    )
    alerts = app.locator(".msg-security", has_text="clé de la structure")
    seen = alerts.count()
    taken = _take_structure_key(server)
    try:
        _transfer(sup, "Inès Moreau", "Temporaire", to="Léa Dubois")
        expect(app.locator("#peer-name")).to_have_text("Léa Dubois")
        after = "Après la disparition de la clé"
        app.get_by_label("Votre message").fill(after)
        app.get_by_role("button", name="Envoyer").click()
        expect(alerts).to_have_count(seen + 1, timeout=20_000)
        expect(app.locator(".msg-mine", has_text=after).locator(".status-sent")).to_have_count(0)
    finally:
        _put_back_structure_key(server, taken)


async def _server_code(url: str, login: str, name: str) -> tuple[str, str]:
    """Karim creates a young person with a code the server makes (no activation box):
    (code, conversation)."""
    karim = await Client.login(url, "conseiller.demo", DEMO_PASSWORD)
    try:
        body = {"login": login, "display_name": name, "programme": "CEJ"}
        made = await karim.request("POST", "/api/beneficiaries", body)
        return str(made["activation_code"]), str(made["conversation_id"])
    finally:
        await karim.close()


async def _ghost_key(url: str) -> dict[str, Any]:
    """The dishonest server's key: really signed by a "supervisor" device it registered.
    The store's fields for it."""
    ghost = await Client.login(url, "superviseur.demo", DEMO_PASSWORD)
    try:
        structure = str(ghost.user["structure_id"])
        pub = X25519PrivateKey.generate().public_key().public_bytes_raw()
        return {
            "key_id": structure_key_id(pub),
            "public_key": pub,
            "creator_device": ghost.device_id,
            "creator_user": ghost.user_id,
            "sig": sign_structure_key(ghost.keys, structure, pub, ghost.device_id),
        }
    finally:
        await ghost.close()


async def _epoch(url: str, conv: str) -> int:
    karim = await Client.login(url, "conseiller.demo", DEMO_PASSWORD)
    try:
        return int((await karim.devices(conv))["epoch"])
    finally:
        await karim.close()


def test_a_ghost_key_not_endorsed_by_the_counsellor_is_refused_by_a_new_phone(
    world: World,
) -> None:
    """Issue #10 point 6: before a young person's phone ever saw the structure key, the
    store swaps in a key signed by a "supervisor" device the server registered. No device
    of her counsellor endorsed it: the app refuses to seal to it, says so in French in the
    thread, and creates no epoch. With the real key (endorsed by Karim's device) the same
    phone then writes normally."""
    server, browser, problems = world.server, world.browser, world.problems
    code, conv = _run(lambda: _server_code(server.url, "maya.ghost", "Maya Fantôme"))
    ghost = _run(lambda: _ghost_key(server.url))
    real = _swap_structure_key(server, ghost)
    ctx = browser.new_context(viewport=PHONE, locale="fr-FR", timezone_id="Europe/Paris")
    try:
        app = ctx.new_page()
        watch_page(app, "app-unendorsed", problems)
        activate_app(app, server.url + "/app/", code, "mon-mot-de-passe-2026")
        expect(app.locator("#peer-name")).to_have_text("Karim Benali")
        first = "Bonjour Karim, c'est Maya."
        app.get_by_label("Votre message").fill(first)
        app.get_by_role("button", name="Envoyer").click()
        alert = app.locator(
            ".msg-security", has_text="n'est confirmée par aucun appareil de votre conseiller"
        )
        expect(alert.first).to_be_visible(timeout=20_000)
        expect(app.locator(".msg-mine", has_text=first).locator(".status-sent")).to_have_count(0)
        later = app.get_by_role("button", name="Plus tard")
        if later.is_visible():
            later.click()
        save_screenshot(app, "structure-key-unendorsed.png")
        # Nothing sealed to the ghost key: not even an epoch.
        assert _run(lambda: _epoch(server.url, conv)) == 0
        # The honest store again: the real key, which Karim's device endorsed.
        _swap_structure_key(server, real)
        again = "Me revoici."
        app.get_by_label("Votre message").fill(again)
        app.get_by_role("button", name="Envoyer").click()
        expect(app.locator(".msg-mine", has_text=again).locator(".status-sent")).to_be_visible(
            timeout=20_000
        )
        assert _run(lambda: _epoch(server.url, conv)) >= 1
    finally:
        ctx.close()
    assert [p for p in problems if "structure" not in p and "epoch" not in p] == []
