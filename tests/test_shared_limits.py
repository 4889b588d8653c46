"""User- and global-scoped limits through the real binary (issue 9): one limit across many mcp-guard
processes, kept in a real SQLite file or a real Redis server.

Each mcp-guard runs in front of its own recording server (tests/servers/recording_server.py), so a test
counts both what the clients were answered and what reached the upstreams."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sharedhelp import (
    collect,
    guard_status,
    passed,
    refusal_text,
    run_guard,
    send_calls,
    start_guard,
    upstream_calls,
    write_policy,
)

PROCESSES = 8


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs Debian's redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/state.db"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


def fleet(tmp_path: Path, policy: Path, state: str, tools: str, env: dict[str, str] | None = None,
          count: int = PROCESSES) -> list[tuple[Any, Path]]:
    procs = []
    for index in range(count):
        record = tmp_path / f"record-{index}.jsonl"
        procs.append((start_guard(policy, state, record, tools, env), record))
    return procs


def close_all(procs: list[tuple[Any, Path]]) -> None:
    for proc, _ in procs:
        proc.close_stdin()
    for proc, _ in procs:
        try:
            proc.wait(30)
        finally:
            proc.kill()


def test_one_global_rate_limit_across_eight_processes(tmp_path: Path, store_url: str) -> None:
    policy = write_policy(tmp_path, {"version": "1", "name": "fleet-test",
                                     "rules": {"allowed": {"rate_limit": {"max": 20, "window": 3600,
                                                                          "scope": "global"}}}})
    procs = fleet(tmp_path, policy, store_url, "allowed,other_tool")
    try:
        for proc, _ in procs:  # 8 x 10 calls at once, pipelined: 80 asks for 20 places
            send_calls(proc, [("allowed", {"n": n}) for n in range(10)] + [("other_tool", {})])
        answers = [collect(proc, 11) for proc, _ in procs]
    finally:
        close_all(procs)
    allowed = sum(passed(a[i]) for a in answers for i in range(1, 11))
    assert allowed == 20
    assert sum(upstream_calls(record) for _, record in procs) == 20 + PROCESSES  # + each other_tool call
    assert all(passed(a[11]) for a in answers)  # a tool without a shared limit never waits on the store
    refused = [a[i] for a in answers for i in range(1, 11) if not passed(a[i])]
    assert "rate limit reached: at most 20 call(s) per 3600 s by every session sharing the limit" in \
        refusal_text(refused[0])
    [row] = guard_status("--state", store_url, "--policy", str(policy))
    assert row["used"] == 20 and row["left"] == 0 and 3500 < row["frees_in"] <= 3600


def test_budget_with_refunds_under_concurrency(tmp_path: Path, store_url: str) -> None:
    """Calls that fail (isError, with "refund": "error") give their cost back, from 8 processes at once;
    then exactly the budget passes."""
    policy = write_policy(tmp_path, {"version": "1", "name": "budget-test", "rules": {
        "job_*": {"budget": {"max": 10, "window": 3600, "cost": "/cost", "scope": "global"}, "refund": "error"}}})
    procs = fleet(tmp_path, policy, store_url, "job_ok,job_fail", {"ISERROR_TOOLS": "job_fail"})
    try:
        for proc, _ in procs:  # 8 x 1 in flight at once fits in the budget of 10
            send_calls(proc, [("job_fail", {"cost": 1})])
        failed = [collect(proc, 1) for proc, _ in procs]
        assert all(passed(a[1]) and a[1]["result"]["isError"] for a in failed)
        deadline = time.monotonic() + 20  # refunds are given back by a thread of each process
        while guard_status("--state", store_url, "--policy", str(policy))[0]["used"] != 0:
            assert time.monotonic() < deadline, "the failed calls were not refunded"
            time.sleep(0.1)
        for proc, _ in procs:
            send_calls(proc, [("job_ok", {"cost": 1})] * 3, first_id=10)
        answers = [collect(proc, 3) for proc, _ in procs]
    finally:
        close_all(procs)
    assert sum(passed(a[i]) for a in answers for i in (10, 11, 12)) == 10
    assert sum(upstream_calls(record) for _, record in procs) == PROCESSES + 10


def test_isError_keeps_the_cost_by_default(tmp_path: Path) -> None:
    state = f"sqlite://{tmp_path}/state.db"
    policy = write_policy(tmp_path, {"version": "1", "rules": {
        "job_*": {"budget": {"max": 2, "window": 3600, "cost": "/cost", "scope": "global"}}}})
    record = tmp_path / "record.jsonl"
    proc = start_guard(policy, state, record, "job_ok,job_fail,job_bad",
                       {"ISERROR_TOOLS": "job_fail", "ERROR_TOOLS": "job_bad"})
    try:
        send_calls(proc, [("job_bad", {"cost": 1})])  # -32602: the server did not run it, given back
        assert not passed(collect(proc, 1)[1])
        send_calls(proc, [("job_fail", {"cost": 1})], first_id=2)
        assert collect(proc, 1)[2]["result"]["isError"]
        time.sleep(0.5)  # let the refund thread give job_bad's cost back
        send_calls(proc, [("job_ok", {"cost": 1}), ("job_ok", {"cost": 1})], first_id=3)
        answers = collect(proc, 2)
    finally:
        proc.kill()
    assert passed(answers[3]) and not passed(answers[4])  # job_fail's cost stayed taken


def test_a_limit_survives_a_restart(tmp_path: Path) -> None:
    state = f"sqlite://{tmp_path}/state.db"
    policy = write_policy(tmp_path, {"version": "1", "rules": {
        "allowed": {"rate_limit": {"max": 2, "window": 3600, "scope": "global"}}}})
    record = tmp_path / "record.jsonl"
    first = start_guard(policy, state, record)
    send_calls(first, [("allowed", {})] * 3)
    answers = collect(first, 3)
    first.close_stdin()
    assert first.wait(30) == 0
    assert [passed(answers[i]) for i in (1, 2, 3)] == [True, True, False]
    second = start_guard(policy, state, record)
    try:
        send_calls(second, [("allowed", {})])
        answer = collect(second, 1)[1]
    finally:
        second.kill()
    assert not passed(answer)
    assert "Retry after" in refusal_text(answer)
    assert upstream_calls(record) == 2


def test_user_scope_is_shared_by_this_users_processes(tmp_path: Path) -> None:
    """User scope lives in the per-user default file ($XDG_STATE_HOME/mcp-guard/state.db), whatever --state
    says; the policy file's path names the counters when the policy has no name."""
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    policy = write_policy(tmp_path, {"version": "1", "rules": {
        "allowed": {"rate_limit": {"max": 1, "window": 3600, "scope": "user"}}}})
    record = tmp_path / "record.jsonl"
    procs = [start_guard(policy, f"sqlite://{tmp_path}/other.db", record, env=env) for _ in range(2)]
    try:
        send_calls(procs[0], [("allowed", {})])
        assert passed(collect(procs[0], 1)[1])
        send_calls(procs[1], [("allowed", {})])
        assert "by this user's sessions" in refusal_text(collect(procs[1], 1)[1])
    finally:
        for proc in procs:
            proc.kill()
    assert (tmp_path / "xdg" / "mcp-guard" / "state.db").exists()
    assert not (tmp_path / "other.db").exists()


def test_session_scoped_policies_never_open_a_store(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, {"version": "1", "rules": {"allowed": {"rate_limit": {"max": 1, "window": 60}}}})
    record = tmp_path / "record.jsonl"
    proc = start_guard(policy, f"sqlite://{tmp_path}/never/state.db", record,
                       env={"XDG_STATE_HOME": str(tmp_path / "xdg")})
    try:
        send_calls(proc, [("allowed", {})] * 2)
        answers = collect(proc, 2)
    finally:
        proc.kill()
    assert [passed(answers[1]), passed(answers[2])] == [True, False]
    assert not (tmp_path / "never").exists() and not (tmp_path / "xdg").exists()


def _corrupt(path: Path) -> None:
    """Replace the state file with garbage (a bad restore, a disk error), as another process would see it."""
    garbage = path.with_name("garbage")
    garbage.write_bytes(b"this is not a SQLite database at all" * 200)
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    os.replace(garbage, path)


def test_a_corrupt_store_fails_closed_then_recovers(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    policy = write_policy(tmp_path, {"version": "1", "rules": {
        "allowed": {"rate_limit": {"max": 100, "window": 3600, "scope": "global"}}}})
    record = tmp_path / "record.jsonl"
    proc = start_guard(policy, f"sqlite://{db}", record, "allowed,other_tool")
    try:
        send_calls(proc, [("allowed", {})])
        assert passed(collect(proc, 1)[1])
        _corrupt(db)
        send_calls(proc, [("allowed", {}), ("allowed", {}), ("other_tool", {})], first_id=2)
        answers = collect(proc, 3)
        assert "the limit store is unavailable" in refusal_text(answers[2])
        assert not passed(answers[3]) and passed(answers[4])
        db.unlink()  # an operator removes the broken file: the next call opens a fresh one
        send_calls(proc, [("allowed", {})], first_id=5)
        assert passed(collect(proc, 1)[5])
    finally:
        proc.kill()
    assert proc.stderr.count("mcp-guard: error: the limit store") == 1 and "answers again" in proc.stderr
    assert upstream_calls(record) == 3


def test_on_store_error_allow_passes_loudly(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    audit = tmp_path / "audit.jsonl"
    policy = write_policy(tmp_path, {"version": "1", "on_store_error": "allow", "rules": {
        "allowed": {"rate_limit": {"max": 1, "window": 3600, "scope": "global"}}}})
    record = tmp_path / "record.jsonl"
    proc = start_guard(policy, f"sqlite://{db}", record, extra=("--audit", str(audit)))
    try:
        _corrupt(db)
        send_calls(proc, [("allowed", {})] * 3)
        answers = collect(proc, 3)
        # A forwarded call's record is written as its answer passes, by the audit's writer thread.
        deadline = time.monotonic() + 10
        while audit.read_text().count('"store_error"') < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.kill()
    assert all(passed(answers[i]) for i in (1, 2, 3))
    assert "pass UNLIMITED" in proc.stderr
    assert audit.read_text().count('"store_error"') == 3


def test_status_reset(tmp_path: Path) -> None:
    state = f"sqlite://{tmp_path}/state.db"
    policy = write_policy(tmp_path, {"version": "1", "name": "ops", "rules": {
        "allowed": {"rate_limit": {"max": 1, "window": 3600, "scope": "global"}}}})
    record = tmp_path / "record.jsonl"
    proc = start_guard(policy, state, record)
    send_calls(proc, [("allowed", {})])
    assert passed(collect(proc, 1)[1])
    plain = run_guard("status", "--state", state)
    assert "allowed rate_limit (global, ops): 1 of 1 taken in 3600 s, 0 left, frees up in" in plain.stdout
    reset = run_guard("status", "--state", state, "--policy", str(policy), "--reset", "allowed")
    assert reset.returncode == 0 and "1 entry removed" in reset.stdout
    assert guard_status("--state", state, "--policy", str(policy))[0]["used"] == 0
    try:
        send_calls(proc, [("allowed", {})], first_id=2)
        assert passed(collect(proc, 1)[2])
    finally:
        proc.kill()
    assert run_guard("status", "--state", state, "--policy", str(policy), "--reset", "nope").returncode == 2


@pytest.mark.parametrize(("url", "says"), [
    ("foo://x/y", "unknown scheme"),
    ("redis:///0", "names no host"),
    ("sqlite:///proc/mcp-guard-state.db", "cannot write the state file"),
    ("sqlite://host/state.db", "names a host"),
])
def test_bad_state_urls_stop_before_the_child_starts(tmp_path: Path, url: str, says: str) -> None:
    marker = tmp_path / "started"
    policy = write_policy(tmp_path, {"version": "1", "rules": {
        "allowed": {"rate_limit": {"max": 1, "window": 60, "scope": "global"}}}})
    out = run_guard("run", "--policy", str(policy), "--state", url, "--", "touch", str(marker))
    assert out.returncode == 2
    assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    env_out = subprocess.run(out.args[:4] + out.args[6:], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "MCP_GUARD_STATE": url}, stdin=subprocess.DEVNULL)
    assert env_out.returncode == 2 and says in env_out.stderr


def test_policy_fields_are_checked(tmp_path: Path) -> None:
    cases = [
        ({"allowed": {"rate_limit": {"max": 1, "window": 60, "scope": "team"}}}, {}, "'team' is not one of"),
        ({"allowed": {"refund": "always"}}, {}, "'always' is not one of"),
        ({}, {"on_store_error": "ignore"}, "'ignore' is not one of"),
        ({}, {"state": "ftp://x"}, "at $.state: the state URL 'ftp://x' has an unknown scheme"),
        ({}, {"name": "has spaces"}, "at $.name"),
    ]
    for rules, top, says in cases:
        policy = write_policy(tmp_path, {"version": "1", **top, "rules": rules})
        out = run_guard("run", "--policy", str(policy), "--", "true")
        assert out.returncode == 2, (rules, top)
        assert says in out.stderr and "policy error" in out.stderr, out.stderr


def test_redis_killed_mid_run_fails_closed_then_recovers(tmp_path: Path, redis_server: RedisServer) -> None:
    policy = write_policy(tmp_path, {"version": "1", "rules": {
        "allowed": {"rate_limit": {"max": 100, "window": 3600, "scope": "global"}}}})
    record = tmp_path / "record.jsonl"
    proc = start_guard(policy, redis_server.url, record)
    try:
        send_calls(proc, [("allowed", {})])
        assert passed(collect(proc, 1)[1])
        redis_server.stop()
        send_calls(proc, [("allowed", {})] * 2, first_id=2)
        answers = collect(proc, 2)
        assert all("the limit store is unavailable" in refusal_text(answers[i]) for i in (2, 3))
        redis_server.start()  # same port, empty (no persistence): counting starts over
        send_calls(proc, [("allowed", {})], first_id=4)
        assert passed(collect(proc, 1)[4])
    finally:
        proc.kill()
    assert proc.stderr.count("mcp-guard: error: the limit store") == 1 and "answers again" in proc.stderr
    assert upstream_calls(record) == 2


def test_a_store_refusal_gives_the_session_limit_back(tmp_path: Path) -> None:
    """A rule with a session rate limit and a global budget: a call the store refuses takes nothing from
    the session limit either (it is given back), as a session-only refusal takes nothing."""
    policy = write_policy(tmp_path, {"version": "1", "rules": {"allowed": {
        "rate_limit": {"max": 2, "window": 3600},
        "budget": {"max": 1, "window": 3600, "cost": "/c", "scope": "global"}}}})
    record = tmp_path / "record.jsonl"
    proc = start_guard(policy, f"sqlite://{tmp_path}/state.db", record)
    outcomes = []
    try:
        for request_id, cost in enumerate([1, 1, 0, 0], start=1):
            send_calls(proc, [("allowed", {"c": cost})], first_id=request_id)
            answer = collect(proc, 1)[request_id]
            outcomes.append("pass" if passed(answer) else refusal_text(answer).split(": ", 1)[1][:16])
    finally:
        proc.kill()
    assert outcomes == ["pass", "budget exhausted", "pass", "rate limit reach"]
    assert upstream_calls(record) == 2


def test_a_global_limit_and_an_argument_schema_on_one_rule(tmp_path: Path) -> None:
    """Two waits in a row for one call: the argument check (off the pump), then the store's admission.
    A call the schema refuses takes nothing from the store; the limit still counts exactly."""
    state = f"sqlite://{tmp_path}/state.db"
    policy = write_policy(tmp_path, {"version": "1", "rules": {"allowed": {
        "rate_limit": {"max": 2, "window": 3600, "scope": "global"},
        "arguments": {"type": "object", "properties": {"mode": {"type": "string", "enum": ["safe"]}}}}}})
    record = tmp_path / "record.jsonl"
    proc = start_guard(policy, state, record)
    try:
        send_calls(proc, [("allowed", {"mode": "unsafe"}), ("allowed", {"mode": "safe"}),
                          ("allowed", {"mode": "unsafe"}), ("allowed", {"mode": "safe"}),
                          ("allowed", {"mode": "safe"})])
        answers = collect(proc, 5)
    finally:
        proc.kill()
    assert [passed(answers[i]) for i in range(1, 6)] == [False, True, False, True, False]
    assert "argument mode" in refusal_text(answers[1]) and "argument mode" in refusal_text(answers[3])
    assert "rate limit reached" in refusal_text(answers[5])
    assert upstream_calls(record) == 2
