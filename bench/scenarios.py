"""One measurement each: saturation, latency, idle memory, reconnect storm.

Each function starts the target server(s) fresh, runs the load generator
workers against them, stops the servers and returns one run's figures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bench.loadgen import Job, worker_main
from bench.procs import CLK_TCK, Group, cpu_seconds
from bench.targets import Env, Target, start

_CTX = multiprocessing.get_context("spawn")


@dataclass
class LoadGen:
    """Where and how wide the load generator runs."""

    cpus: set[int]
    workers: int = 1


@dataclass
class Workers:
    """Running worker processes and their pipes."""

    procs: list[BaseProcess] = field(default_factory=list)
    pipes: list[Connection] = field(default_factory=list)

    async def recv_all(self, timeout: float) -> list[Any]:
        loop = asyncio.get_running_loop()
        out = []
        for pipe in self.pipes:
            ok = await loop.run_in_executor(None, pipe.poll, timeout)
            if not ok:
                raise TimeoutError("a load generator worker did not answer in time")
            out.append(pipe.recv())
        return out

    def send_all(self, msg: Any) -> None:
        for pipe in self.pipes:
            pipe.send(msg)

    def join(self) -> None:
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)


def spawn_workers(job: Job, lg: LoadGen) -> Workers:
    """Split ``job.pairs`` over ``lg.workers`` processes (a pair stays in one worker)."""
    w = Workers()
    n = max(1, min(lg.workers, len(job.pairs)))
    for i in range(n):
        part = replace(
            job,
            pairs=job.pairs[i::n],
            rate=job.rate / n,
            storm_rate=job.storm_rate / n,
            first_batch=(job.first_batch + n - 1 - i) // n if job.first_batch else 0,
            cpus=lg.cpus,
            seed=job.seed * 1000 + i,
        )
        parent, child = _CTX.Pipe()
        proc = _CTX.Process(target=worker_main, args=(part, child), daemon=True)
        proc.start()
        w.procs.append(proc)
        w.pipes.append(parent)
    return w


def _check_connected(infos: list[Any], what: str) -> dict[str, Any]:
    connected = sum(i[1]["connected"] for i in infos)
    failed = sum(i[1]["failed"] for i in infos)
    seconds = max(i[1]["connect_seconds"] for i in infos)
    if failed:
        raise RuntimeError(f"{what}: {failed} clients could not connect")
    return {"connected": connected, "connect_seconds": seconds}


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN if empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lat: list[float] = []
    ack: list[float] = []
    errors: dict[str, int] = {}
    for r in results:
        lat.extend(r.pop("lat", []))
        ack.extend(r.pop("ack_lat", []))
        for k, v in r.pop("errors", {}).items():
            errors[k] = errors.get(k, 0) + v
        for k, v in r.items():
            if isinstance(v, bool):
                out[k] = out.get(k, True) and v
            elif isinstance(v, int | float) and k not in ("window", "loadgen_cpu"):
                out[k] = out.get(k, 0) + v
            else:
                out[k] = v
    out["loadgen_cpu"] = sum(r.get("loadgen_cpu", 0.0) for r in results)
    out["errors"] = errors
    out["p50_ms"] = quantile(lat, 0.50) * 1000
    out["p99_ms"] = quantile(lat, 0.99) * 1000
    out["max_ms"] = max(lat) * 1000 if lat else float("nan")
    out["ack_p50_ms"] = quantile(ack, 0.50) * 1000
    out["ack_p99_ms"] = quantile(ack, 0.99) * 1000
    return out


def _cores_busy(cpus: set[int]) -> float:
    """Busy seconds (everything but idle and iowait) of ``cpus`` since boot."""
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name = line.split(maxsplit=1)[0]
        if name.startswith("cpu") and name != "cpu" and int(name[3:]) in cpus:
            v = [int(x) for x in line.split()[1:]]
            busy += sum(v[:8]) - v[3] - v[4]
    return busy / CLK_TCK


class CpuMeter:
    """CPU use over a window: the server group, the engine, Redis, and the server cores.

    ``other_cpu`` is what other processes took from the server cores: on a
    shared machine it explains a low throughput with a low ``server_cpu``.
    """

    def __init__(self, group: Group, env: Env) -> None:
        self.group = group
        self.env = env
        self.t0 = 0.0
        self.c0: tuple[float, ...] = ()

    def _now(self) -> tuple[float, ...]:
        engine = cpu_seconds(self.env.engine.pid) if self.env.engine else 0.0
        redis = cpu_seconds(self.env.redis.proc.pid) if self.env.redis else 0.0
        return self.group.cpu(), engine, redis, _cores_busy(self.env.server_cpus)

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = self._now()

    def end(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        s, e, r, busy = (b - a for a, b in zip(self.c0, self._now(), strict=True))
        return {
            "server_cpu": s / wall,
            "engine_cpu": e / wall,
            "redis_cpu": r / wall,
            "other_cpu": max(0.0, busy - s - e - r) / wall,
        }


def _profile(group: Group, env: Env, name: str, seconds: float) -> list[subprocess.Popen[bytes]]:
    """With ``env.profile_dir``: py-spy the server processes (and the engine) for the window."""
    if env.profile_dir is None:
        return []
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    pids = [(p.name, p.pid) for p in group.procs]
    if env.engine is not None and group.name.startswith("chat-emb"):
        pids.append(("engine", env.engine.pid))
    out = []
    for pname, pid in pids:
        path = env.profile_dir / f"{name}-{pname}.txt"
        argv = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200"]
        argv += ["-f", "raw", "-o", str(path), "--nonblocking"]
        out.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return out


async def traffic(
    t: Target, env: Env, lg: LoadGen, job: Job, *, seed_pairs: int | None = None
) -> dict[str, Any]:
    """A closed- or open-loop run: connect, warm up, measure, drain."""
    group = await start(t, env, seed_pairs or len(job.pairs))
    workers = Workers()
    try:
        workers = spawn_workers(replace(job, endpoints=group.endpoints), lg)
        conn = _check_connected(await workers.recv_all(job.connect_deadline + 30), t.key)
        start_at = time.time() + 0.3
        workers.send_all(("go", start_at))
        meter = CpuMeter(group, env)
        await asyncio.sleep(max(0.0, start_at + job.warmup - time.time()))
        meter.begin()
        profilers = _profile(group, env, t.key + "-" + job.mode, job.duration)
        await asyncio.sleep(job.duration)
        cpu = meter.end()
        for prof in profilers:
            prof.wait(30)
        results = [r[1] for r in await workers.recv_all(job.grace + 60)]
    finally:
        workers.join()
        group.stop()
    merged = _merge(results)
    merged |= cpu | conn
    merged["throughput"] = merged["completed"] / job.duration
    # Open loop: messages completed during the window, whenever they were sent (an
    # overloaded server completes fewer than offered; their latency is beyond the grace).
    merged["delivered_rate"] = merged["done_in_window"] / job.duration
    used = merged["server_cpu"] + merged["engine_cpu"] + merged["redis_cpu"]
    # Delivered msg/s per fully used server core: robust to a neighbour stealing the core.
    merged["per_core"] = merged["throughput"] / used if used > 0 else float("nan")
    merged["offered"] = job.rate if job.mode == "open" else None
    return merged


async def idle_memory(t: Target, env: Env, lg: LoadGen, steps: list[int]) -> dict[str, Any]:
    """RSS per idle authenticated connection at each number of connections in ``steps``."""
    pairs = steps[-1] // 2
    group = await start(t, env, pairs)
    job = Job(
        mode="idle",
        dialect=t.dialect,
        endpoints=group.endpoints,
        pairs=list(range(pairs)),
        first_batch=steps[0] // 2,
        connect_deadline=600,
    )
    workers = Workers()
    out: dict[str, Any] = {}
    try:
        workers = spawn_workers(job, lg)
        await asyncio.sleep(1.0)
        base = group.rss()
        out["base_rss_kib"] = base
        infos = await workers.recv_all(600)
        held = steps[0]
        for i, n in enumerate(steps):
            conn = _check_connected(infos, t.key)
            if conn["connected"] != n:
                raise RuntimeError(f"{t.key}: {conn['connected']} connected, wanted {n}")
            await asyncio.sleep(2.0)
            rss = group.rss()
            out[f"kib_per_conn_{n}"] = (rss - base) / n
            out[f"rss_kib_{n}"] = rss
            out[f"connect_seconds_{n}"] = conn["connect_seconds"]
            if i + 1 < len(steps):
                more = steps[i + 1] - held
                held = steps[i + 1]
                per = [more // len(workers.pipes)] * len(workers.pipes)
                for j in range(more - sum(per)):
                    per[j] += 1
                for pipe, k in zip(workers.pipes, per, strict=True):
                    pipe.send(("more", k))
                later = await workers.recv_all(600)
                infos = [
                    (
                        "connected",
                        {
                            "connected": a[1]["connected"] + b[1]["connected"],
                            "failed": b[1]["failed"],
                            "connect_seconds": b[1]["connect_seconds"],
                        },
                    )
                    for a, b in zip(infos, later, strict=True)
                ]
        workers.send_all(("close",))
        await workers.recv_all(60)
    finally:
        workers.join()
        group.stop()
    return out


async def storm(t: Target, env: Env, lg: LoadGen, clients: int, job: Job) -> dict[str, Any]:
    """Kill the server under traffic, restart it on the same port, wait until all caught up."""
    import signal

    pairs = clients // 2
    group = await start(t, env, pairs)
    port = group.procs[0].port
    job = replace(job, mode="storm", dialect=t.dialect, pairs=list(range(pairs)))
    workers = Workers()
    try:
        workers = spawn_workers(replace(job, endpoints=group.endpoints), lg)
        conn = _check_connected(await workers.recv_all(job.connect_deadline + 30), t.key)
        workers.send_all(("traffic",))
        await asyncio.sleep(job.warmup)
        meter = CpuMeter(group, env)
        if t.persists:
            t_kill = time.time()
            group.procs[0].stop(signal.SIGKILL)
            group = await start(t, env, pairs, port=port)
            t_ready = time.time()
            meter = CpuMeter(group, env)
            meter.begin()
            workers.send_all(("restarted", t_kill, t_ready))
        else:
            # A memory store does not survive a restart: drop every connection instead.
            t_kill = t_ready = time.time()
            meter.begin()
            workers.send_all(("drop",))
        results = [r[1] for r in await workers.recv_all(job.storm_deadline + 60)]
        cpu = meter.end()
    finally:
        workers.join()
        group.stop()
    merged = _merge(results)
    merged["caught_up_after_ready"] = max(r["caught_up_after_ready"] for r in results)
    merged["caught_up_after_kill"] = max(r["caught_up_after_kill"] for r in results)
    for k in ("client_caught_up_p50", "client_caught_up_p99"):
        merged[k] = max(r[k] for r in results)
    merged["restart_seconds"] = t_ready - t_kill
    merged["mode"] = "restart" if t.persists else "drop"
    return merged | conn | cpu
