"""The activation sheet's QR encoder (web_client/shared/qr.js), run in Chromium and read back
by an independent decoder (zxing-cpp): every version it makes (1 to 20), every mask, UTF-8."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import zxingcpp
from playwright.sync_api import Page

from tests.web.harness import chromium, static_server

pytestmark = pytest.mark.browser

SCALE = 3
QUIET = 4


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with static_server() as url, chromium() as browser:
        p = browser.new_page()
        p.goto(url + "/test/crypto.html")
        yield p


def _encode(page: Page, texts: list[str], mask: int | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = page.evaluate(
        """async ([texts, mask]) => {
            const { encodeQr } = await import("/shared/qr.js");
            return texts.map((text) => {
                const qr = encodeQr(text, mask === null ? {} : { mask });
                const rows = [];
                for (let y = 0; y < qr.size; y += 1) {
                    let row = "";
                    for (let x = 0; x < qr.size; x += 1) row += qr.dark(x, y) ? "1" : "0";
                    rows.push(row);
                }
                return { version: qr.version, mask: qr.mask, rows };
            });
        }""",
        [texts, mask],
    )
    return out


def _decode(rows: list[str]) -> str:
    """Draw the matrix as a grayscale image (quiet zone, 3 px modules) and decode it."""
    side = (len(rows) + 2 * QUIET) * SCALE
    pixels = bytearray(b"\xff" * side * side)
    for y, row in enumerate(rows):
        for x, cell in enumerate(row):
            if cell == "1":
                for dy in range(SCALE):
                    start = ((y + QUIET) * SCALE + dy) * side + (x + QUIET) * SCALE
                    pixels[start : start + SCALE] = b"\x00" * SCALE
    image = memoryview(bytes(pixels)).cast("B", (side, side))
    texts = [str(b.text) for b in zxingcpp.read_barcodes(image)]
    assert len(texts) == 1, f"no QR code read back ({len(rows)}x{len(rows)})"
    return texts[0]


# Byte lengths at the edges of level M's capacities (version 1: 14 bytes, 2: 26, 9: 180,
# 10: 213 with a 16-bit count, 20: 666), so each version's tables are exercised.
LENGTHS = [
    1,
    14,
    15,
    26,
    27,
    42,
    62,
    84,
    106,
    122,
    152,
    180,
    181,
    213,
    251,
    287,
    331,
    362,
    412,
    450,
    504,
    560,
    624,
    666,
]


def test_every_version_decodes(page: Page) -> None:
    texts = [("https://cej.example/app/?code=" + "ABCD-2345-" * 70)[:n] for n in LENGTHS]
    encoded = _encode(page, texts)
    versions = [e["version"] for e in encoded]
    assert versions[0] == 1
    assert versions[-1] == 20
    assert versions == sorted(versions)
    assert len(set(versions)) >= 15
    for text, e in zip(texts, encoded, strict=True):
        assert len(e["rows"]) == 17 + 4 * e["version"]
        assert _decode(e["rows"]) == text


def test_every_mask_decodes(page: Page) -> None:
    text = "http://127.0.0.1:8000/app/?code=K7QM-4XPA-93TD"
    for mask in range(8):
        (e,) = _encode(page, [text], mask)
        assert e["mask"] == mask
        assert _decode(e["rows"]) == text


def test_utf8_and_too_long(page: Page) -> None:
    text = "Inès Moreau — code : ÉTÉ-2026 ✓"
    (e,) = _encode(page, [text])
    assert _decode(e["rows"]) == text
    error = page.evaluate(
        """async () => {
            const { encodeQr } = await import("/shared/qr.js");
            try { encodeQr("x".repeat(667)); return null; } catch (err) { return err.name; }
        }"""
    )
    assert error == "RangeError"
