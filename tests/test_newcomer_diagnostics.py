"""Issue 14, diagnostics a person can follow, through the real binary: stderr lines carry a time; with
--log-level info one line per call (tool, decision, labelled rule, ms); the audit's retry_after is
rounded; a session ends with an audit record saying how it ended, with counts."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path

from conftest import SERVERS

TINY = [sys.executable, str(SERVERS / "policy_tiny_server.py")]
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
POLICY = {"version": "1", "default": "allow", "hide": ["delete_everything"],
          "rules": {"add": {"action": "deny", "reason": "no sums"},
                    "echo": {"rate_limit": {"max": 1, "window": 60}}}}


def call(proc, request_id: int, name: str, arguments: dict | None = None) -> dict:
    params: dict = {"name": name}
    if arguments is not None:
        params["arguments"] = arguments
    return proc.request(request_id, "tools/call", params, timeout=30)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_timed_line_per_call_at_info_level(spawn_guard, tmp_path: Path) -> None:
    proc = spawn_guard(TINY, policy=POLICY, extra=("--log-level", "info"))
    proc.initialize()
    assert call(proc, 1, "echo", {"text": "hi"})["result"]["isError"] is False
    assert call(proc, 2, "add", {"a": 1, "b": 2})["result"]["isError"] is True
    hidden = call(proc, 3, "delete_everything")  # the server's own answer for a tool it does not have
    assert "delete_everything" in json.dumps(hidden) and "mcp-guard" not in json.dumps(hidden), hidden
    assert call(proc, 4, "echo", {"text": "again"})["result"]["isError"] is True  # the rate limit
    assert call(proc, 5, "read_note", {"name": "n"})["result"]["isError"] is False
    proc.close_stdin()
    assert proc.wait(30) == 0
    lines = proc.stderr.splitlines()
    # mcp-guard's own lines (the server's stderr passes as the server wrote it: here its log of the
    # hidden call's probe)
    ours = [line for line in lines if "mcp-guard: " in line]
    assert ours and all(re.match(TIME + " mcp-guard: ", line) for line in ours), ours
    calls = [line.split(" mcp-guard: ", 1)[1] for line in lines if ": call " in line]
    assert len(calls) == 5, calls
    patterns = [
        r"info: call echo: allow \[rule: echo\] \d+ ms: ok",
        r"warning: call add: deny \[rule: add\] \d+ ms: refused: no sums",
        r"warning: call delete_everything: hide \[rule: delete_everything\] \d+ ms: answered as the server "
        r"answers a tool it does not have",
        r"warning: call echo: deny \[rule: echo\] \d+ ms: refused: rate limit reached: at most 1 call\(s\) per 60 s",
        r"info: call read_note: allow \[rule: default\] \d+ ms: ok",
    ]
    for pattern, line in zip(patterns, calls, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)


def test_at_the_default_level_only_refusals_are_logged_and_timed(spawn_guard) -> None:
    proc = spawn_guard(TINY, policy=POLICY)
    proc.initialize()
    call(proc, 1, "echo", {"text": "hi"})
    call(proc, 2, "add", {"a": 1, "b": 2})
    proc.close_stdin()
    assert proc.wait(30) == 0
    calls = [line for line in proc.stderr.splitlines() if ": call " in line]
    assert len(calls) == 1 and re.match(TIME + r" mcp-guard: warning: call add: deny \[rule: add\]", calls[0])


def test_a_control_character_in_a_tool_name_cannot_forge_a_log_line(spawn_guard) -> None:
    proc = spawn_guard(TINY, policy={"version": "1", "default": "deny"})
    proc.initialize()
    call(proc, 1, "x\n2026-01-01T00:00:00.000Z mcp-guard: info: call rm: allow")
    proc.close_stdin()
    assert proc.wait(30) == 0
    assert not any(line.startswith("2026-01-01") for line in proc.stderr.splitlines())


def test_the_audit_rounds_retry_after_and_ends_with_a_session_record(spawn_guard, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    proc = spawn_guard(TINY, policy=POLICY, extra=("--audit", str(audit)))
    proc.initialize()
    call(proc, 1, "echo", {"text": "hi"})
    time.sleep(0.123)  # so that the exact retry_after is not a round number
    refused = call(proc, 2, "echo", {"text": "again"})
    call(proc, 3, "add", {"a": 1, "b": 2})
    call(proc, 4, "delete_everything")
    proc.close_stdin()
    assert proc.wait(30) == 0
    found = records(audit)
    limited = next(r for r in found if r["event"] == "call" and r.get("request_id") == 2)
    assert 59 < limited["retry_after"] <= 60 and round(limited["retry_after"], 1) == limited["retry_after"]
    assert refused["result"]["_meta"]["mcp-guard/decision"]["retry_after"] == limited["retry_after"]
    end = found[-1]
    assert end["event"] == "end"
    assert end["how"] == "the client closed its input" and end["status"] == 0
    assert end["calls"] == 4 and end["decisions"] == {"allow": 1, "deny": 2, "hide": 1}


def test_the_end_record_says_a_signal_ended_the_session(spawn_guard, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    proc = spawn_guard(TINY, policy=POLICY, extra=("--audit", str(audit)))
    proc.initialize()
    call(proc, 1, "read_note", {"name": "n"})
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    end = records(audit)[-1]
    assert end == {**end, "event": "end", "how": "mcp-guard received SIGTERM", "status": 143, "calls": 1,
                   "decisions": {"allow": 1}}


def test_the_end_record_says_the_server_ended_the_session(spawn_guard, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    proc = spawn_guard([sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit(3)"],
                       policy=POLICY, extra=("--audit", str(audit)))
    proc.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert proc.wait(30) == 3
    end = records(audit)[-1]
    assert end["event"] == "end" and end["status"] == 3
    assert end["how"] == "the upstream server exited with status 3" and end["calls"] == 0
