"""Chromium's WebCrypto Ed25519 (through web_client/shared/crypto.js) on the edge-case vectors.

Each case of tests/vectors/ed25519-edge.json records the decision of the
browser in ``webcrypto``; this test runs crypto.js's ``verify`` on every case
in a real Chromium and compares.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.web.harness import WEB_ROOT, chromium, static_server

pytestmark = pytest.mark.browser

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ed25519-edge.json"

RUN = """
async () => {
  const { verify } = await import("/shared/crypto.js");
  const doc = await (await fetch("/vectors/ed25519-edge.json")).json();
  const hex = (h) => new Uint8Array(h.match(/../g)?.map((b) => parseInt(b, 16)) ?? []);
  const out = {};
  for (const c of doc.cases) {
    out[c.what] = await verify(hex(c.pub), hex(c.sig), hex(c.msg));
  }
  return out;
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def test_webcrypto_decides_as_recorded(browser: Browser) -> None:
    with static_server(WEB_ROOT, {"ed25519-edge.json": VECTORS}) as url:
        page = browser.new_page()
        try:
            page.goto(f"{url}/vectors/ed25519-edge.json")
            got: dict[str, Any] = page.evaluate(RUN)
        finally:
            page.close()
    rows = json.loads(VECTORS.read_text())["cases"]
    assert set(got) == {r["what"] for r in rows}
    wrong = [
        (r["what"], got[r["what"]], r["webcrypto"])
        for r in rows
        if got[r["what"]] != r["webcrypto"]
    ]
    assert wrong == []
