"""A hidden tool cannot be told from a tool that does not exist, and the hidden name never reaches the
upstream (issue 13, item 5). Through the real binary, in front of the Python SDK's MCPServer and raw
servers, in both protocol eras.

mcp-guard answers a call to a hidden tool by asking the upstream, under the call's own id, about a random
name that cannot exist (with no arguments), and relays that answer with the random name turned into the
hidden one. The answers are compared as bytes: hidden and missing must be identical up to the name.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

SERVERS = Path(__file__).resolve().parent / "servers"
SDK_SERVER = SERVERS / "policy_tiny_server.py"  # MCPServer: echo, add, read_note, delete_everything
RECORDING = SERVERS / "recording_server.py"
SCRIPTED = SERVERS / "scripted_server.py"
STATELESS_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}
PROBE_NAME = re.compile(rb"t[0-9a-f]{24}")
# A name that needs escaping in JSON (quote, backslash, tab), with non-ASCII in it.
ODD_GHOST = 'ghost "q" \\ \t é ✓'
POLICY = {"version": "1", "default": "allow", "hide": ["delete_everything", "ghost*"]}


def call_raw(proc: Any, request_id: Any, params: dict[str, Any], timeout: float = 30.0) -> bytes:
    """Send a tools/call and return the exact line that answers it."""
    proc.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})
    while True:
        line = proc.recv_raw(timeout)
        assert line is not None, proc.stderr
        message = json.loads(line)
        if isinstance(message, dict) and "method" not in message and message.get("id") == request_id:
            return line


def params_for(era: str, name: str, arguments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments, **extra}
    if era == "stateless":
        params["_meta"] = STATELESS_META
    return params


def recorded_sdk_server(tmp_path: Path) -> tuple[list[str], Path]:
    """The SDK server, with every byte it reads also appended to a file (tee)."""
    record = tmp_path / f"sdk-record-{len(list(tmp_path.glob('sdk-record-*')))}.jsonl"
    record.touch()
    command = ["sh", "-c", 'tee -a "$1" | exec "$2" "$3"', "sh", str(record), sys.executable, str(SDK_SERVER)]
    return command, record


def start(spawn_guard: Any, command: list[str], policy: dict[str, Any] | None, era: str,
          env: dict[str, str] | None = None) -> Any:
    proc = spawn_guard(command, policy=policy, env=env)
    if era == "handshake":
        assert "result" in proc.initialize()
    return proc


def same_up_to_name(hidden: bytes, hidden_name: str, missing: bytes, missing_name: str) -> None:
    assert hidden.replace(hidden_name.encode(), b"NAME") == missing.replace(missing_name.encode(), b"NAME"), (
        hidden, missing)


@pytest.mark.parametrize("era", ["handshake", "stateless"])
def test_hidden_tool_answers_as_a_missing_one_sdk_server(spawn_guard, tmp_path, era):
    command, record = recorded_sdk_server(tmp_path)
    proc = start(spawn_guard, command, POLICY, era)
    hidden = call_raw(proc, 7, params_for(era, "delete_everything", {"token": "s3cr3t-argument"}))
    missing = call_raw(proc, 7, params_for(era, "no_such_tool", {}))
    same_up_to_name(hidden, "delete_everything", missing, "no_such_tool")
    result = json.loads(hidden)["result"]
    # What the SDK's MCPServer says (an isError result, not a JSON-RPC error): the shape is the upstream's.
    assert result["isError"] is True
    assert result["content"][0]["text"] == "Unknown tool: delete_everything"
    if era == "stateless":
        assert result["resultType"] == "complete" and "io.modelcontextprotocol/serverInfo" in result["_meta"]
    assert b"mcp-guard" not in hidden and b"hid" not in hidden
    # The hidden name and what was meant for it never reached the upstream; a probe did.
    proc.close_stdin()
    proc.wait(30)
    received = record.read_bytes()
    assert b"delete_everything" not in received and b"s3cr3t-argument" not in received
    assert len(PROBE_NAME.findall(received)) == 1


@pytest.mark.parametrize("era", ["handshake", "stateless"])
def test_hidden_and_missing_are_byte_identical_even_for_a_name_that_needs_escaping(spawn_guard, tmp_path, era):
    # The same name, hidden in one session and simply missing (no policy hides it) in another.
    answers = []
    for policy in (POLICY, {"version": "1", "default": "allow"}):
        command, _ = recorded_sdk_server(tmp_path)
        proc = start(spawn_guard, command, policy, era)
        answers.append(call_raw(proc, "call-1", params_for(era, ODD_GHOST, {"x": 1})))
    assert answers[0] == answers[1]
    assert json.loads(answers[0])["result"]["content"][0]["text"] == f"Unknown tool: {ODD_GHOST}"


def test_probe_carries_only_the_era_meta_never_arguments_or_input(spawn_guard, tmp_path):
    record = tmp_path / "record.jsonl"
    audit = tmp_path / "audit.jsonl"
    proc = spawn_guard([sys.executable, str(RECORDING)], policy=POLICY, extra=("--audit", str(audit)),
                       env={"RECORD_FILE": str(record), "TOOLS": "allowed,delete_everything"})
    extra = {"inputResponses": {"ask": {"action": "accept", "content": {"pin": "1234"}}},
             "requestState": "state-for-the-hidden-tool"}
    hidden = call_raw(proc, 3, params_for("stateless", "delete_everything", {"path": "/etc"}, **extra))
    missing = call_raw(proc, 3, params_for("stateless", "no_such_tool", {}))
    same_up_to_name(hidden, "delete_everything", missing, "no_such_tool")
    # The recording server's own unknown-tool answer (it marks its errors), not one of mcp-guard's.
    assert json.loads(hidden)["error"]["data"] == {"source": "recording_server"}
    proc.request("barrier", "ping", {})
    lines = [json.loads(line) for line in record.read_bytes().splitlines()]
    probes = [m for m in lines if m.get("method") == "tools/call" and PROBE_NAME.fullmatch(
        m["params"]["name"].encode())]
    assert len(probes) == 1
    assert probes[0]["id"] == 3
    assert probes[0]["params"] == {"name": probes[0]["params"]["name"], "arguments": {}, "_meta": STATELESS_META}
    raw = record.read_bytes()
    for secret in (b"delete_everything", b"/etc", b"1234", b"state-for-the-hidden-tool"):
        assert secret not in raw
    # The audit log records the decision on the hidden call (not the probe).
    calls = [r for r in map(json.loads, audit.read_text().splitlines()) if r.get("event") == "call"]
    assert [(r["tool"], r["action"]) for r in calls] == [("delete_everything", "hide"), ("no_such_tool", "allow")]


def test_a_probe_whose_upstream_dies_is_answered_as_a_missing_call_would_be(spawn_guard, tmp_path):
    # The scripted server crashes (status 3) on its second request: initialize, then the call.
    answers = []
    for name in ("delete_everything", "no_such_tool"):
        env = {"SCRIPT": json.dumps([{}, {"action": "crash", "status": 3}]), "TOOLS": "allowed,delete_everything"}
        proc = start(spawn_guard, [sys.executable, str(SCRIPTED)], POLICY, "handshake", env=env)
        answers.append((call_raw(proc, 9, params_for("handshake", name, {})), name))
        assert proc.wait(30) == 3
    same_up_to_name(answers[0][0], answers[0][1], answers[1][0], answers[1][1])
    assert json.loads(answers[0][0])["error"]["code"] == -32001


def test_other_messages_flow_while_a_probe_waits(spawn_guard, tmp_path):
    # The probe's answer is held back by the upstream; a ping sent after it is answered first.
    env = {"SCRIPT": json.dumps([{}, {"action": "hold"}]), "TOOLS": "allowed,delete_everything",
           "IDLE_RELEASE": "1.0"}
    proc = start(spawn_guard, [sys.executable, str(SCRIPTED)], POLICY, "handshake", env=env)
    proc.send({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "delete_everything"}})
    proc.send({"jsonrpc": "2.0", "id": 6, "method": "ping"})
    first = proc.recv(30)
    second = proc.recv(30)
    assert first == {"jsonrpc": "2.0", "id": 6, "result": {}}
    assert second == {"jsonrpc": "2.0", "id": 5,
                      "error": {"code": -32602, "message": "Unknown tool: delete_everything"}}

