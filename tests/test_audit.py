"""The audit trail through the real binary: a record per decision kind, with the answer's outcome and the
call's duration; one hash chain per session, several mcp-guard processes appending to one file; and
`mcp-guard audit verify` naming the first line removed, edited or reordered."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from wireclient import WireProcess, guard_command, guard_run

from mcp_guard.audit import seal
from mcp_guard.auditlog import verify

warnings.filterwarnings("ignore", category=DeprecationWarning)

SERVERS = Path(__file__).resolve().parent / "servers"
TINY = [sys.executable, str(SERVERS / "policy_tiny_server.py")]
TIMEOUT = 30

POLICY = {
    "version": "1",
    "default": "deny",
    "rules": {
        "echo": {"action": "allow", "arguments": {"type": "object", "properties": {"text": {"maxLength": 10}}}},
        "add": {"action": "allow", "budget": {"max": 5, "window": 60, "cost": "/a"}},
        "read_note": {"action": "allow", "rate_limit": {"max": 1, "window": 60}},
    },
    "hide": ["delete_everything"],
}


def end(proc: WireProcess) -> None:
    proc.close_stdin()
    assert proc.wait(TIMEOUT) == 0


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*guard_command(), "audit", *args], capture_output=True, text=True, timeout=TIMEOUT)


async def session(command: list[str], mode: str) -> list[bool]:
    """Every decision kind once: allowed, invalid_arguments, over_budget, rate_limited, hidden, denied."""
    errors = []
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with Client(params, mode=mode, read_timeout_seconds=TIMEOUT) as client:  # type: ignore[arg-type]
        await client.list_tools()
        for name, arguments in [("echo", {"text": "hi"}), ("echo", {"text": "far too long a text"}),
                                ("add", {"a": 3, "b": 1}), ("add", {"a": 3, "b": 1}),
                                ("read_note", {"name": "x"}), ("read_note", {"name": "y"}),
                                ("delete_everything", {}), ("launch", {"secret": "hunter2"}), ("echo", {})]:
            try:
                result = await client.call_tool(name, arguments)
                errors.append(result.is_error)
            except Exception:  # noqa: BLE001 - a hidden tool may be a JSON-RPC error, as the server says
                errors.append(True)
    return errors


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_record_per_decision_kind_with_outcome_and_duration(tmp_path: Path, mode: str) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    audit = tmp_path / "audit.jsonl"

    async def bounded() -> list[bool]:
        with anyio.fail_after(TIMEOUT):
            return await session(guard_run("--policy", str(policy), "--audit", str(audit), "--", *TINY), mode)

    errors = anyio.run(bounded)
    assert errors == [False, True, False, True, False, True, True, True, True]
    found = records(audit)
    assert [r["event"] for r in found][0] == "start" and found[-1]["event"] == "end"
    calls = [r for r in found if r["event"] == "call"]
    decisions = [(r["tool"], r["decision"]) for r in calls]
    for expected in [("echo", "allowed"), ("echo", "invalid_arguments"), ("add", "allowed"), ("add", "over_budget"),
                     ("read_note", "allowed"), ("read_note", "rate_limited"), ("delete_everything", "hidden"),
                     ("launch", "denied")]:
        assert expected in decisions, (expected, decisions)
    assert len(calls) == 9
    era = "handshake" if mode == "legacy" else "stateless"
    for record in calls:
        assert record["session"] == found[0]["session"]
        assert record["era"] == era
        assert record["server"] == "policy-tiny"  # the upstream's serverInfo name
        assert record["time"].endswith("Z") and len(record["time"]) == 24
        if record["decision"] == "allowed":
            assert record["outcome"] in ("ok", "is_error") and record["duration_ms"] >= 0, record
        else:
            assert "outcome" not in record and "duration_ms" not in record, record
    forwarded = [r for r in calls if r["decision"] == "allowed"]
    assert {r["outcome"] for r in forwarded} == {"ok", "is_error"}  # echo without its text: the tool's error
    launch = next(r for r in calls if r["tool"] == "launch")
    assert launch["argument_keys"] == ["secret"] and "hunter2" not in audit.read_text()
    assert launch["rule"] is None and launch["reason"]
    assert [r["seq"] for r in found] == list(range(len(found)))
    result = audit_cli("verify", str(audit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every chain is intact (1 session(s)" in result.stdout


def test_hash_mode_matches_identical_calls_without_storing_them(spawn_guard, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    proc = spawn_guard(TINY, policy={"version": "1"}, extra=("--audit", str(audit), "--audit-args", "hash"))
    proc.initialize()
    for request_id, text in [(1, "sesame"), (2, "sesame"), (3, "other")]:
        proc.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                   "params": {"name": "echo", "arguments": {"text": text}}})
        assert proc.recv()["id"] == request_id
    end(proc)
    calls = {r["request_id"]: r for r in records(audit) if r["event"] == "call"}
    assert calls[1]["arguments_sha256"] == calls[2]["arguments_sha256"] != calls[3]["arguments_sha256"]
    assert "sesame" not in audit.read_text()


def test_full_mode_writes_the_arguments(spawn_guard, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    proc = spawn_guard(TINY, policy={"version": "1"}, extra=("--audit", str(audit), "--audit-args", "full"))
    proc.initialize()
    proc.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "add", "arguments": {"a": 1, "b": 2}}})
    assert proc.recv()["id"] == 1
    end(proc)
    call = next(r for r in records(audit) if r["event"] == "call")
    assert call["arguments"] == {"a": 1, "b": 2}


def _busy_session(audit: Path, policy: Path, calls: int, together: threading.Barrier | None = None) -> None:
    proc = WireProcess(guard_run("--policy", str(policy), "--audit", str(audit), "--", *TINY))
    try:
        proc.initialize()
        if together is not None:
            together.wait(TIMEOUT)  # every session has started (and written its start record): call at once
        for request_id in range(1, calls + 1):
            proc.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                       "params": {"name": "add" if request_id % 3 else "launch", "arguments": {"a": 1, "b": 2}}})
        for _ in range(calls):
            proc.recv(timeout=TIMEOUT)
        end(proc)
    finally:
        proc.kill()


def test_three_processes_append_to_one_file_and_every_chain_verifies(tmp_path: Path) -> None:
    audit = tmp_path / "shared.jsonl"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "rules": {"launch": {"action": "deny"}}}))
    together = threading.Barrier(3)
    threads = [threading.Thread(target=_busy_session, args=(audit, policy, 40, together)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    found = records(audit)
    sessions = {r["session"] for r in found}
    assert len(sessions) == 3
    assert len([r for r in found if r["event"] == "call"]) == 120
    # Interleaved: the three start records come before every call, so no session is one block.
    order = [r["session"] for r in found]
    assert sum(1 for a, b in zip(order, order[1:], strict=False) if a != b) > 2
    result = audit_cli("verify", str(audit))
    assert result.returncode == 0, result.stdout
    assert "(3 session(s), 126 record(s))" in result.stdout
    assert result.stdout.count(": ended") == 3


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    """A real audit file of two interleaved sessions (two processes, one after another, appending)."""
    audit = tmp_path / "trail.jsonl"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "rules": {"launch": {"action": "deny"}}}))
    _busy_session(audit, policy, 6)
    _busy_session(audit, policy, 6)
    return audit


def _rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_verify_names_a_removed_line(trail: Path) -> None:
    lines = trail.read_bytes().splitlines()
    _rewrite(trail, lines[:3] + lines[4:])
    result = audit_cli("verify", str(trail))
    assert result.returncode == 1
    assert "line 4: 1 record(s) removed before it (records 3..3 are missing; line 3 is the one before)" in result.stdout
    assert "BROKEN session" in result.stdout and "BROKEN: see above" in result.stdout


def test_verify_names_an_edited_line(trail: Path) -> None:
    lines = trail.read_bytes().splitlines()
    assert b'"argument_keys": ["a", "b"]' in lines[2]
    lines[2] = lines[2].replace(b'"argument_keys": ["a", "b"]', b'"argument_keys": ["a"]')
    _rewrite(trail, lines)
    result = audit_cli("verify", str(trail))
    assert result.returncode == 1
    assert "line 3: edited (its content does not match its hash)" in result.stdout


def test_verify_names_an_edited_line_whose_hash_was_made_again(trail: Path) -> None:
    lines = trail.read_bytes().splitlines()
    record = json.loads(lines[2])
    record["tool"] = "sub"
    del record["hash"]
    lines[2] = seal(json.dumps(record).encode())[0].rstrip(b"\n")
    _rewrite(trail, lines)
    result = audit_cli("verify", str(trail))
    assert result.returncode == 1
    assert "line 4: does not follow line 3 (that line was edited, or records were put in between)" in result.stdout


def test_verify_names_reordered_lines(trail: Path) -> None:
    lines = trail.read_bytes().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    _rewrite(trail, lines)
    result = audit_cli("verify", str(trail))
    assert result.returncode == 1
    assert "line 3: reordered (record 3 comes before record 2)" in result.stdout


def test_verify_checks_each_session_on_its_own(trail: Path) -> None:
    """Two sessions interleaved line by line still verify; breaking one leaves the other OK."""
    lines = trail.read_bytes().splitlines()
    first = [line for line in lines if json.loads(line)["session"] == json.loads(lines[0])["session"]]
    second = [line for line in lines if line not in first]
    mixed = [line for pair in zip(first, second, strict=True) for line in pair]
    _rewrite(trail, mixed)
    assert audit_cli("verify", str(trail)).returncode == 0
    _rewrite(trail, mixed[:4] + mixed[5:])  # a line of the first session
    result = audit_cli("verify", "--json", str(trail))
    assert result.returncode == 1
    sessions = json.loads(result.stdout)["sessions"]
    assert [s["problem"] is None for s in sessions] == [False, True]


def test_verify_reports_records_mcp_guard_could_not_write_as_a_gap() -> None:
    """A record that says `dropped` (a full queue or disk): the chain is intact, the gap is shown."""
    lines = []
    previous = ""
    for seq in range(3):
        record: dict[str, Any] = {"time": "2026-01-01T00:00:00.000Z", "session": "s", "seq": seq, "prev": previous,
                                  "event": "call"}
        if seq == 2:
            record["dropped"] = 5
        line, previous = seal(json.dumps(record).encode())
        lines.append(line)
    result = verify(lines)
    assert not result.broken and result.gaps
    assert result.sessions["s"].gaps == [
        "line 3: mcp-guard could not write 5 record(s) before this one (its queue was full or the disk refused them)"]


def test_verify_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = audit_cli("verify", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2
    assert result.stderr.startswith("mcp-guard: error: cannot read the audit file") and "Traceback" not in result.stderr
