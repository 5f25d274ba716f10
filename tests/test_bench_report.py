"""The benchmark tables say when a signed row's figure is only a lower bound."""

from __future__ import annotations

from typing import Any

from bench.report import markdown


def _run(exhausted: int) -> dict[str, Any]:
    return {
        "throughput": 9000.0,
        "per_core": 9000.0,
        "p99_ms": 50.0,
        "server_cpu": 1.0,
        "exhausted": exhausted,
        "label": "chat, signed, verified in a child process",
    }


def test_a_row_whose_presigned_supply_ran_out_is_marked_a_lower_bound() -> None:
    table = markdown({"saturation": {"chat-mem-e2ee-2c": [_run(0), _run(400), _run(0)]}}, {})
    row = next(line for line in table.splitlines() if line.startswith("| chat, signed"))
    assert "ran out in 1 of 3 rounds" in row
    assert "lower bound" in row


def test_a_row_that_kept_its_supply_is_not_marked() -> None:
    table = markdown({"saturation": {"chat-mem-e2ee-2c": [_run(0), _run(0)]}}, {})
    row = next(line for line in table.splitlines() if line.startswith("| chat, signed"))
    assert "ran out" not in row
