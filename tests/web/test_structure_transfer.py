"""Issue #10 point 2, browser tests (b) and (c): a transfer's whole history with nobody online.

A real server (``--demo``) and Debian's Chromium. The supervisor's console makes
the structure key when she logs in and hands it to each staff device that
registers. Karim (the counsellor) and the young person write 200 messages
through the Python SDK (a browser would be too slow), then close their
clients: they stay offline. The supervisor transfers the young person in her
console; the new counsellor logs in on a new console and reads 100 % of the
history, each message opened from the epoch's structure envelope (her device
holds no envelope of those epochs). (c): a temporary transfer, a message by
the replacing counsellor, the take-back, and Karim, on a console that had
closed, reads everything, the replacing counsellor's epoch included.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from chat_server.sdk import Client
from tests.web.harness import (
    DEMO_PASSWORD,
    DESKTOP,
    ServerProcess,
    chromium,
    run_server,
    save_screenshot,
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
    karim = await Client.login(url, "conseiller.demo", DEMO_PASSWORD)
    try:
        for _ in range(200):
            if (await karim.request("GET", "/api/structure-key"))["key"] is not None:
                return True
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
    the structure key at its login and hands it to each staff device that registers."""
    with run_server(tmp_path_factory.mktemp("structure-web")) as server, chromium() as browser:
        problems: list[str] = []
        ctx, sup = _console(browser, server, "superviseur.demo", problems)
        try:
            assert _run(lambda: _structure_key_exists(server.url))
            yield World(server, browser, sup, problems)
        finally:
            ctx.close()


def _console(
    browser: Browser, server: ServerProcess, login: str, problems: list[str]
) -> tuple[BrowserContext, Page]:
    """A console on a new device (a new browser profile); an account that has a key
    backup from another console goes on without its recovery key."""
    ctx = browser.new_context(viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris")
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
        texts = _read_all(karim, "Yasmine Haddad", [*sent, during])
        assert sorted(t for t in texts if t in set(sent)) == sorted(sent)
        assert during in texts
        assert not any("illisible" in t for t in texts)
    finally:
        karim_ctx.close()
    assert problems == []
