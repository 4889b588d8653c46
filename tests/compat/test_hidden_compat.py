"""server-everything (the TypeScript SDK's reference server): a hidden tool answers exactly as a tool the
server does not have (issue 13, item 5), through the real binary, in both protocol eras.

server-everything answers an unknown tool with an isError result ("MCP error -32602: Tool X not found"),
and a task-augmented call to one with a JSON-RPC error: either way mcp-guard's answer for a hidden tool must
be that answer, with the name in it. It does not speak the 2026-07-28 era (server/discover is -32601) but
answers a call carrying that era's _meta all the same, which is what the stateless case sends.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from .compat import Tools

STATELESS_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}
POLICY = {"version": "1", "default": "allow", "hide": ["get-env", "ghost*"]}
ODD_GHOST = 'ghost "q" \\ é'


def call_raw(proc: Any, request_id: Any, params: dict[str, Any]) -> bytes:
    proc.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})
    while True:
        line = proc.recv_raw(30)
        assert line is not None, proc.stderr
        message = json.loads(line)
        if isinstance(message, dict) and "method" not in message and message.get("id") == request_id:
            return line


def start(spawn_guard: Any, tools: Tools, policy: dict[str, Any], era: str) -> Any:
    proc = spawn_guard(tools.everything, policy=policy)
    if era != "stateless":
        assert "result" in proc.initialize(capabilities={"tasks": {}} if era == "task" else {})
    return proc


def params_for(era: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if era == "stateless":
        params["_meta"] = STATELESS_META
    if era == "task":
        params["task"] = {"ttl": 60000}
    return params


@pytest.mark.parametrize("era", ["handshake", "stateless", "task"])
def test_hidden_tool_answers_as_a_missing_one_server_everything(tools: Tools, spawn_guard: Any, era: str) -> None:
    proc = start(spawn_guard, tools, POLICY, era)
    hidden = call_raw(proc, 11, params_for(era, "get-env", {"secret": "do-not-send"}))
    missing = call_raw(proc, 11, params_for(era, "no-such-tool", {}))
    assert hidden.replace(b"get-env", b"NAME") == missing.replace(b"no-such-tool", b"NAME"), (hidden, missing)
    answer = json.loads(hidden)
    if era == "task":
        assert answer["error"]["code"] == -32602  # server-everything's own answer to a task for no tool
    else:
        assert answer["result"]["isError"] is True
        assert answer["result"]["content"][0]["text"] == "MCP error -32602: Tool get-env not found"
    assert re.search(rb"t[0-9a-f]{24}", hidden) is None


@pytest.mark.parametrize("era", ["handshake", "stateless"])
def test_hidden_and_missing_byte_identical_server_everything(tools: Tools, spawn_guard: Any, era: str,
                                                               tmp_path: Path) -> None:
    # One name, hidden in one session and merely missing in the other.
    answers = [call_raw(start(spawn_guard, tools, policy, era), "c", params_for(era, ODD_GHOST, {"x": 1}))
               for policy in (POLICY, {"version": "1", "default": "allow"})]
    assert answers[0] == answers[1]
    assert json.loads(answers[0])["result"]["content"][0]["text"] == f"MCP error -32602: Tool {ODD_GHOST} not found"
