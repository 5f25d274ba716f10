"""The servers under test and how to start each one.

``chat-*`` are this project's server (``bench.serve_chat``: ``create_app``
with the ``chat-server`` uvicorn configuration); the rest are the peers of
``bench/peers``, which store nothing and check nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import HOST, Engine, Group, Redis, free_port, python, spawn, wait_http
from chat_server.crypto.verify_pool import default_verifier


@dataclass(frozen=True)
class Target:
    """One server configuration."""

    key: str
    label: str
    kind: str  # chat | ws | starlette | socketio
    procs: int = 1
    store: str = ""  # chat: memory | embedded
    redis: bool = False
    persists: bool = False
    signed: bool = False  # chat: REQUIRE_E2EE=true, real signed messages
    verifier: str = "auto"  # chat, signed: VERIFIER (threads: VERIFY_THREADS=2)
    cpus: tuple[int, ...] = ()  # the server's cores instead of --server-cpus (shared: say so)

    @property
    def dialect(self) -> str:
        return {"chat": "chat", "socketio": "socketio"}.get(self.kind, "relay")


TARGETS: dict[str, Target] = {
    t.key: t
    for t in (
        Target("chat-mem", "chat, memory store, in-process broker", "chat", store="memory"),
        Target(
            "chat-mem-e2ee",
            "chat, memory store, in-process broker, signatures checked",
            "chat",
            store="memory",
            signed=True,
        ),
        Target(
            "chat-mem-e2ee-threads",
            "chat, memory store, in-process broker, signatures checked on 2 threads",
            "chat",
            store="memory",
            signed=True,
            verifier="threads",
        ),
        Target(
            "chat-mem-e2ee-inline",
            "chat, memory store, in-process broker, signatures checked on the loop",
            "chat",
            store="memory",
            signed=True,
            verifier="loop",
        ),
        Target(
            "chat-mem-e2ee-2c",
            "chat, memory store, in-process broker, signatures checked, 2 cores",
            "chat",
            store="memory",
            signed=True,
            cpus=(0, 1),
        ),
        Target(
            "chat-mem-e2ee-2c-threads",
            "chat, memory store, in-process broker, signatures checked on 2 threads, 2 cores",
            "chat",
            store="memory",
            signed=True,
            verifier="threads",
            cpus=(0, 1),
        ),
        Target(
            "chat-mem-2c",
            "chat, memory store, in-process broker, 2 cores",
            "chat",
            store="memory",
            cpus=(0, 1),
        ),
        Target(
            "chat-mem-redis",
            "chat, memory store, Redis, 1 process",
            "chat",
            store="memory",
            redis=True,
        ),
        Target(
            "chat-emb",
            "chat, embedded engine, in-process broker",
            "chat",
            store="embedded",
            persists=True,
        ),
        Target(
            "chat-emb-redis",
            "chat, embedded engine, Redis, 1 process",
            "chat",
            store="embedded",
            redis=True,
            persists=True,
        ),
        Target(
            "chat-emb-redis-2",
            "chat, embedded engine, Redis, 2 processes",
            "chat",
            procs=2,
            store="embedded",
            redis=True,
            persists=True,
        ),
        Target(
            "chat-emb-redis-e2ee",
            "chat, embedded engine, Redis, 1 process, signatures checked",
            "chat",
            store="embedded",
            redis=True,
            persists=True,
            signed=True,
        ),
        Target("sio", "python-socketio, in-memory manager", "socketio"),
        Target(
            "sio-redis", "python-socketio, AsyncRedisManager, 1 process", "socketio", redis=True
        ),
        Target(
            "sio-redis-2",
            "python-socketio, AsyncRedisManager, 2 processes",
            "socketio",
            procs=2,
            redis=True,
        ),
        Target("ws", "bare relay, websockets asyncio server", "ws"),
        Target("starlette", "bare relay, Starlette on uvicorn", "starlette"),
    )
}


def describe(t: Target, env: Env | None = None, *, signed: bool | None = None) -> str:
    """What a row runs: signed or not, store, broker, processes, threads, cores."""
    signed = (t.signed or (env is not None and env.signed)) if signed is None else signed
    procs = f"{t.procs} process" + ("es" if t.procs > 1 else "")
    cpus = set(t.cpus) or (env.server_cpus if env is not None else {0})
    cores = f"server on CPU {','.join(map(str, sorted(cpus)))}"
    if env is not None and t.cpus and set(t.cpus) & env.loadgen_cpus:
        cores += " (shared with the load generator)"
    if t.kind != "chat":
        base = t.label if "process" in t.label else f"{t.label}, {procs}"
        return f"{base}, {cores} (stores nothing, checks nothing)"
    if signed:
        how = t.verifier if t.verifier != "auto" else default_verifier(len(cpus))
        how = {
            "loop": "verified on the event loop",
            "threads": "2 verify threads",
            "process": "verified in a child process",
        }[how]
        how = f"signed, {how}" + (" (VERIFIER=auto)" if t.verifier == "auto" else "")
    else:
        how = "unsigned"
    store = "memory store" if t.store == "memory" else "embedded engine"
    broker = "Redis" if t.redis else "in-process broker"
    return f"chat, {how}, {store}, {broker}, {procs}, {cores}"


@dataclass
class Env:
    """Shared services of a benchmark session (engine, Redis) and its settings."""

    server_cpus: set[int]
    logdir: Path
    loadgen_cpus: set[int] = field(default_factory=set)
    signed: bool = False
    engine: Engine | None = None
    redis: Redis | None = None
    channel_seq: int = 0
    profile_dir: Path | None = None


async def start(t: Target, env: Env, pairs: int, port: int | None = None) -> Group:
    """Start every process of ``t`` and wait until each answers HTTP."""
    group = Group(t.key)
    base_env = dict(os.environ)
    base_env.pop("BENCH_CPUS", None)
    env.channel_seq += 1
    channel = f"bench-sio-{env.channel_seq}"
    for i in range(t.procs):
        p = port if port is not None and i == 0 else free_port()
        name = f"{t.key}-{i}"
        penv = dict(base_env)
        argv: list[str]
        path = "/healthz"
        if t.kind == "chat":
            signed = env.signed or t.signed
            penv |= {
                "HOST": HOST,
                "PORT": str(p),
                "REQUIRE_E2EE": "true" if signed else "false",
                # The bench measures throughput, not the per-connection abuse limit.
                "RATE_PER_SECOND": "1000000",
                "RATE_BURST": "1000000",
                "LOG_LEVEL": "WARNING",
                "VERIFIER": t.verifier,
                "VERIFY_THREADS": "2",
            }
            seed_pairs = 0
            if t.store == "memory":
                penv["STORE"] = "memory"
                seed_pairs = pairs
            else:
                assert env.engine is not None
                await env.engine.seed(pairs, signed)
                penv["MONGODB_URL"] = env.engine.url
            if t.redis:
                assert env.redis is not None
                penv["REDIS_URL"] = env.redis.url
            argv = [python(), "-m", "bench.serve_chat", "--pairs", str(seed_pairs)]
            if signed:
                argv.append("--signed")
        elif t.kind == "ws":
            argv = [python(), "-m", "bench.peers.ws_relay", "--port", str(p)]
        elif t.kind == "starlette":
            argv = [python(), "-m", "bench.peers.starlette_relay", "--port", str(p)]
        elif t.kind == "socketio":
            argv = [python(), "-m", "bench.peers.socketio_server", "--port", str(p)]
            if t.redis:
                assert env.redis is not None
                argv += ["--redis", env.redis.url, "--channel", channel]
            path = "/"
        else:
            raise ValueError(t.kind)
        cpus = set(t.cpus) or env.server_cpus
        group.procs.append(spawn(name, argv, penv, cpus, env.logdir, p))
    try:
        for proc in group.procs:
            await wait_http(proc.port, path, proc, 120)
    except BaseException:
        group.stop()
        raise
    return group
