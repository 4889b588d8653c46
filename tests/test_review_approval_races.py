"""Security review (approval, reload): races between a human's approval and a policy reload, through the
binary with raw JSON-RPC lines. A call held for approval is decided again when the human approves; that
decision must be the policy in force then, arguments checked against it, never the one the call
arrived under."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from wireclient import WireProcess, guard_run

SERVER = [sys.executable, str(Path(__file__).resolve().parent / "servers" / "approval_server.py")]
TIMEOUT = 30


def write_policy(path: Path, policy: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(policy))
    os.replace(temporary, path)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(path: Path, event: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not [r for r in records(path) if r["event"] == event]:
        assert time.monotonic() < deadline, f"no {event} record"
        time.sleep(0.05)


def start(tmp_path: Path, policy: dict[str, Any]) -> tuple[WireProcess, Path, Path, Path]:
    path, audit, calls = tmp_path / "policy.json", tmp_path / "audit.jsonl", tmp_path / "calls.jsonl"
    write_policy(path, policy)
    proc = WireProcess(guard_run("--policy", str(path), "--audit", str(audit), "--", *SERVER),
                       env={**os.environ, "CALLS_LOG": str(calls)})
    proc.initialize(capabilities={"elicitation": {}})
    return proc, path, audit, calls


def ask(proc: WireProcess, arguments: dict[str, Any]) -> Any:
    proc.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "delete_file", "arguments": arguments}})
    while True:
        message = proc.recv(TIMEOUT)
        if message.get("method") == "elicitation/create":
            return message["id"]


def approve_and_answer(proc: WireProcess, own_id: Any) -> Any:
    proc.send({"jsonrpc": "2.0", "id": own_id, "result": {"action": "accept", "content": {}}})
    while True:
        message = proc.recv(TIMEOUT)
        if message.get("id") == 1:
            return message


def ran(calls: Path) -> list[Any]:
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def test_an_approval_after_a_reload_that_denies_the_tool_is_refused(tmp_path: Path) -> None:
    # No message comes between the reload and the approval: the held call must still meet the new policy.
    proc, path, audit, calls = start(tmp_path, {"version": "1", "rules": {"delete_file": {
        "action": "require_approval"}}})
    own_id = ask(proc, {"path": "/srv/a"})
    write_policy(path, {"version": "1", "rules": {"delete_file": {"action": "deny", "reason": "frozen"}}})
    wait_for(audit, "reload")
    answer = approve_and_answer(proc, own_id)
    assert answer["result"]["isError"] is True and "frozen" in answer["result"]["content"][0]["text"]
    proc.request(2, "ping")
    assert ran(calls) == []
    proc.kill()


def test_an_approval_after_a_reload_is_checked_against_the_new_argument_schema(tmp_path: Path) -> None:
    # Checked against the old schema when it arrived; a stricter one loaded while the human was asked.
    def policy(pattern: str) -> dict[str, Any]:
        return {"version": "1", "rules": {"delete_file": {"action": "require_approval", "arguments": {
            "type": "object", "properties": {"path": {"type": "string", "pattern": pattern}}}}}}

    proc, path, audit, calls = start(tmp_path, policy("^/srv/"))
    own_id = ask(proc, {"path": "/srv/a"})
    write_policy(path, policy("^/tmp/"))
    wait_for(audit, "reload")
    proc.request(2, "ping")  # the new policy is taken up
    answer = approve_and_answer(proc, own_id)
    assert answer["result"]["isError"] is True, answer
    proc.request(3, "ping")
    assert ran(calls) == []
    proc.kill()


def test_a_monitored_rule_does_not_monitor_a_hide_entry_of_the_same_key(tmp_path: Path) -> None:
    # Rule keys are not unique across "rules" and "hide": the hide entry decides (more restrictive at a
    # tie), and the rules entry's "monitor" must not let the hidden tool's call through.
    path, calls = tmp_path / "policy.json", tmp_path / "calls.jsonl"
    write_policy(path, {"version": "1", "rules": {"delete_file": {"action": "deny", "monitor": True}},
                        "hide": ["delete_file"]})
    proc = WireProcess(guard_run("--policy", str(path), "--", *SERVER), env={**os.environ, "CALLS_LOG": str(calls)})
    proc.initialize()
    answer = proc.request(1, "tools/call", {"name": "delete_file", "arguments": {"path": "/srv/a"}}, TIMEOUT)
    listed = proc.request(2, "tools/list", {}, TIMEOUT)
    assert "delete_file" not in [tool["name"] for tool in listed["result"]["tools"]]
    assert ran(calls) == [], answer
    proc.kill()


LARGE_ECHO = r'''
import sys
for line in sys.stdin:
    if '"ping"' in line:
        # An answer over 1 MiB to request 1 that a reader keeping the last key reads as request 2's.
        sys.stdout.write('{"jsonrpc":"2.0","id":1,"result":{"t":"' + "x" * (1 << 21) + '"},"i\\u0064":2}\n')
        sys.stdout.write('{"jsonrpc":"2.0","id":1,"result":{}}\n')
        sys.stdout.flush()
'''


def test_a_large_answer_with_an_escaped_second_id_is_not_passed_by_its_head(tmp_path: Path) -> None:
    # The fast path looked for a second "id" as bytes only: "i\u0064" is the same key to every parser.
    server = tmp_path / "large.py"
    server.write_text(LARGE_ECHO)
    proc = WireProcess(guard_run("--", sys.executable, str(server)))
    answer = proc.request(1, "ping", None, TIMEOUT)
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": {}}, str(answer)[:200]
    assert proc.other == []
    proc.kill()


STATELESS_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}


@pytest.mark.parametrize("discover", [False, True])
def test_a_handshake_session_without_elicitation_cannot_approve_itself_through_the_stateless_form(
        tmp_path: Path, discover: bool) -> None:
    # The client said at initialize that it cannot ask a human, so the approval command decides (here: no).
    # A call claiming the 2026-07-28 era and elicitation in its own _meta must not get mcp-guard's question
    # (and a state to answer it with) instead.
    path, calls = tmp_path / "policy.json", tmp_path / "calls.jsonl"
    write_policy(path, {"version": "1", "rules": {"delete_file": {"action": "require_approval"}}})
    no = f"{sys.executable} -c 'print(\"no\"); raise SystemExit(3)'"
    proc = WireProcess(guard_run("--policy", str(path), "--approval-command", no, "--", *SERVER),
                       env={**os.environ, "CALLS_LOG": str(calls)})
    proc.initialize()
    if discover:  # a server/discover claiming the 2026-07-28 era does not make the session stateless either
        proc.request(9, "server/discover", {"_meta": STATELESS_META}, TIMEOUT)
    params: dict[str, Any] = {"name": "delete_file", "arguments": {"path": "/srv/a"}, "_meta": STATELESS_META}
    first = proc.request(1, "tools/call", params, TIMEOUT)
    state = first["result"].get("requestState")
    if state is not None:
        retry = {**params, "requestState": state,
                 "inputResponses": {"mcp-guard/approval": {"action": "accept", "content": {}}}}
        # mcp-guard forwarded it (the SDK server refuses the envelope on a handshake connection; a lenient
        # server would have run it).
        assert "error" not in proc.request(2, "tools/call", retry, TIMEOUT)
    assert "requestState" not in first["result"]
    assert first["result"]["isError"] is True and "no" in first["result"]["content"][0]["text"]
    proc.request(3, "ping", None, TIMEOUT)
    assert ran(calls) == []
    proc.kill()


def test_an_approval_answered_after_its_call_was_cancelled_and_the_id_reused_approves_nothing(
        tmp_path: Path) -> None:
    proc, _, audit, calls = start(tmp_path, {"version": "1", "rules": {"delete_file": {
        "action": "require_approval"}}})
    own_id = ask(proc, {"path": "/srv/a"})
    proc.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
    reused = proc.request(1, "tools/call", {"name": "read_file", "arguments": {"path": "/srv/b"}}, TIMEOUT)
    assert reused["result"]["content"][0]["text"] == "contents of /srv/b"
    proc.send({"jsonrpc": "2.0", "id": own_id, "result": {"action": "accept", "content": {}}})
    proc.request(2, "ping", None, TIMEOUT)
    assert ran(calls) == [{"tool": "read_file", "arguments": {"path": "/srv/b"}}]
    assert {"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": own_id, "reason": "no longer needed"}} in proc.other
    proc.kill()


def test_a_second_initialize_does_not_turn_the_approval_command_into_the_clients_own_answer(
        tmp_path: Path) -> None:
    # The session's capabilities are those of its initialize; an agent that sends another one declaring
    # elicitation must not be asked (and answer itself) in place of the approval command.
    path, calls = tmp_path / "policy.json", tmp_path / "calls.jsonl"
    write_policy(path, {"version": "1", "rules": {"delete_file": {"action": "require_approval"}}})
    no = f"{sys.executable} -c 'print(\"no\"); raise SystemExit(3)'"
    proc = WireProcess(guard_run("--policy", str(path), "--approval-command", no, "--", *SERVER),
                       env={**os.environ, "CALLS_LOG": str(calls)})
    proc.initialize()
    proc.request(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}},
                                   "clientInfo": {"name": "again", "version": "1"}}, TIMEOUT)
    proc.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "delete_file", "arguments": {"path": "/srv/a"}}})
    while True:
        message = proc.recv(TIMEOUT)
        if message.get("method") == "elicitation/create":
            proc.send({"jsonrpc": "2.0", "id": message["id"], "result": {"action": "accept", "content": {}}})
        elif message.get("id") == 2:
            break
    assert message["result"]["isError"] is True and "no" in message["result"]["content"][0]["text"]
    proc.request(3, "ping", None, TIMEOUT)
    assert ran(calls) == []
    proc.kill()


def test_a_reload_that_removes_the_policys_approval_command_stops_it_approving(tmp_path: Path) -> None:
    # The policy's "approval_command" was read once, at start: a reload that took away a command that
    # approves everything left it approving.
    path, audit, calls = tmp_path / "policy.json", tmp_path / "audit.jsonl", tmp_path / "calls.jsonl"
    rules = {"delete_file": {"action": "require_approval"}}
    write_policy(path, {"version": "1", "rules": rules, "approval_command": "exit 0"})
    proc = WireProcess(guard_run("--policy", str(path), "--audit", str(audit), "--", *SERVER),
                       env={**{k: v for k, v in os.environ.items() if k != "MCP_GUARD_APPROVAL_COMMAND"},
                            "CALLS_LOG": str(calls)})
    proc.initialize()
    write_policy(path, {"version": "1", "rules": rules})
    wait_for(audit, "reload")
    answer = proc.request(1, "tools/call", {"name": "delete_file", "arguments": {"path": "/srv/a"}}, TIMEOUT)
    assert answer["result"]["isError"] is True, answer
    proc.request(2, "ping", None, TIMEOUT)
    assert ran(calls) == []
    proc.kill()
