"""Admin command line: create structures and accounts, seed a demo.

    chat-admin create-structure "Mission Locale de Lyon" --kind mission_locale --programmes CEJ
    chat-admin create-user --role counsellor --login c.martin --name "Claire Martin" \
        --structure <id> --password '...'
    chat-admin demo
    chat-admin retention          # one run of the retention job (docs/privacy.md)
    chat-admin export-account <login>   # an access request: the server-visible data, JSON
    chat-admin delete-account <login> --yes   # an erasure request (docs/privacy.md)
    chat-admin push-stats         # the push outbox and each push worker's figures, JSON

It talks to the configured store (``MONGODB_URL``, or the embedded engine in
``DATA_DIR``). Errors print a message and exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from chat_server.lifecycle.export import account_export
from chat_server.rooms.errors import DomainError, NotFound
from chat_server.rooms.models import Role
from chat_server.services import Services, build_services
from chat_server.settings import SettingsError, load_settings
from chat_server.storage.base import Conflict
from chat_server.storage.embedded import EngineError
from notifications.store import PushStore

DEMO_PASSWORD = "demo-password-2026"  # noqa: S105 - printed demo credential
DEMO_STRUCTURE = "Mission Locale de démonstration"


async def seed_demo(svc: Services) -> list[str]:
    """Create a demo structure, a supervisor, two counsellors and three beneficiaries.

    Idempotent: if the demo counsellor exists nothing is created. Returns the
    lines to print (logins, the password and activation codes).
    """
    lines = [f"Demo accounts (password for all: {DEMO_PASSWORD}):"]
    existing = await svc.accounts_store.find_user_by_login("conseiller.demo")
    if existing is not None:
        lines.append("  (already seeded) conseiller.demo, conseillere2.demo, superviseur.demo,")
        lines.append("  jeune1.demo, jeune2.demo, jeune3.demo")
        return lines
    acc = svc.accounts
    st = await acc.create_structure(DEMO_STRUCTURE, "mission_locale", ("CEJ", "AIJ", "BRSA"))
    sup = await acc.create_user(
        Role.SUPERVISOR, "superviseur.demo", "Sophie Bernard", st.id, DEMO_PASSWORD
    )
    c1 = await acc.create_user(
        Role.COUNSELLOR, "conseiller.demo", "Karim Benali", st.id, DEMO_PASSWORD
    )
    await acc.create_user(Role.COUNSELLOR, "conseillere2.demo", "Léa Dubois", st.id, DEMO_PASSWORD)
    lines.append(f"  counsellor  conseiller.demo    (Karim Benali)   structure {st.id}")
    lines.append("  counsellor  conseillere2.demo  (Léa Dubois)")
    lines.append(f"  supervisor  {sup.login}")
    names = [
        ("jeune1.demo", "Inès Moreau", "CEJ"),
        ("jeune2.demo", "Lucas Petit", "CEJ"),
        ("jeune3.demo", "Yasmine Haddad", "BRSA"),
    ]
    for login, name, prog in names:
        nb = await acc.create_beneficiary(c1, login, name, prog)
        await svc.accounts.set_password(nb.user.id, DEMO_PASSWORD)
        lines.append(f"  beneficiary {login:18} ({name}, {prog})")
    return lines


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="chat-admin", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("create-structure", help="create a structure")
    s.add_argument("name")
    s.add_argument("--kind", choices=["mission_locale", "france_travail", "other"], required=True)
    s.add_argument("--programmes", default="CEJ", help="comma-separated, e.g. CEJ,AIJ,BRSA")
    u = sub.add_parser("create-user", help="create a counsellor, supervisor or admin")
    u.add_argument("--role", choices=["counsellor", "supervisor", "admin"], required=True)
    u.add_argument("--login", required=True)
    u.add_argument("--name", required=True)
    u.add_argument("--structure", default=None)
    u.add_argument("--password", default=None, help="prompted for when omitted")
    sub.add_parser("list-structures", help="list structures")
    sub.add_parser("demo", help="seed the demo structure and accounts")
    sub.add_parser("retention", help="run the retention job once and print what it removed")
    e = sub.add_parser(
        "export-account", help="print, as JSON, everything the server holds about one account"
    )
    e.add_argument("login")
    d = sub.add_parser(
        "delete-account", help="erase one account with everything that belongs to it (no undo)"
    )
    d.add_argument("login")
    d.add_argument("--yes", action="store_true", required=True, help="confirm: it cannot be undone")
    sub.add_parser("push-stats", help="the push outbox and each push worker's figures, as JSON")
    return ap


#: A worker that has not reported for this long is gone (it reports every PUSH_STATS_SECONDS).
WORKER_GONE_SECONDS = 600.0
#: The counters of ``PushWorker.stats`` that add up over workers.
_SUMMED = ("sent", "pruned", "retried", "short_payloads", "skipped")


async def push_stats(store: PushStore, now: float | None = None) -> dict[str, Any]:
    """The outbox now (``queued``; ``oldest_job_age``: how long its earliest due job has
    been due), each live worker's latest report
    (``workers``: counters since that worker started) and their sum (``total``)."""
    now = time.time() if now is None else now
    queued, oldest = await store.queue_stats(now)
    workers = await store.worker_stats(now - WORKER_GONE_SECONDS)
    total: dict[str, Any] = dict.fromkeys(_SUMMED, 0)
    failed: Counter[str] = Counter()
    for w in workers:
        for k in _SUMMED:
            total[k] += int(w["stats"].get(k, 0))
        failed.update({str(c): int(n) for c, n in (w["stats"].get("failed") or {}).items()})
    total["failed"] = dict(failed)
    return {
        "queued": queued,
        "oldest_job_age": 0.0 if oldest is None else round(max(0.0, now - oldest), 1),
        "total": total,
        "workers": workers,
    }


async def _run(args: argparse.Namespace) -> list[str]:
    settings = load_settings()
    svc = await build_services(settings)
    _stop_background_tasks(svc)
    try:
        if args.cmd == "create-structure":
            progs = tuple(p.strip() for p in args.programmes.split(",") if p.strip())
            st = await svc.accounts.create_structure(args.name, args.kind, progs)
            return [f"structure {st.id} {st.name}"]
        if args.cmd == "create-user":
            password = args.password or getpass.getpass("password: ")
            user = await svc.accounts.create_user(
                Role(args.role), args.login, args.name, args.structure, password
            )
            return [f"{user.role.value} {user.id} {user.login}"]
        if args.cmd == "export-account":
            found = await svc.accounts_store.find_user_by_login(args.login)
            data = None
            if found is not None:
                data = await account_export(
                    found.id,
                    svc.accounts_store,
                    svc.messages,
                    svc.presence,
                    svc.key_store,
                    svc.lifecycle_store,
                )
            if data is None:
                raise NotFound(f"no account with the login {args.login!r}")
            return [json.dumps(data, ensure_ascii=False, indent=2)]
        if args.cmd == "delete-account":
            found = await svc.accounts_store.find_user_by_login(args.login)
            if found is None or found.erasing is not None:
                raise NotFound(f"no account with the login {args.login!r}")
            if await svc.retention.follows_anyone(found):
                raise DomainError(
                    f"{found.login} still follows beneficiaries: a supervisor must transfer them"
                )
            erasure = await svc.lifecycle.eraser.erase(found, "admin", "request")
            if erasure is None:
                raise NotFound(f"no account with the login {args.login!r}")
            return [f"erased {args.login} (audit records now name {erasure.pseudonym})"]
        if args.cmd == "push-stats":
            return [json.dumps(await push_stats(svc.push.store), indent=2)]
        if args.cmd == "retention":
            report = await svc.retention.run_exclusive("chat-admin-" + svc.process_id)
            if report is None:
                raise DomainError(
                    "another process is running the retention job now (it holds the lease); "
                    "try again in a minute"
                )
            return [f"{name} {count}" for name, count in report.as_dict().items()]
        if args.cmd == "list-structures":
            return [
                f"{s.id} {s.kind:15} {s.name}" for s in await svc.accounts_store.list_structures()
            ]
        return await seed_demo(svc)
    finally:
        await svc.close()


def _stop_background_tasks(svc: Services) -> None:
    """Cancel the services' background tasks before they first run.

    A command holds no connections, so it has no use for the presence
    heartbeat. Call this right after ``build_services`` returns, before any
    ``await``: the tasks have not started, so cancelling them interrupts no
    database operation (PyMongo's asyncio API can absorb a cancellation that
    lands mid-operation, which left ``close()`` waiting forever, or leave that
    operation's socket unclosed).
    """
    for task in svc._tasks:
        task.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``chat-admin``."""
    args = _parser().parse_args(argv)
    try:
        lines = asyncio.run(_run(args))
    except (SettingsError, DomainError, Conflict, EngineError) as exc:
        print(f"chat-admin: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
