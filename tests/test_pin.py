"""Tool pinning through the real binary: `mcp-guard pin`, then a server whose tools change between runs
(tests/servers/drifting_server.py, driven by $DRIFT) in front of `mcp-guard run` and `mcp-guard check`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wireclient import WireProcess, guard_command, guard_run

SERVER = [sys.executable, str(Path(__file__).resolve().parent / "servers" / "drifting_server.py")]


def guard(*args: str, drift: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*guard_command(), *args], capture_output=True, text=True, timeout=90, cwd=cwd,
                          env={**os.environ, "DRIFT": drift})


@pytest.fixture
def pinned(tmp_path: Path) -> Path:
    """A policy (allow by default) pinned to the server's tools as they are without $DRIFT."""
    result = guard("pin", "-o", str(tmp_path / "tools.lock"), "--", *SERVER)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "pinned 2 tool(s)" in result.stderr
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "pin": "tools.lock"}))  # relative to the policy file
    return policy


def session(policy: Path, drift: str, audit: Path) -> tuple[WireProcess, list[str]]:
    proc = WireProcess(guard_run("--policy", str(policy), "--audit", str(audit), "--", *SERVER),
                       env={**os.environ, "DRIFT": drift})
    proc.initialize()
    names = [tool["name"] for tool in proc.request(1, "tools/list", {})["result"]["tools"]]
    return proc, names


def audit_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_unchanged_tools_pass(pinned: Path, tmp_path: Path) -> None:
    proc, names = session(pinned, "", tmp_path / "a.jsonl")
    try:
        assert sorted(names) == ["read_note", "send_note"]
        answer = proc.request(2, "tools/call", {"name": "send_note", "arguments": {"to": "a", "text": "b"}})
        assert answer["result"]["content"][0]["text"] == "sent to a"
    finally:
        proc.kill()
    assert not [r for r in audit_records(tmp_path / "a.jsonl") if r.get("event") == "pin_mismatch"]
    check = guard("check", str(pinned), "--", *SERVER)
    assert "differ from the pin" not in check.stdout


@pytest.mark.parametrize("drift", ["description", "schema", "added"])
def test_a_changed_or_new_tool_is_hidden_and_refused(pinned: Path, tmp_path: Path, drift: str) -> None:
    audit = tmp_path / "a.jsonl"
    proc, names = session(pinned, drift, audit)
    odd = "export_notes" if drift == "added" else "send_note"
    try:
        assert odd not in names and "read_note" in names
        arguments = {"url": "x"} if drift == "added" else {"to": "a", "text": "b"}
        answer = proc.request(2, "tools/call", {"name": odd, "arguments": arguments})
        assert f"Unknown tool: {odd}" in json.dumps(answer)  # as the server answers a tool it lacks
        assert "sent to" not in json.dumps(answer) and "exported" not in json.dumps(answer)
        proc.request(3, "tools/list", {})  # listed again: still one warning
        ok = proc.request(4, "tools/call", {"name": "read_note", "arguments": {"name": "n"}})
        assert ok["result"]["content"][0]["text"] == "note n"
    finally:
        proc.kill()
    warnings = [line for line in proc.stderr.splitlines() if "since it was pinned" in line and "refused" not in line]
    assert len(warnings) == 1, proc.stderr
    assert odd in warnings[0]
    records = audit_records(audit)
    mismatches = [r for r in records if r.get("event") == "pin_mismatch"]
    assert [(r["tool"], r["status"]) for r in mismatches] == [(odd, "added" if drift == "added" else "changed")]
    calls = [r for r in records if r.get("event") == "call" and r.get("tool") == odd]
    assert calls and calls[0]["action"] == "hide" and calls[0]["kind"] == "pin"


def test_require_approval_lists_the_tool_and_refuses_its_calls(pinned: Path, tmp_path: Path) -> None:
    pinned.write_text(json.dumps({"version": "1", "pin": "tools.lock", "on_pin_mismatch": "require_approval"}))
    proc, names = session(pinned, "description", tmp_path / "a.jsonl")
    try:
        assert "send_note" in names
        answer = proc.request(2, "tools/call", {"name": "send_note", "arguments": {"to": "a", "text": "b"}})
        assert answer["result"]["isError"] is True
        text = answer["result"]["content"][0]["text"]
        assert "changed its definition since it was pinned" in text and "approval" in text
    finally:
        proc.kill()


def test_a_call_before_any_listing_is_refused(pinned: Path, tmp_path: Path) -> None:
    proc = WireProcess(guard_run("--policy", str(pinned), "--", *SERVER), env={**os.environ, "DRIFT": ""})
    try:
        proc.initialize()
        answer = proc.request(1, "tools/call", {"name": "read_note", "arguments": {"name": "n"}})
        assert answer["result"]["isError"] is True
        assert "list the tools first" in answer["result"]["content"][0]["text"]
        proc.request(2, "tools/list", {})
        ok = proc.request(3, "tools/call", {"name": "read_note", "arguments": {"name": "n"}})
        assert ok["result"]["content"][0]["text"] == "note n"
    finally:
        proc.kill()


def test_check_reports_the_drift(pinned: Path) -> None:
    described = guard("check", str(pinned), "--", *SERVER, drift="description")
    assert described.returncode == 1
    assert "0 added, 0 removed, 1 changed" in described.stdout
    assert "changed since pinned: send_note" in described.stdout
    assert "description: 'Send a note to a colleague.' -> 'Send a note to a colleague. Before" in described.stdout
    schema = guard("check", str(pinned), "--", *SERVER, drift="schema")
    assert "inputSchema.properties.bcc.type: (absent) -> 'string'" in schema.stdout
    added = guard("check", str(pinned), "--", *SERVER, drift="added")
    assert "added since pinned: export_notes" in added.stdout
    # The table shows what run will do: the new tool hidden, by the pin.
    assert "the agent will see 2:" in added.stdout
    assert "export_notes  [pin: added since pinned]" in added.stdout


@pytest.mark.parametrize("content", [None, "not json", '{"tools": {}}', '{"mcp_guard_lock": 1, "tools": {"x": {}}}'])
def test_a_missing_or_corrupt_lock_stops_the_start(pinned: Path, content: str | None) -> None:
    lock = pinned.parent / "tools.lock"
    if content is None:
        lock.unlink()
    else:
        lock.write_text(content)
    run = subprocess.run([*guard_run("--policy", str(pinned), "--", *SERVER)], input="", capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert "pin file" in run.stderr and "Traceback" not in run.stderr
    check = guard("check", str(pinned))
    assert check.returncode == 2
    assert "pin file" in check.stderr


def test_call_lists_first_under_a_pin(pinned: Path) -> None:
    ok = guard("call", "--policy", str(pinned), "read_note", "--args", '{"name": "n"}', "--", *SERVER)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "note n"
    assert "tools pinned in" in ok.stderr
    changed = guard("call", "--policy", str(pinned), "send_note", "--args", '{"to": "a", "text": "b"}', "--",
                    *SERVER, drift="description")
    assert changed.returncode == 3
    assert "sent to" not in changed.stdout


def test_policy_tests_see_the_pin(pinned: Path, tmp_path: Path) -> None:
    tests = tmp_path / "pin.tests.json"
    tests.write_text(json.dumps({"policy": "policy.json", "tests": [
        {"call": "read_note", "args": {"name": "n"}, "expect": "allowed"},
        {"call": "send_note", "args": {"to": "a", "text": "b"}, "expect": "hidden"}]}))
    result = guard("test", str(tests), "--", *SERVER, drift="description")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 0 failed" in result.stdout


def test_a_tool_the_policy_hides_stays_unknown_under_a_pin(pinned: Path) -> None:
    pinned.write_text(json.dumps({"version": "1", "pin": "tools.lock", "hide": ["send_note"]}))
    proc = WireProcess(guard_run("--policy", str(pinned), "--", *SERVER), env={**os.environ, "DRIFT": ""})
    try:
        proc.initialize()
        # Before any listing: the pin's "list the tools first" would say the tool exists.
        answer = proc.request(1, "tools/call", {"name": "send_note", "arguments": {"to": "a", "text": "b"}})
        assert "Unknown tool: send_note" in json.dumps(answer)
        assert "pin" not in json.dumps(answer)
    finally:
        proc.kill()


@pytest.mark.parametrize("action", ["accept", "decline"])
def test_require_approval_asks_a_client_that_can_be_asked(pinned: Path, tmp_path: Path, action: str) -> None:
    """on_pin_mismatch require_approval with a client that declared elicitation: the person is asked about
    the changed tool; accepted, the call runs, declined, it is refused (docs/approval.md)."""
    pinned.write_text(json.dumps({"version": "1", "pin": "tools.lock", "on_pin_mismatch": "require_approval"}))
    proc = WireProcess(guard_run("--policy", str(pinned), "--", *SERVER), env={**os.environ, "DRIFT": "description"})
    try:
        proc.initialize(capabilities={"elicitation": {"form": {}}})
        proc.request(1, "tools/list", {})
        proc.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                   "params": {"name": "send_note", "arguments": {"to": "a", "text": "b"}}})
        question = proc.recv(30)
        assert question["method"] == "elicitation/create"
        assert "send_note changed its definition since it was pinned" in question["params"]["message"]
        proc.send({"jsonrpc": "2.0", "id": question["id"], "result": {"action": action}})
        answer = proc.recv(30)
    finally:
        proc.kill()
    if action == "accept":
        assert answer["result"]["content"][0]["text"] == "sent to a"
    else:
        assert answer["result"]["isError"] is True and "the human declined" in answer["result"]["content"][0]["text"]
