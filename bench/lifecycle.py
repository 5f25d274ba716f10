"""How long the data lifecycle's heavy steps take on the embedded engine (issue #17).

    python -m bench.lifecycle [--messages 10000] [--sessions 2000]

Two measurements, on an embedded engine in a temporary folder, through the
real services (``build_services`` with a clock the bench moves):

- erasure: a beneficiary whose conversation holds ``--messages`` messages
  deletes their account (``LifecycleService.delete_own_account``: the password
  check, the conversation's content, the audit records, the account);
- retention: ``--sessions`` expired sessions purged by successive runs of the
  retention job in batches of ``RETENTION_BATCH_SIZE`` (200): the time of one
  run and of the whole backlog.

Not a test: the figures depend on the machine (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from chat_server.crypto.tokens import new_token, token_hash
from chat_server.rooms.models import NewMessage, Role, Session
from chat_server.services import build_services
from chat_server.settings import Settings
from chat_server.storage.embedded import EmbeddedMongo

PASSWORD = "bench-password-2026"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def main(messages: int, sessions: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    engine = EmbeddedMongo(folder)
    await engine.start()
    clock = Clock()
    settings = Settings(
        mongodb_url=engine.url + "?directConnection=true",
        mongodb_db="bench",
        require_e2ee=False,
        retention_job="off",
    )
    svc = await build_services(replace(settings), clock=clock)
    try:
        acc = svc.accounts
        st = await acc.create_structure("ML", "mission_locale", ("CEJ",))
        c = await acc.create_user(Role.COUNSELLOR, "c1", "Claire", st.id, PASSWORD)
        nb = await acc.create_beneficiary(c, "b1", "Inès", "CEJ")
        await acc.set_password(nb.user.id, PASSWORD)
        conv = nb.conversation.id
        t0 = time.perf_counter()
        for i in range(messages):
            sender = nb.user.id if i % 2 else c.id
            body = secrets.token_bytes(200)
            await svc.messages.append(
                NewMessage(conv, f"m{i}", sender, "dev-" + sender, "text", body), clock.now
            )
        fill = time.perf_counter() - t0
        user = await svc.accounts_store.get_user(nb.user.id)
        assert user is not None
        t0 = time.perf_counter()
        await svc.lifecycle.delete_own_account(user, PASSWORD)
        erase = time.perf_counter() - t0
        assert await svc.messages.last_seq(conv) == 0
        print(
            f"erasure of a {messages}-message conversation: {erase * 1000:.0f} ms "
            f"(storing them took {fill:.1f} s)"
        )

        for _ in range(sessions):
            await svc.accounts_store.add_session(
                Session(token_hash(new_token()), c.id, "d", clock.now, clock.now + 10)
            )
        clock.now += 60
        runs: list[float] = []
        removed = 0
        while True:
            t0 = time.perf_counter()
            report = await svc.retention.run_once()
            runs.append(time.perf_counter() - t0)
            removed += report.sessions
            if report.sessions == 0:
                break
        batch = svc.retention.policy.batch
        print(
            f"retention: {removed} expired sessions in {len(runs) - 1} runs of at most {batch}; "
            f"one full run {max(runs[:-1]) * 1000:.0f} ms at most, an idle run "
            f"{runs[-1] * 1000:.0f} ms; the backlog {sum(runs):.2f} s"
        )
    finally:
        await svc.close()
        await engine.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--sessions", type=int, default=2_000)
    args = ap.parse_args()
    asyncio.run(main(args.messages, args.sessions))
