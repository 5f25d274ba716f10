"""``python -m bench.broadcast_console``: how long the console takes to encrypt and send one
broadcast to N beneficiaries (issue #15, point 1), in headless Chromium.

A real server (``python -m chat_server --demo``, the embedded engine, ``REQUIRE_E2EE=true``)
on loopback; the demo counsellor gets ``N - 3`` more beneficiaries (``POST
/api/beneficiaries``), so they follow N. The console (Debian's Chromium through Playwright,
the project's own page) logs in, opens "Diffusion", ticks everyone and sends. The time is
the page's own: from the click handler (``performance.now()``) to the last copy's ack, as
the view records it (``data-elapsed-ms``): recording the broadcast (``POST
/api/broadcasts``), then per copy the AES-GCM encryption, the Ed25519 signature, the
``message.send`` and its durable ack. The first broadcast also makes each conversation's
first epoch (a fresh key, wrapped by HPKE to the counsellor's device and the structure
key, and its commitment, sent over HTTP); the next ones reuse it.

``--throttle 4`` also runs with Chromium's CPU throttled four times (DevTools
``Emulation.setCPUThrottlingRate``), a stand-in for a low-end laptop. It prints figures and
asserts no wall-clock limit. Needs the test extras (Playwright) and ``/usr/bin/chromium``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, WebSocket, expect

from chat_server.admin import DEMO_PASSWORD as PASSWORD
from tests.web.harness import DESKTOP, chromium, login_demo, run_server

TEXT = "Information collective vendredi 10 h : présentez-vous avec une pièce d'identité."


def _http(url: str, method: str, path: str, token: str | None, body: Any = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data, headers, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


def seed(url: str, recipients: int) -> None:
    """Give the demo counsellor ``recipients`` beneficiaries (the demo has three)."""
    token = _http(
        url, "POST", "/api/login", None, {"login": "conseiller.demo", "password": PASSWORD}
    )["token"]
    for i in range(recipients - 3):
        body = {
            "login": f"bench.jeune{i:03d}",
            "display_name": f"Jeune {i:03d}",
            "programme": "CEJ",
        }
        _http(url, "POST", "/api/beneficiaries", token, body)


def one_broadcast(page: Page, recipients: int, n: int) -> float:
    """Send one broadcast to everyone; the page's own milliseconds until the last ack."""
    page.get_by_label("Destinataires").select_option("")
    page.get_by_role("button", name="Tout cocher").click()
    checked = page.locator("#bc-pick-list input:checked").count()
    if checked != recipients:
        raise RuntimeError(f"{checked} beneficiaries ticked, {recipients} expected")
    page.get_by_label("Message", exact=True).fill(f"{TEXT} ({n})")
    before = page.locator(".broadcast-send").count()
    page.get_by_role("button", name="Envoyer à tous").click()
    expect(page.locator(".broadcast-send")).to_have_count(before + 1, timeout=60_000)
    send = page.locator(".broadcast-send").first  # the newest comes first
    expect(send.get_by_text(f"Envoyé à {recipients} / {recipients}")).to_be_visible(timeout=300_000)
    expect(send).not_to_have_attribute("data-elapsed-ms", "", timeout=10_000)
    return float(send.get_attribute("data-elapsed-ms") or "nan")


def run(recipients: int, runs: int, throttles: list[float]) -> list[dict[str, Any]]:
    """Every (throttle, first/next) row: milliseconds of each broadcast."""
    rows: list[dict[str, Any]] = []
    for rate in throttles:
        # A fresh server per rate, so that each rate's first broadcast makes the epochs.
        with (
            tempfile.TemporaryDirectory(prefix="bench-broadcast-") as tmp,
            run_server(Path(tmp)) as server,
            chromium() as browser,
        ):
            seed(server.url, recipients)
            ctx = browser.new_context(viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris")
            page = ctx.new_page()
            limited = [0]  # "rate_limited" error frames the console received

            def watch(ws: WebSocket, limited: list[int] = limited) -> None:
                def on_frame(payload: str | bytes) -> None:
                    if isinstance(payload, str) and '"rate_limited"' in payload:
                        limited[0] += 1

                ws.on("framereceived", on_frame)

            page.on("websocket", watch)
            login_demo(page, server.url + "/console/", "conseiller.demo")
            expect(page.locator(".conv")).to_have_count(recipients, timeout=60_000)
            if rate != 1:
                cdp = ctx.new_cdp_session(page)
                cdp.send("Emulation.setCPUThrottlingRate", {"rate": rate})
            page.get_by_role("button", name="Diffusion").click()
            first = one_broadcast(page, recipients, 0)
            rows.append(
                {
                    "throttle": rate,
                    "kind": "first (makes the epochs)",
                    "ms": [first],
                    "rate_limited": limited[0],
                }
            )
            limited[0] = 0
            later = [one_broadcast(page, recipients, i + 1) for i in range(runs)]
            rows.append(
                {
                    "throttle": rate,
                    "kind": "next (epochs exist)",
                    "ms": later,
                    "rate_limited": limited[0],
                }
            )
            ctx.close()
    return rows


def table(rows: list[dict[str, Any]], recipients: int) -> str:
    lines = [
        f"| CPU throttle | broadcast to {recipients} | runs | median s | min s | max s "
        "| ms per copy (median) | `rate_limited` replies |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = r["ms"]
        med = statistics.median(ms)
        lines.append(
            f"| {r['throttle']:g}x | {r['kind']} | {len(ms)} | {med / 1000:.2f} | "
            f"{min(ms) / 1000:.2f} | {max(ms) / 1000:.2f} | {med / recipients:.0f} | "
            f"{r['rate_limited']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.broadcast_console", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--recipients", type=int, default=60, help="beneficiaries (at least 3)")
    ap.add_argument("--runs", type=int, default=5, help="broadcasts after the first")
    ap.add_argument("--throttle", default="1", help="CPU throttle rates, comma-separated (1,4)")
    args = ap.parse_args(argv)
    if args.recipients < 3:
        ap.error("--recipients must be at least 3 (the demo's beneficiaries)")
    throttles = [float(x) for x in args.throttle.split(",") if x.strip()]
    rows = run(args.recipients, args.runs, throttles)
    print(table(rows, args.recipients))
    print("load average (1, 5, 15 min):", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
