"""Monitor (shadow) mode through the real binary: what the policy would refuse or hide is decided and
recorded (monitor_would_deny, ...), warned about on stderr, and still listed and forwarded; limits count
as they would; per rule, one rule can be monitored while the others are enforced."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from wireclient import guard_command, guard_run

warnings.filterwarnings("ignore", category=DeprecationWarning)

SERVERS = Path(__file__).resolve().parent / "servers"
TINY = [sys.executable, str(SERVERS / "policy_tiny_server.py")]
TIMEOUT = 30

POLICY = {
    "version": "1",
    "mode": "monitor",
    "default": "deny",
    "rules": {
        "add": {"action": "deny", "reason": "no sums"},
        "read_note": {"action": "allow", "rate_limit": {"max": 1, "window": 60}},
    },
    "hide": ["delete_everything"],
}


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def text(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def shadow_session(command: list[str], mode: str) -> tuple[set[str], list[str]]:
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with Client(params, mode=mode, read_timeout_seconds=TIMEOUT) as client:  # type: ignore[arg-type]
        names = {tool.name for tool in (await client.list_tools()).tools}
        answers = [text(await client.call_tool("add", {"a": 2, "b": 3})),
                   text(await client.call_tool("echo", {"text": "hi"})),
                   text(await client.call_tool("delete_everything", {})),
                   text(await client.call_tool("read_note", {"name": "a"})),
                   text(await client.call_tool("read_note", {"name": "b"}))]
        return names, answers


def run_session(tmp_path: Path, policy: dict[str, Any], mode: str, *extra: str) -> tuple[set[str], list[str], Path]:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    audit = tmp_path / "audit.jsonl"
    command = guard_run("--policy", str(path), "--audit", str(audit), *extra, "--", *TINY)

    async def bounded() -> tuple[set[str], list[str]]:
        with anyio.fail_after(TIMEOUT):
            return await shadow_session(command, mode)

    names, answers = anyio.run(bounded)
    return names, answers, audit


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_monitor_mode_forwards_and_lists_what_it_would_refuse_and_records_it(tmp_path: Path, mode: str) -> None:
    names, answers, audit = run_session(tmp_path, POLICY, mode)
    assert names == {"echo", "add", "read_note", "delete_everything"}  # the hidden tool is listed
    assert answers == ["5", "hi", "deleted", "note a", "note b"]  # every call reached the server
    found = records(audit)
    assert found[0]["mode"] == "monitor"
    calls = [(r["tool"], r["decision"]) for r in found if r["event"] == "call"]
    assert calls == [("add", "monitor_would_deny"), ("echo", "monitor_would_deny"),
                     ("delete_everything", "monitor_would_hide"), ("read_note", "allowed"),
                     ("read_note", "monitor_would_rate_limit")]
    for record in (r for r in found if r["event"] == "call"):
        assert record["outcome"] == "ok" and record["duration_ms"] >= 0  # forwarded: the answer is recorded
        if record["decision"] != "allowed":
            assert record["monitor"] is True and record["reason"]
    add = next(r for r in found if r.get("tool") == "add")
    assert add["action"] == "deny" and add["rule"] == "add" and add["reason"] == "no sums"
    listing = next(r for r in found if r["event"] == "list")
    assert listing["would_hide"] == ["delete_everything"] and listing["hidden"] == []


def test_the_monitor_flag_overrides_an_enforcing_policy(tmp_path: Path) -> None:
    enforcing = {**POLICY, "mode": "enforce"}
    names, answers, audit = run_session(tmp_path, enforcing, "legacy", "--monitor")
    assert "delete_everything" in names and answers[0] == "5"
    assert records(audit)[0]["mode"] == "monitor"


def test_one_rule_monitored_the_others_enforced(tmp_path: Path) -> None:
    policy = {"version": "1", "rules": {"add": {"action": "deny", "reason": "no sums", "monitor": True},
                                        "echo": {"action": "deny", "reason": "no echoes"}},
              "hide": ["delete_everything"]}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    audit = tmp_path / "audit.jsonl"
    command = guard_run("--policy", str(path), "--audit", str(audit), "--", *TINY)

    async def session() -> tuple[set[str], list[types.CallToolResult]]:
        params = StdioServerParameters(command=command[0], args=command[1:])
        async with Client(params, mode="legacy", read_timeout_seconds=TIMEOUT) as client:  # type: ignore[arg-type]
            names = {tool.name for tool in (await client.list_tools()).tools}
            return names, [await client.call_tool("add", {"a": 2, "b": 3}),
                           await client.call_tool("echo", {"text": "hi"})]

    async def bounded() -> tuple[set[str], list[types.CallToolResult]]:
        with anyio.fail_after(TIMEOUT):
            return await session()

    names, (added, echoed) = anyio.run(bounded)
    assert names == {"echo", "add", "read_note"}  # the hide is enforced
    assert text(added) == "5"
    assert echoed.is_error and "no echoes" in echoed.content[0].text  # type: ignore[union-attr]
    calls = {r["tool"]: r["decision"] for r in records(audit) if r["event"] == "call"}
    assert calls == {"add": "monitor_would_deny", "echo": "denied"}


def test_check_and_explain_say_monitor_mode_plainly(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY))
    checked = subprocess.run([*guard_command(), "check", str(path)], capture_output=True, text=True, timeout=TIMEOUT)
    assert "MONITOR MODE" in checked.stdout and "nothing is refused or hidden" in checked.stdout
    explained = subprocess.run([*guard_command(), "explain", "--policy", str(path), "add"], capture_output=True,
                               text=True, timeout=TIMEOUT)
    assert "decision: deny" in explained.stdout
    assert "monitor:  the policy's \"mode\" is \"monitor\": run records this decision but forwards the call" \
        in explained.stdout
    per_rule = tmp_path / "rule.json"
    per_rule.write_text(json.dumps({"version": "1", "rules": {"add": {"action": "deny", "monitor": True}}}))
    checked = subprocess.run([*guard_command(), "check", str(per_rule)], capture_output=True, text=True,
                             timeout=TIMEOUT)
    assert "1 rule(s) in monitor mode (recorded, not enforced): add" in checked.stdout


def test_monitor_mode_warns_on_stderr_for_each_call_it_lets_through(spawn_guard) -> None:
    proc = spawn_guard(TINY, policy=POLICY)
    proc.initialize()
    answer = proc.request(1, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}})
    assert answer["result"]["content"][0]["text"] == "2"
    proc.close_stdin()
    assert proc.wait(TIMEOUT) == 0
    assert "MONITOR MODE (the policy's \"mode\"): every decision is recorded, nothing is refused" in proc.stderr
    assert re.search(r"warning: call add: monitor_would_deny \[rule: add\] \d+ ms: forwarded \(monitor mode\); "
                     r"enforcing would answer: no sums", proc.stderr), proc.stderr


def test_call_reports_a_monitored_refusal_as_what_happened(tmp_path: Path) -> None:
    """`mcp-guard call` with a policy in monitor mode: what its deny rule would refuse ran (exit 0, the
    server's text), as `run` would have let it."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY))
    proc = subprocess.run([*guard_command(), "call", "--policy", str(path), "add", "--args", '{"a": 2, "b": 2}', "--",
                           *TINY], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "4\n"
