"""require_approval in front of a real third-party server: server-everything (the TypeScript SDK's
reference server), through the binary, with the Python SDK's client answering mcp-guard's elicitation.
server-everything speaks the handshake era only, so this is the held-call channel (elicitation/create of
mcp-guard's own), and the server's own elicitation tool still reaches the same callback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from wireclient import guard_run

from .compat import Tools

TIMEOUT = 60
POLICY = {"version": "1", "default": "allow", "rules": {
    "get-sum": {"action": "require_approval", "reason": "sums need a person today"}}}


async def scenario(command: list[str], action: str) -> tuple[types.CallToolResult, list[Any]]:
    asked: list[Any] = []

    async def human(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params)
        return types.ElicitResult(action=action)  # type: ignore[arg-type]

    params = StdioServerParameters(command=command[0], args=command[1:])
    async with Client(params, mode="legacy", elicitation_callback=human, read_timeout_seconds=TIMEOUT) as client:
        result = await client.call_tool("get-sum", {"a": 2, "b": 3})
    return result, asked


@pytest.mark.parametrize("action", ["accept", "decline"])
def test_approval_in_front_of_server_everything(tools: Tools, tmp_path: Path, action: str) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    audit = tmp_path / "audit.jsonl"
    command = guard_run("--policy", str(policy), "--audit", str(audit), "--", *tools.everything)

    async def bounded() -> tuple[types.CallToolResult, list[Any]]:
        with anyio.fail_after(TIMEOUT):
            return await scenario(command, action)

    result, asked = anyio.run(bounded)
    [question] = asked
    assert "Tool:      get-sum" in question.message and '"a": 2' in question.message
    assert "Server:    mcp-servers/everything" in question.message  # its serverInfo name
    text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
    if action == "accept":
        assert not result.is_error and "5" in text, text
    else:
        assert result.is_error and "the human declined the call" in text
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    decisions = [r["decision"] for r in records if r["event"] == "approval"]
    assert decisions == ["approval_asked", "approval_granted" if action == "accept" else "approval_declined"]
