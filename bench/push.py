"""How fast one push worker hands pushes to a push service (issue #12).

    python -m bench.push [--jobs 2000] [--devices 50] [--share 0.5] [--seconds 10] [--poll 1]
    python -m bench --only push [--quick]

Real parts, each its own process on loopback: the embedded engine (the store),
``chat-push-worker`` (``python -m notifications``, default settings but
``PUSH_ALLOW_LOOPBACK``, the test-only setting that lets it call a loopback
service) and the test push service (``python -m tests.push.pushservice``: it
checks every VAPID signature and decrypts every ``aes128gcm`` body, as in the
tests). The bench process stores the messages through ``ConversationService``,
so each one writes its push job as in production. Two measurements:

- **throughput**: ``--jobs`` messages are stored (one job each, to one device
  of ``--devices``), then the worker starts; pushes/s = accepted pushes between
  the first and the last acceptance (the worker's start-up excluded);
- **delay**: with the worker running, messages are stored at ``--share`` of that
  rate for ``--seconds`` seconds (open loop: each at its scheduled moment);
  delay = push accepted by the service - ``send`` returned (stored, job written),
  p50/p99/max. The worker is another process, so nothing wakes it: an idle worker
  looks at the outbox every ``PUSH_POLL_SECONDS`` (``--poll``, default 1 s), which
  bounds the delay at low rates.

Not a test: the figures depend on the machine and its load (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from chat_server import protocol as p
from chat_server.rooms.models import Role, User
from chat_server.services import Services, build_services
from chat_server.settings import Settings
from chat_server.storage.embedded import EmbeddedMongo, free_port
from notifications.service import Preferences

PASSWORD = "bench-password-2026"
ROOT = Path(__file__).resolve().parent.parent
NO_QUIET_HOURS = Preferences(quiet_start="00:00", quiet_end="00:00")


@dataclass
class Result:
    """The figures of one run."""

    jobs: int
    devices: int
    pushes_per_s: float
    offered_per_s: float
    stored_per_s: float
    delivered: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    load_before: float
    load_after: float
    problems: int

    def row(self) -> str:
        """One markdown table row (docs/benchmarks.md)."""
        return (
            f"| {self.jobs:,} jobs, {self.devices} devices | {self.pushes_per_s:,.0f} | "
            f"{self.offered_per_s:,.0f} ({self.stored_per_s:,.0f} stored) | "
            f"{self.p50_ms:,.0f} | {self.p99_ms:,.0f} | {self.max_ms:,.0f} | "
            f"{self.load_before:.1f} / {self.load_after:.1f} |"
        )


HEADER = (
    "| outbox | pushes/s (one worker) | msg/s offered (stored) | delay p50 ms | p99 ms | max ms "
    "| load avg before / after |\n|---|---|---|---|---|---|---|"
)


async def _spawn(args: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, *args, env=env, cwd=ROOT, stdout=out, stderr=out
        )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _accepted(http: httpx.AsyncClient) -> tuple[list[dict[str, Any]], int]:
    data = (await http.get("/deliveries")).json()
    return data["accepted"], len(data["problems"])


async def _wait_count(http: httpx.AsyncClient, count: int, timeout: float) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got, problems = await _accepted(http)
        if len(got) >= count:
            return got
        if problems or loop.time() > deadline:
            raise RuntimeError(f"{len(got)} pushes of {count}, {problems} refused by the service")
        await asyncio.sleep(0.25)


class Sender:
    """Stores messages from a counsellor to its beneficiaries, round robin."""

    def __init__(self, svc: Services, counsellor: User, conversations: list[str]) -> None:
        self.svc = svc
        self.counsellor = counsellor
        self.conversations = conversations
        self.n = 0
        self.stored_at: dict[tuple[str, int], float] = {}

    async def one(self) -> None:
        conv = self.conversations[self.n % len(self.conversations)]
        self.n += 1
        frame = p.MessageSend(
            id="b",
            conversation=conv,
            client_id=secrets.token_hex(8),
            msg_type="text",
            body=secrets.token_bytes(120),
            nonce=secrets.token_bytes(12),
        )
        stored, _ = await self.svc.conversations.send(self.counsellor, "desk", frame, "")
        self.stored_at[(conv, stored.seq)] = time.time()


async def measure(
    jobs: int, devices: int, share: float, seconds: float, poll: float = 1.0
) -> Result:
    """Run both measurements (see the module docstring)."""
    load_before = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="bench-push-"))
    engine = EmbeddedMongo(folder)
    await engine.start()
    url = engine.url + "?directConnection=true"
    settings = Settings(
        mongodb_url=url,
        mongodb_db="benchpush",
        data_dir=folder,
        require_e2ee=False,
        push_worker="off",
        retention_job="off",
        push_allow_loopback=True,
    )
    svc = await build_services(settings)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PUSH_", "METRICS_"))},
        "MONGODB_URL": url,
        "MONGODB_DB": settings.mongodb_db,
        "PUSH_ALLOW_LOOPBACK": "true",
        "RETENTION_JOB": "off",
        "LOG_LEVEL": "WARNING",
        "PUSH_POLL_SECONDS": str(poll),
    }
    service = await _spawn(
        ["-m", "tests.push.pushservice", "--port", str(port)], env, folder / "pushservice.log"
    )
    worker: asyncio.subprocess.Process | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    await http.get("/deliveries")
                    break
                await asyncio.sleep(0.05)
            acc = svc.accounts
            st = await acc.create_structure("Bench", "mission_locale", ("CEJ",))
            coun = await acc.create_user(Role.COUNSELLOR, "bench.c", "Claire", st.id, PASSWORD)
            convs = []
            for i in range(devices):
                nb = await acc.create_beneficiary(coun, f"bench.b{i}", f"Jeune {i}", "CEJ")
                info = (await http.post("/subscribe")).json()
                keys = info["keys"]
                await svc.push.subscribe(
                    nb.user.id,
                    "phone",
                    info["endpoint"],
                    keys["p256dh"],
                    keys["auth"],
                    NO_QUIET_HOURS,
                )
                convs.append(nb.conversation.id)
            sender = Sender(svc, coun, convs)
            for _ in range(jobs):
                await sender.one()
            worker = await _spawn(["-m", "notifications"], env, folder / "worker.log")
            got = await _wait_count(http, jobs, timeout=max(120.0, jobs / 5))
            times = sorted(d["at"] for d in got)
            rate = (len(times) - 1) / max(1e-9, times[-1] - times[0])
            # The delay at a share of that rate, the worker running.
            offered = max(1.0, share * rate)
            count = max(1, int(offered * seconds))
            sender.stored_at.clear()
            loop = asyncio.get_running_loop()
            start = loop.time()
            tasks = []
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / offered - loop.time()))
                tasks.append(asyncio.create_task(sender.one()))
            await asyncio.gather(*tasks)
            got = await _wait_count(http, jobs + count, timeout=60 + seconds)
            problems = (await _accepted(http))[1]
        at = {(d["conversation"], d["seq"]): d["at"] for d in got}
        delays = sorted(1000 * (at[k] - t) for k, t in sender.stored_at.items() if k in at)
        stored = sorted(sender.stored_at.values())
        stored_rate = (len(stored) - 1) / max(1e-9, stored[-1] - stored[0])
    finally:
        if worker is not None:
            await _stop(worker)
        await _stop(service)
        await svc.close()
        await engine.stop()
        shutil.rmtree(folder, ignore_errors=True)

    def q(f: float) -> float:
        return delays[min(len(delays) - 1, int(f * len(delays)))]

    return Result(
        jobs,
        devices,
        rate,
        offered,
        stored_rate,
        len(delays),
        q(0.5),
        q(0.99),
        delays[-1],
        load_before,
        os.getloadavg()[0],
        problems,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.push", description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000, help="outbox filled before the worker starts")
    ap.add_argument("--devices", type=int, default=50, help="subscribed devices (one per person)")
    ap.add_argument("--share", type=float, default=0.5, help="delay run: share of the throughput")
    ap.add_argument("--seconds", type=float, default=10.0, help="delay run: how long")
    ap.add_argument("--poll", type=float, default=1.0, help="the worker's PUSH_POLL_SECONDS")
    a = ap.parse_args(argv)
    r = asyncio.run(measure(a.jobs, a.devices, a.share, a.seconds, a.poll))
    print(HEADER)
    print(r.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
