"""Summaries: median [min-max] over runs, ratios to peers, Markdown tables."""

from __future__ import annotations

import math
import platform
import statistics
from pathlib import Path
from typing import Any

from bench.targets import TARGETS, describe

Runs = dict[str, dict[str, list[dict[str, Any]]]]  # scenario -> target -> runs


def machine() -> dict[str, str]:
    """What the doc must say about the machine."""
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import os

    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def values(runs: list[dict[str, Any]], key: str) -> list[float]:
    out = []
    for r in runs:
        v = r.get(key)
        if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
            out.append(float(v))
    return out


def stat(runs: list[dict[str, Any]], key: str) -> tuple[float, float, float] | None:
    """(median, min, max) of ``key`` over runs, or None."""
    v = values(runs, key)
    if not v:
        return None
    return statistics.median(v), min(v), max(v)


def fmt(s: tuple[float, float, float] | None, digits: int = 0, unit: str = "") -> str:
    if s is None:
        return "-"
    m, lo, hi = s
    if digits == 0:
        return f"{m:,.0f}{unit} [{lo:,.0f}-{hi:,.0f}]"
    return f"{m:,.{digits}f}{unit} [{lo:,.{digits}f}-{hi:,.{digits}f}]"


def ratios(
    runs: Runs, scenario: str, key: str, num: str, den: str
) -> tuple[float, float, float] | None:
    """Per-round ratio num/den of ``key`` (round i of both), as (median, min, max)."""
    a = runs.get(scenario, {}).get(num, [])
    b = runs.get(scenario, {}).get(den, [])
    rs = []
    for x, y in zip(a, b, strict=False):
        vx, vy = x.get(key), y.get(key)
        if isinstance(vx, int | float) and isinstance(vy, int | float) and vy:
            rs.append(vx / vy)
    if not rs:
        return None
    return statistics.median(rs), min(rs), max(rs)


def _label(key: str, rs: list[dict[str, Any]] | None = None) -> str:
    # What the row ran (bench.targets.describe), recorded with each result; a signed row
    # whose clients used up their pre-signed messages before the end says so.
    rs = rs or []
    label = str(rs[0]["label"]) if rs and isinstance(rs[0].get("label"), str) else None
    label = label or describe(TARGETS[key])
    dry = sum(1 for r in rs if r.get("exhausted"))
    if dry:
        label += (
            f" (**the pre-signed supply ran out in {dry} of {len(rs)} rounds: "
            "a lower bound**, raise `--signed-cap`)"
        )
    return label


def markdown(runs: Runs, meta: dict[str, Any]) -> str:
    """The tables of docs/benchmarks.md."""
    lines: list[str] = []
    sat = runs.get("saturation", {})
    if sat:
        lines += [
            "### Saturation (closed loop)",
            "",
            f"{meta.get('saturation', '')}",
            "",
            "| server | delivered msg/s | msg/s per server core | p99 ms | server CPU | "
            "engine CPU | Redis CPU | others on server core | load gen CPU |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key, rs in sat.items():
            lines.append(
                f"| {_label(key, rs)} | {fmt(stat(rs, 'throughput'))} "
                f"| {fmt(stat(rs, 'per_core'))} "
                f"| {fmt(stat(rs, 'p99_ms'), 1)} | {fmt(stat(rs, 'server_cpu'), 2)} "
                f"| {fmt(stat(rs, 'engine_cpu'), 2)} | {fmt(stat(rs, 'redis_cpu'), 2)} "
                f"| {fmt(stat(rs, 'other_cpu'), 2)} | {fmt(stat(rs, 'loadgen_cpu'), 2)} |"
            )
        lines.append("")
    lat = runs.get("latency", {})
    if lat:
        lines += [
            "### Latency (open loop)",
            "",
            f"{meta.get('latency', '')}",
            "",
            "| server | delivered msg/s | p50 ms | p99 ms | max ms | ack p99 ms | "
            "not delivered within grace | server CPU | others on server core |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key, rs in lat.items():
            lines.append(
                f"| {_label(key, rs)} | {fmt(stat(rs, 'delivered_rate'))} "
                f"| {fmt(stat(rs, 'p50_ms'), 1)} "
                f"| {fmt(stat(rs, 'p99_ms'), 1)} | {fmt(stat(rs, 'max_ms'), 1)} "
                f"| {fmt(stat(rs, 'ack_p99_ms'), 1)} | {fmt(stat(rs, 'incomplete'))} "
                f"| {fmt(stat(rs, 'server_cpu'), 2)} | {fmt(stat(rs, 'other_cpu'), 2)} |"
            )
        lines.append("")
    mem = runs.get("memory", {})
    if mem:
        steps = meta.get("memory_steps", [])
        head = " | ".join(f"KiB/conn at {n:,}" for n in steps)
        lines += [
            "### Memory per idle authenticated connection (RSS delta / connections)",
            "",
            f"| server | {head} | RSS at {steps[-1]:,} (MiB) | connect time at {steps[-1]:,} (s) |",
            "|---|" + "---|" * (len(steps) + 2),
        ]
        for key, rs in mem.items():
            cells = " | ".join(fmt(stat(rs, f"kib_per_conn_{n}"), 1) for n in steps)
            rss = stat(rs, f"rss_kib_{steps[-1]}")
            rss_mib = (rss[0] / 1024, rss[1] / 1024, rss[2] / 1024) if rss else None
            lines.append(
                f"| {_label(key, rs)} | {cells} | {fmt(rss_mib)} "
                f"| {fmt(stat(rs, f'connect_seconds_{steps[-1]}'), 1)} |"
            )
        lines.append("")
    storm = runs.get("storm", {})
    if storm:
        lines += [
            "### Reconnect storm",
            "",
            f"{meta.get('storm', '')}",
            "",
            "| server | mode | clients | restart s | all caught up s (after ready) "
            "| client p50 / p99 s | acked msgs | lost | never acked | duplicates "
            "| server+engine CPU | all caught up |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, rs in storm.items():
            ok = all(r.get("all_caught_up") for r in rs)
            cpu = [r.get("server_cpu", 0) + r.get("engine_cpu", 0) for r in rs]
            lines.append(
                f"| {_label(key, rs)} | {rs[0].get('mode', '')} | {fmt(stat(rs, 'clients'))} "
                f"| {fmt(stat(rs, 'restart_seconds'), 1)} "
                f"| {fmt(stat(rs, 'caught_up_after_ready'), 2)} "
                f"| {fmt(stat(rs, 'client_caught_up_p50'), 2)} / "
                f"{fmt(stat(rs, 'client_caught_up_p99'), 2)} | {fmt(stat(rs, 'acked'))} "
                f"| {fmt(stat(rs, 'lost'))} | {fmt(stat(rs, 'unacked_at_end'))} "
                f"| {fmt(stat(rs, 'dup_created'))} "
                f"| {statistics.median(cpu):.2f} | {'yes' if ok else 'NO'} |"
            )
        lines.append("")
    lines += _ratio_lines(runs)
    return "\n".join(lines)


def _ratio_lines(runs: Runs) -> list[str]:
    pairs = [
        (
            "saturation",
            "throughput",
            "chat-mem-e2ee",
            "sio",
            "chat (memory, e2ee) / socketio msg/s",
        ),
        (
            "saturation",
            "throughput",
            "chat-mem-e2ee",
            "starlette",
            "chat (memory, e2ee) / bare Starlette msg/s",
        ),
        (
            "saturation",
            "per_core",
            "chat-mem-e2ee",
            "starlette",
            "chat (memory, e2ee) / bare Starlette msg per core-s",
        ),
        (
            "saturation",
            "per_core",
            "chat-mem-e2ee",
            "sio",
            "chat (memory, e2ee) / socketio msg per core-s",
        ),
        (
            "saturation",
            "throughput",
            "chat-mem-e2ee-threads",
            "chat-mem-e2ee",
            "chat (memory, e2ee) 2 verify threads / auto, one core msg/s",
        ),
        (
            "saturation",
            "per_core",
            "chat-mem-e2ee-2c",
            "chat-mem-e2ee",
            "chat (memory, e2ee) 2 cores / 1 core msg per core-s",
        ),
        (
            "saturation",
            "server_cpu",
            "chat-mem-e2ee-2c",
            "chat-mem-e2ee",
            "chat (memory, e2ee) 2 cores / 1 core server CPU",
        ),
        ("latency", "p99_ms", "chat-mem-e2ee", "chat-mem", "p99 chat signed / unsigned (memory)"),
        ("saturation", "throughput", "chat-mem", "sio", "chat (memory) / socketio msg/s"),
        (
            "saturation",
            "throughput",
            "chat-mem",
            "starlette",
            "chat (memory) / bare Starlette msg/s",
        ),
        ("saturation", "throughput", "chat-mem", "ws", "chat (memory) / bare websockets msg/s"),
        ("saturation", "per_core", "chat-mem", "sio", "chat (memory) / socketio msg per core-s"),
        (
            "saturation",
            "per_core",
            "chat-mem",
            "starlette",
            "chat (memory) / bare Starlette msg per core-s",
        ),
        ("saturation", "throughput", "chat-emb", "sio", "chat (embedded) / socketio msg/s"),
        (
            "saturation",
            "throughput",
            "chat-mem-redis",
            "sio-redis",
            "chat (memory+Redis) / socketio Redis msg/s",
        ),
        (
            "saturation",
            "throughput",
            "chat-emb-redis",
            "sio-redis",
            "chat (embedded+Redis) / socketio Redis msg/s",
        ),
        ("saturation", "throughput", "chat-emb-redis-2", "chat-emb-redis", "chat 2 procs / 1 proc"),
        ("saturation", "throughput", "sio-redis-2", "sio-redis", "socketio Redis 2 procs / 1 proc"),
        ("latency", "p99_ms", "chat-mem", "starlette", "p99 chat (memory) / bare Starlette"),
        ("latency", "p99_ms", "chat-mem", "sio", "p99 chat (memory) / socketio"),
    ]
    out = []
    for scen, key, a, b, text in pairs:
        r = ratios(runs, scen, key, a, b)
        if r is not None:
            out.append(f"| {text} | {fmt(r, 2)} |")
    for a, b, text in (
        ("chat-mem", "sio", "KiB/conn chat (memory) / socketio"),
        ("chat-mem", "starlette", "KiB/conn chat (memory) / bare Starlette"),
    ):
        mem = runs.get("memory", {})
        if a in mem and b in mem:
            keys = [k for k in mem[a][0] if k.startswith("kib_per_conn_")]
            if keys:
                r = ratios(runs, "memory", keys[-1], a, b)
                if r is not None:
                    out.append(f"| {text} ({keys[-1][13:]} conns) | {fmt(r, 2)} |")
    if not out:
        return []
    return [
        "### Ratios (same round, then median [min-max] over rounds)",
        "",
        "| ratio | value |",
        "|---|---|",
        *out,
        "",
    ]
