"""Limits keep bounded state and refuse fast, however small the costs (issue 13 item 3).

Through the binary: 100,000 calls of a tiny cost keep mcp-guard's RSS within a few MB, and refusals after
them are answered as fast as before them. Engine unit tests: the window stays exact while a limit holds
few entries, and is never looser (at most window/1024 stricter) once charges are kept together."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_guard.engine import BUCKETS_PER_WINDOW, EXACT_ENTRIES, SessionState, ToolCall, decide
from mcp_guard.policy import loads

SERVER = Path(__file__).resolve().parent / "servers" / "echo_fast.py"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def pipeline(proc: Any, lines: list[str], first_id: int) -> list[dict[str, Any]]:
    """Send the lines (ids first_id, first_id+1, ...) in chunks and collect every answer."""
    answers: list[dict[str, Any]] = []
    chunk = 500
    for start in range(0, len(lines), chunk):
        proc.send("\n".join(lines[start:start + chunk]))
        for _ in lines[start:start + chunk]:
            answers.append(proc.recv(60))
    assert [a["id"] for a in answers] == list(range(first_id, first_id + len(lines)))
    return answers


def call_line(request_id: int, cost: str) -> str:
    return ('{"jsonrpc":"2.0","id":' + str(request_id)
            + ',"method":"tools/call","params":{"name":"spend","arguments":{"c":' + cost + "}}}")


def timed_refusals(proc: Any, first_id: int, count: int) -> float:
    started = time.perf_counter()
    answers = pipeline(proc, [call_line(first_id + i, "1") for i in range(count)], first_id)
    elapsed = time.perf_counter() - started
    for answer in answers:
        decision = answer["result"]["_meta"]["mcp-guard/decision"]
        assert decision["reason"].startswith("budget exhausted"), answer
    return elapsed


def test_tiny_costs_keep_memory_flat_and_refusals_fast(spawn_guard):
    policy = {"version": "1", "rules": {"spend": {"budget": {"max": 1, "window": 3600, "cost": "/c"}}}}
    proc = spawn_guard([sys.executable, str(SERVER)], policy)
    proc.initialize()
    # Spend the whole budget once, and time refusals while the limit holds two entries.
    pipeline(proc, [call_line(1, "1e-300"), call_line(2, "1")], 1)
    before = timed_refusals(proc, 10, 200)
    # Warm up the allocator and the caches, then measure.
    pipeline(proc, [call_line(1000 + i, "1e-300") for i in range(5000)], 1000)
    baseline = rss_kib(proc.pid)
    total = 100_000
    answers = pipeline(proc, [call_line(10_000 + i, "1e-300") for i in range(total)], 10_000)
    assert all(a["result"]["isError"] is False for a in answers[:10] + answers[-10:])
    grown = rss_kib(proc.pid) - baseline
    # Unbounded, every charge kept an entry for the whole hour: ~10 MB for these 100,000 calls.
    assert grown < 3 * 1024, f"RSS grew by {grown} KiB over {total} tiny-cost calls"
    after = timed_refusals(proc, 200_000, 200)
    # Unbounded, each refusal walked every entry (~25 ms each here: 5 s for 200). Bounded: as before.
    assert after < max(1.0, 4 * before), f"200 refusals took {after:.3f} s after, {before:.3f} s before"


# --- the engine ------------------------------------------------------------------------------------


def rate_policy(maximum: int, window: float) -> Any:
    return loads(json.dumps({"version": "1", "rules": {"t": {"rate_limit": {"max": maximum, "window": window}}}}))


def run(p: Any, state: SessionState, at: float, arguments: Any = None) -> Any:
    decision = decide(p, ToolCall("t", arguments), state, at)
    if decision.allowed:
        state.record(decision.charges)
    return decision


def test_the_window_is_exact_while_a_limit_holds_few_entries() -> None:
    p = rate_policy(EXACT_ENTRIES, 10.0)
    state = SessionState()
    times = [i * 0.001 for i in range(EXACT_ENTRIES)]  # all within one 1/1024 of the window
    for at in times:
        assert run(p, state, at).allowed
    refused = run(p, state, 5.0)
    assert refused.retry_after == pytest.approx(5.0)  # the first call, made at 0, leaves at exactly 10
    assert not run(p, state, 9.999999).allowed
    assert run(p, state, 10.0).allowed  # exactly `window` after the first call
    assert not run(p, state, 10.0005).allowed
    assert run(p, state, 10.001).allowed  # exactly `window` after the second


def test_past_the_exact_entries_calls_leave_at_most_a_bucket_late_never_early() -> None:
    window = 1024.0  # one bucket is one second
    p = rate_policy(3 * EXACT_ENTRIES, window)
    state = SessionState()
    times = [i / 128 for i in range(2 * EXACT_ENTRIES)]  # the first half exact entries, then ~128 a second
    for at in times:
        assert run(p, state, at).allowed
    usage = state.usage[("t", "rate_limit")]
    assert len(usage) <= EXACT_ENTRIES + (times[-1] - times[EXACT_ENTRIES]) + 2

    def exact_total(at: float) -> int:
        return sum(1 for t in times if at - t < window)

    for probe in [window + k / 64 for k in range(0, 20 * 64)]:
        counted = state.entries("t", "rate_limit", probe, window).total
        # Never fewer than an exact window counts (never looser) ...
        assert counted >= exact_total(probe), probe
        # ... and never more than an exact window one bucket (1 s) earlier would (at most a bucket late).
        assert counted <= exact_total(probe - 1.0), probe


def test_never_looser_than_an_exact_window_at_random() -> None:
    rng = random.Random(1913)
    window = 2.0
    maximum = 1500
    p = rate_policy(maximum, window)
    state = SessionState()
    exact: list[float] = []
    at = 0.0
    for _ in range(20_000):
        at += rng.choice((0.0, 0.0001, 0.0005, 0.002, 0.05))
        exact = [t for t in exact if at - t < window]
        decision = run(p, state, at)
        if decision.allowed:
            assert len(exact) + 1 <= maximum, "allowed a call an exact window refuses"
            exact.append(at)
        else:
            # Refused although an exact window has room: only when calls within one bucket of leaving hold it.
            late = [t for t in exact if at - t < window + window / BUCKETS_PER_WINDOW]
            assert len(exact) + 1 > maximum or len(late) >= maximum


def test_a_hundred_thousand_tiny_costs_keep_few_entries_and_a_right_retry_after() -> None:
    p = loads('{"version": "1", "rules": {"t": {"budget": {"max": 1, "window": 100, "cost": "/c"}}}}')
    state = SessionState()
    for i in range(100_000):
        assert run(p, state, i * 0.001, {"c": 1e-300}).allowed
    usage = state.usage[("t", "budget")]
    assert len(usage) <= 2 * EXACT_ENTRIES + 2
    assert run(p, state, 100.0, {"c": 0.5}).allowed
    refused = run(p, state, 101.0, {"c": 0.6})
    assert refused.kind == "budget" and refused.retry_after == pytest.approx(99.0)  # the 0.5 must leave
    started = time.perf_counter()
    for _ in range(1000):
        decide(p, ToolCall("t", {"c": 0.6}), state, 101.0)
    assert time.perf_counter() - started < 0.5  # ~1 ms in all for 1,000 refusals when bounded


@pytest.mark.parametrize("cost", ["5e-324", "2.2e-308"])
def test_subnormal_costs_are_refused_with_a_reason(cost: str) -> None:
    p = loads('{"version": "1", "rules": {"t": {"budget": {"max": 1, "window": 100, "cost": "/c"}}}}')
    decision = decide(p, ToolCall("t", json.loads('{"c": ' + cost + "}")), SessionState(), 0.0)
    assert decision.action == "deny" and decision.kind == "budget"
    assert decision.reason == "the cost at /c in the call's arguments is too small to count (below 2.22507e-308)"


def test_refunds_in_kept_together_entries() -> None:
    p = rate_policy(EXACT_ENTRIES + 10, 1024.0)
    state = SessionState()
    decisions = [run(p, state, i * 0.001) for i in range(EXACT_ENTRIES + 10)]
    assert not run(p, state, 5.0).allowed
    state.refund(decisions[-1].charges)  # one of the calls kept together with others
    assert run(p, state, 5.0).allowed
    assert not run(p, state, 5.0).allowed
