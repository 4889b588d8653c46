"""`mcp-guard audit summary` (text for a terminal, --json for programs, --since, --session) and `audit tail`
(the last decisions, then following the file live), on audit files the real binary wrote."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from wireclient import WireProcess, guard_command, guard_run

from mcp_guard.audit import seal

SERVERS = Path(__file__).resolve().parent / "servers"
TINY = [sys.executable, str(SERVERS / "policy_tiny_server.py")]
TIMEOUT = 30
POLICY = {"version": "1", "default": "allow",
          "rules": {"add": {"action": "deny", "reason": "no sums"},
                    "read_note": {"action": "allow", "rate_limit": {"max": 1, "window": 60}}},
          "hide": ["delete_everything"]}


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*guard_command(), "audit", *args], capture_output=True, text=True, timeout=TIMEOUT)


def guarded_session(tmp_path: Path, audit: Path, calls: list[tuple[str, dict[str, Any]]]) -> str:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    proc = WireProcess(guard_run("--policy", str(policy), "--audit", str(audit), "--", *TINY))
    try:
        proc.initialize()
        proc.request("list", "tools/list")
        for index, (name, arguments) in enumerate(calls, 1):
            proc.request(index, "tools/call", {"name": name, "arguments": arguments}, timeout=TIMEOUT)
        proc.close_stdin()
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
    return str(json.loads(audit.read_text().splitlines()[0])["session"])


CALLS = [("echo", {"text": "a"}), ("echo", {"text": "b"}), ("add", {"a": 1, "b": 2}), ("add", {"a": 1, "b": 2}),
         ("read_note", {"name": "x"}), ("read_note", {"name": "y"}), ("delete_everything", {}), ("echo", {})]


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp_path = tmp_path_factory.mktemp("trail")
    audit = tmp_path / "audit.jsonl"
    session = guarded_session(tmp_path, audit, CALLS)
    return audit, session


def test_summary_text_is_aligned_and_fits_a_terminal(trail: tuple[Path, str]) -> None:
    audit, _ = trail
    result = audit_cli("summary", str(audit))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0] == "8 decision(s) in 1 session(s)"
    assert lines[1] == "decisions: allowed 4, denied 2, rate_limited 1, hidden 1"
    table = lines[lines.index(next(line for line in lines if line.startswith("tool "))):]
    header = table[0]
    assert header.split() == ["tool", "calls", "allowed", "refused", "hidden", "monitor"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:5]}
    assert rows == {"echo": ["3", "3", "0", "0", "0"], "add": ["2", "0", "2", "0", "0"],
                    "read_note": ["2", "1", "1", "0", "0"], "delete_everything": ["1", "0", "0", "1", "0"]}
    for row in table[1:5]:  # numbers right-aligned under their headers
        assert row.rindex(row.split()[-1]) + len(row.split()[-1]) == len(header)
    assert any(line.startswith("no sums") and line.endswith(" 2") for line in lines)
    assert any(line.startswith("rate limit reached: at most 1 call(s) per 60 s") for line in lines)
    assert any(line.startswith("slowest tools") for line in lines)
    assert "outcomes of forwarded calls: ok 3, is_error 1" in lines


def test_summary_json_is_for_programs(trail: tuple[Path, str]) -> None:
    audit, session = trail
    found = json.loads(audit_cli("summary", "--json", str(audit)).stdout)
    assert found["records"] == 8 and found["sessions"] == 1
    assert found["by_tool"]["add"] == {"denied": 2}
    assert found["decisions"]["allowed"] == 4
    assert found["top_reasons"][0] == {"reason": "no sums", "count": 2}
    assert {row["tool"] for row in found["slowest"]} == {"echo", "read_note"}
    for row in found["slowest"]:
        assert 0 <= row["median_ms"] <= row["p95_ms"] <= row["max_ms"]
    assert found["outcomes"] == {"ok": 3, "is_error": 1}
    only = json.loads(audit_cli("summary", "--json", "--session", session[:8], str(audit)).stdout)
    assert only["records"] == 8
    none = json.loads(audit_cli("summary", "--json", "--session", "nobody", str(audit)).stdout)
    assert none["records"] == 0


def test_summary_since_counts_only_recent_records(tmp_path: Path) -> None:
    now = time.time()
    lines = []
    previous = ""
    for seq, (age, tool) in enumerate([(7200, "old"), (600, "recent"), (5, "new")]):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - age))
        record = {"time": stamp, "session": "s1", "seq": seq, "prev": previous, "event": "call", "tool": tool,
                  "action": "allow", "decision": "allowed"}
        line, previous = seal(json.dumps(record).encode())
        lines.append(line)
    audit = tmp_path / "a.jsonl"
    audit.write_bytes(b"".join(lines))
    assert json.loads(audit_cli("summary", "--json", "--since", "1h", str(audit)).stdout)["by_tool"] == {
        "recent": {"allowed": 1}, "new": {"allowed": 1}}
    assert json.loads(audit_cli("summary", "--json", "--since", "30s", str(audit)).stdout)["records"] == 1
    bad = audit_cli("summary", "--since", "soon", str(audit))
    assert bad.returncode == 2 and "not a duration such as 30s, 15m, 1h or 2d" in bad.stderr


def test_tail_shows_the_last_decisions(trail: tuple[Path, str]) -> None:
    audit, _ = trail
    result = audit_cli("tail", "--no-follow", "-n", "3", str(audit))
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(len(line) <= 100 for line in lines)
    assert " read_note rate_limited [read_note] rate limit reached" in lines[0]
    assert " delete_everything hidden [delete_everything] Unknown tool" in lines[1]
    assert " echo allowed " in lines[2] and lines[2].endswith(" is_error")


def test_tail_follows_the_file_live(tmp_path: Path) -> None:
    audit = tmp_path / "live.jsonl"
    audit.write_text("")
    tail = subprocess.Popen([*guard_command(), "audit", "tail", str(audit)], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in tail.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        time.sleep(0.5)
        guarded_session(tmp_path, audit, [("add", {"a": 1, "b": 1}), ("echo", {"text": "x"})])
        listing = lines.get(timeout=TIMEOUT)
        first = lines.get(timeout=TIMEOUT)
        second = lines.get(timeout=TIMEOUT)
        assert " tools/list: 3 shown, hidden delete_everything" in listing
        assert " add denied [add] no sums" in first
        assert " echo allowed " in second and second.rstrip().endswith(" ok")
    finally:
        tail.kill()
        tail.wait(5)
