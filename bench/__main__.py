"""``python -m bench``: run the benchmarks of issue #5 and print the tables.

    python -m bench --quick                 # smoke run, about 3 minutes
    python -m bench                         # full run, about 20 minutes
    python -m bench --only saturation --targets chat-mem,starlette --runs 5
    python -m bench --only push             # one push worker: pushes/s, delay (bench/push.py)

Servers (and the embedded engine, and Redis) run pinned to ``--server-cpus``;
the load generator workers to ``--loadgen-cpus``. Targets of each scenario
run one after the other within a round, rounds repeat ``--runs`` times, so
every ratio compares runs made minutes apart on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import Job
from bench.procs import Engine, Redis, stop_all
from bench.report import Runs, machine, markdown
from bench.scenarios import LoadGen, idle_memory, storm, traffic
from bench.targets import TARGETS, Env, Target, describe
from bench.workload import Payloads

SCENARIOS = ("saturation", "latency", "memory", "storm")
DEFAULT_TARGETS = {
    "saturation": [
        "chat-mem",
        "chat-mem-e2ee",
        "chat-mem-e2ee-threads",
        "chat-mem-e2ee-2c",
        "chat-mem-e2ee-2c-threads",
        "chat-mem-redis",
        "chat-emb",
        "chat-emb-redis",
        "chat-emb-redis-2",
        "chat-emb-redis-e2ee",
        "sio",
        "sio-redis",
        "sio-redis-2",
        "ws",
        "starlette",
    ],
    "latency": [
        "chat-mem",
        "chat-mem-e2ee",
        "chat-mem-e2ee-threads",
        "chat-mem-e2ee-2c",
        "chat-emb-redis",
        "sio",
        "ws",
        "starlette",
    ],
    "memory": ["chat-mem", "sio", "ws", "starlette"],
    "storm": ["chat-mem", "chat-emb"],
}
# The embedded engine takes about 500-700 msg/s here, less than the latency run's
# 1,000: its backlog makes these rows long and alike, so they run in the first round only.
SLOW = {("latency", "chat-emb"), ("latency", "chat-emb-redis"), ("memory", "chat-emb")}


def _cpus(text: str) -> set[int]:
    return {int(c) for c in text.split(",") if c.strip()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (one round)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    ap.add_argument("--targets", default="", help="restrict to these targets (comma-separated)")
    ap.add_argument("--runs", type=int, default=0, help="rounds (default 3, quick 1)")
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--loadgen-cpus", default="1")
    ap.add_argument("--workers", type=int, default=1, help="load generator processes")
    ap.add_argument("--pairs", type=int, default=0, help="saturation: conversations")
    ap.add_argument("--inflight", type=int, default=0, help="saturation: messages in flight")
    ap.add_argument("--rate", type=float, default=0, help="latency: offered msg/s")
    ap.add_argument("--latency-pairs", type=int, default=0)
    ap.add_argument("--memory-steps", default="", help="e.g. 5000,10000")
    ap.add_argument("--storm-clients", type=int, default=0, help="storm, memory store (drop)")
    ap.add_argument(
        "--storm-clients-embedded", type=int, default=0, help="storm, embedded engine (restart)"
    )
    ap.add_argument(
        "--all-rounds", action="store_true", help="run the slow embedded rows in every round"
    )
    ap.add_argument("--signed", action="store_true", help="real E2EE messages, REQUIRE_E2EE=true")
    ap.add_argument("--profile", default="", help="py-spy the servers into this folder")
    ap.add_argument(
        "--signed-cap",
        type=float,
        default=16000.0,
        help="signed saturation: msg/s the pre-signed supply is sized for (a row that "
        "runs out is marked as a lower bound)",
    )
    ap.add_argument("--json", default="", help="write every run's figures to this file")
    ap.add_argument("--markdown", default="", help="write the tables to this file")
    return ap.parse_args(argv)


class Plan:
    """Sizes and durations of a full or a quick run."""

    def __init__(self, a: argparse.Namespace) -> None:
        q = a.quick
        self.runs = a.runs or (1 if q else 3)
        self.pairs = a.pairs or (50 if q else 100)
        self.inflight = a.inflight or 2
        self.sat_warmup, self.sat_duration = (1.0, 3.0) if q else (2.0, 6.0)
        self.rate = a.rate or (500.0 if q else 1000.0)
        self.latency_pairs = a.latency_pairs or (200 if q else 1000)
        self.lat_warmup, self.lat_duration = (1.0, 4.0) if q else (2.0, 10.0)
        steps = a.memory_steps or ("500,1000" if q else "5000,10000")
        self.memory_steps = [int(s) for s in steps.split(",")]
        self.storm_clients = a.storm_clients or (500 if q else 5000)
        self.storm_clients_embedded = a.storm_clients_embedded or (200 if q else 5000)
        self.storm_rate = 200.0 if q else 1000.0
        # The restart storm must not start from an overloaded store: below its saturation.
        self.storm_rate_embedded = 50.0 if q else 100.0
        self.storm_traffic = 2.0 if q else 4.0


def _targets(scenario: str, wanted: list[str]) -> list[Target]:
    keys = DEFAULT_TARGETS[scenario]
    if wanted:
        # The scenario's own targets in their order, then any other named target.
        keys = [k for k in keys if k in wanted] + [
            k for k in wanted if k not in keys and k in TARGETS and scenario == "saturation"
        ]
    return [TARGETS[k] for k in keys]


def _short(r: dict[str, Any]) -> str:
    keys = (
        "throughput",
        "delivered_rate",
        "per_core",
        "p50_ms",
        "p99_ms",
        "server_cpu",
        "other_cpu",
        "loadgen_cpu",
        "incomplete",
        "exhausted",
        "kib_per_conn_5000",
        "kib_per_conn_10000",
        "caught_up_after_ready",
        "lost",
    )
    parts = []
    for k in keys:
        v = r.get(k)
        if isinstance(v, float):
            parts.append(f"{k}={v:,.2f}")
        elif isinstance(v, int):
            parts.append(f"{k}={v:,}")
    for k, v in r.items():
        if k.startswith("kib_per_conn_") and k not in keys:
            parts.append(f"{k}={v:,.1f}")
    if r.get("errors"):
        parts.append(f"errors={r['errors']}")
    return " ".join(parts)


async def run(a: argparse.Namespace) -> int:
    plan = Plan(a)
    server_cpus, lg_cpus = _cpus(a.server_cpus), _cpus(a.loadgen_cpus)
    os.sched_setaffinity(0, lg_cpus)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logdir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    env = Env(server_cpus=server_cpus, logdir=logdir, signed=a.signed, loadgen_cpus=lg_cpus)
    if a.profile:
        env.profile_dir = Path(a.profile)
        env.profile_dir.mkdir(parents=True, exist_ok=True)
    scenarios = [s for s in a.only.split(",") if s]
    if "push" in scenarios:  # not a target comparison: bench/push.py, its own processes
        from bench import push

        scenarios.remove("push")
        figures = await push.measure(*((500, 20, 0.5, 5.0) if a.quick else (2000, 50, 0.5, 10.0)))
        print(f"push (one worker)\n{push.HEADER}\n{figures.row()}", flush=True)
        if not scenarios:
            return 0
    lg = LoadGen(cpus=lg_cpus, workers=a.workers)
    wanted = [t for t in a.targets.split(",") if t]
    chosen = {s: _targets(s, wanted) for s in scenarios}
    every = [t for ts in chosen.values() for t in ts]
    runs: Runs = {s: {} for s in scenarios}
    meta: dict[str, Any] = {"memory_steps": plan.memory_steps}
    body = Payloads.make(1).mean_body_b64()
    meta["saturation"] = (
        f"{plan.pairs} conversations ({2 * plan.pairs} clients), {plan.inflight} messages in "
        f"flight per client, {plan.sat_warmup:g} s warm-up, {plan.sat_duration:g} s measured; "
        f"body {body:.0f} base64 chars on average, nonce 12 B, sig 64 B."
    )
    meta["latency"] = (
        f"{plan.rate:,.0f} msg/s offered over {plan.latency_pairs:,} conversations "
        f"({2 * plan.latency_pairs:,} clients connected), {plan.lat_duration:g} s measured; "
        f"latency = sender's intended send time to the other member's receipt."
    )
    meta["storm"] = (
        f"{plan.storm_rate:,.0f} msg/s (memory store) or {plan.storm_rate_embedded:,.0f} msg/s "
        f"(embedded engine) offered for {plan.storm_traffic:g} s, then: *restart* = "
        "SIGKILL of the server and a restart on the same port (the embedded engine, a separate "
        "process, keeps the data); *drop* = every client drops its TCP connection at once (the "
        "memory store would not survive a restart). Clients reconnect at once (retry every "
        "0.25 s), resume with their last contiguous seq and resend what was not acked; "
        "caught up = reconnected, synced, every own message acked and every seq of the "
        "conversation held."
    )
    print(f"machine: {machine()}  logs: {logdir}", flush=True)
    t_start = time.monotonic()
    try:
        if any(t.store == "embedded" for t in every):
            env.engine = Engine(server_cpus)
            await env.engine.start()
            # Seed once for every scenario: seeding goes through the Mongo stores.
            t0 = time.monotonic()
            need = max(
                plan.pairs,
                plan.latency_pairs
                if any(t.store == "embedded" for t in chosen.get("latency", []))
                else 0,
                plan.memory_steps[-1] // 2
                if any(t.store == "embedded" for t in chosen.get("memory", []))
                else 0,
                plan.storm_clients_embedded // 2,
            )
            signed = a.signed or any(t.signed and t.store == "embedded" for t in every)
            await env.engine.seed(need, signed)
            print(f"engine seeded with {need} pairs in {time.monotonic() - t0:.1f} s", flush=True)
        if any(t.redis for t in every):
            env.redis = Redis(server_cpus, logdir)
            await env.redis.wait()
        for r in range(plan.runs):
            for scenario in scenarios:
                for t in chosen[scenario]:
                    if r > 0 and (scenario, t.key) in SLOW and not a.all_rounds:
                        continue
                    result = await _one(scenario, t, env, lg, plan, a)
                    result["label"] = describe(t, env)
                    runs[scenario].setdefault(t.key, []).append(result)
                    print(f"[round {r + 1}] {scenario} {t.key}: {_short(result)}", flush=True)
    finally:
        stop_all()
        if env.redis is not None:
            env.redis.stop()
        if env.engine is not None:
            try:
                await env.engine.stop()
            finally:
                env.engine.kill()
    meta["minutes"] = (time.monotonic() - t_start) / 60
    text = markdown(runs, meta)
    print("\n" + text)
    print(f"total {meta['minutes']:.1f} min", flush=True)
    await asyncio.to_thread(_write, a, runs, meta, text)
    return 0


def _write(a: argparse.Namespace, runs: Runs, meta: dict[str, Any], text: str) -> None:
    if a.json:
        Path(a.json).write_text(
            json.dumps({"machine": machine(), "meta": meta, "runs": runs}, indent=1)
        )
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")


async def _one(
    scenario: str, t: Target, env: Env, lg: LoadGen, plan: Plan, a: argparse.Namespace
) -> dict[str, Any]:
    if scenario == "saturation":
        job = Job(
            mode="closed",
            dialect=t.dialect,
            endpoints=[],
            pairs=list(range(plan.pairs)),
            inflight=plan.inflight,
            warmup=plan.sat_warmup,
            duration=plan.sat_duration,
            signed=a.signed or t.signed,
            signed_messages=math.ceil(
                a.signed_cap * (plan.sat_warmup + plan.sat_duration + 1) / (2 * plan.pairs)
            )
            + plan.inflight,
        )
        return await traffic(t, env, lg, job)
    if scenario == "latency":
        job = Job(
            mode="open",
            dialect=t.dialect,
            endpoints=[],
            pairs=list(range(plan.latency_pairs)),
            rate=plan.rate,
            warmup=plan.lat_warmup,
            duration=plan.lat_duration,
            signed=a.signed or t.signed,
            signed_messages=math.ceil(
                1.2 * plan.rate * (plan.lat_warmup + plan.lat_duration) / (2 * plan.latency_pairs)
            )
            + 2,
        )
        return await traffic(t, env, lg, job)
    if scenario == "memory":
        return await idle_memory(t, env, lg, plan.memory_steps)
    if scenario == "storm":
        job = Job(
            mode="storm",
            dialect=t.dialect,
            endpoints=[],
            pairs=[],
            warmup=plan.storm_traffic,
            storm_rate=plan.storm_rate_embedded if t.persists else plan.storm_rate,
            connect_deadline=600,
            signed=a.signed or t.signed,
            signed_messages=math.ceil(
                1.5 * plan.storm_rate * plan.storm_traffic / plan.storm_clients_embedded
            )
            + 2,
        )
        clients = plan.storm_clients_embedded if t.persists else plan.storm_clients
        return await storm(t, env, lg, clients, job)
    raise ValueError(scenario)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    # SIGTERM unwinds like Ctrl-C, so every server, the engine and Redis are stopped.
    signal.signal(signal.SIGTERM, _terminate)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(a))
    stop_all()
    return 130


if __name__ == "__main__":
    sys.exit(main())
