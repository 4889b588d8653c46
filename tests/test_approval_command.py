"""The approval command (--approval-command, $MCP_GUARD_APPROVAL_COMMAND, the policy's
"approval_command"): asked when the client cannot ask its human, through the binary with the SDK's client
declaring no elicitation, in both eras. Exit 0 approves, anything else declines with its first line as the
reason, and a command that hangs is killed at the timeout."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from wireclient import guard_run, pid_alive

SERVER = [sys.executable, str(Path(__file__).resolve().parent / "servers" / "approval_server.py")]
TIMEOUT = 40
MODES = ["legacy", "auto"]

warnings.filterwarnings("ignore", category=DeprecationWarning)

COMMAND = """
import json, os, sys, time
seen = json.load(sys.stdin)
open(os.environ["SEEN"], "w").write(json.dumps(seen))
open(os.environ["PIDFILE"], "w").write(str(os.getpid()))
verdict = os.environ.get("VERDICT", "yes")
if verdict == "hang":
    time.sleep(60)
print("approved by the test" if verdict == "yes" else "not on a Friday")
print("a second line nobody reads")
sys.exit(0 if verdict == "yes" else 3)
"""


def policy(timeout: float = 30, command: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": "1", "rules": {"delete_file": {
        "action": "require_approval", "reason": "deleting needs a person", "approval": {"timeout": timeout}}}}
    if command is not None:
        doc["approval_command"] = command
    return doc


class Setup:
    def __init__(self, tmp_path: Path, verdict: str, timeout: float = 30, where: str = "option") -> None:
        script = tmp_path / "approve.py"
        script.write_text(COMMAND)
        command = self.approval_command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
        self.seen, self.pidfile = tmp_path / "seen.json", tmp_path / "pid"
        self.calls_log, self.audit = tmp_path / "calls.jsonl", tmp_path / "audit.jsonl"
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(policy(timeout, command if where == "policy" else None)))
        extra = ["--approval-command", command] if where == "option" else []
        self.command = guard_run("--policy", str(path), "--audit", str(self.audit), *extra, "--", *SERVER)
        self.env = {**os.environ, "CALLS_LOG": str(self.calls_log), "SEEN": str(self.seen),
                    "PIDFILE": str(self.pidfile), "VERDICT": verdict}
        if where == "env":
            self.env["MCP_GUARD_APPROVAL_COMMAND"] = command

    async def call(self, mode: str, elicitation: Any = None) -> types.CallToolResult:
        params = StdioServerParameters(command=self.command[0], args=self.command[1:], env=self.env)
        async with Client(params, mode=mode, read_timeout_seconds=TIMEOUT, elicitation_callback=elicitation) as c:
            return await c.call_tool("delete_file", {"path": "/srv/a"})

    def ran(self) -> int:
        return len(self.calls_log.read_text().splitlines()) if self.calls_log.exists() else 0

    def approvals(self) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.audit.read_text().splitlines()]
        return [r for r in records if r["event"] == "approval"]


def run(fn: Any, *args: Any) -> Any:
    async def bounded() -> Any:
        with anyio.fail_after(TIMEOUT + 20):
            return await fn(*args)

    return anyio.run(bounded)


def text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", ["option", "env", "policy"])
def test_the_command_approves(tmp_path: Path, mode: str, where: str) -> None:
    setup = Setup(tmp_path, "yes", where=where)
    result = run(setup.call, mode)
    assert not result.is_error and text(result) == "deleted /srv/a"
    assert json.loads(setup.seen.read_text()) == {"server": "approval-test-server", "tool": "delete_file",
                                                  "arguments": {"path": "/srv/a"}, "rule": "delete_file",
                                                  "reason": "deleting needs a person"}
    records = setup.approvals()
    assert [(r["decision"], r["channel"]) for r in records] == [("approval_asked", "command"),
                                                                ("approval_granted", "command")]
    assert records[1]["detail"] == "approved by the test"


@pytest.mark.parametrize("mode", MODES)
def test_the_command_declines_with_its_reason(tmp_path: Path, mode: str) -> None:
    setup = Setup(tmp_path, "no")
    result = run(setup.call, mode)
    assert result.is_error
    assert ("the human declined the call (approval asked through the approval command): not on a Friday"
            in text(result))
    assert setup.ran() == 0
    assert setup.approvals()[-1]["decision"] == "approval_declined"


@pytest.mark.parametrize("mode", MODES)
def test_a_command_that_hangs_is_killed_at_the_timeout(tmp_path: Path, mode: str) -> None:
    setup = Setup(tmp_path, "hang", timeout=1.5)
    started = time.monotonic()
    result = run(setup.call, mode)
    assert time.monotonic() - started < 20
    assert "no answer to the approval request within 1.5 s (asked through the approval command)" in text(result)
    assert setup.ran() == 0
    pid = int(setup.pidfile.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), "the approval command outlived its timeout"
    assert setup.approvals()[-1]["decision"] == "approval_timeout"


def test_a_client_with_elicitation_is_asked_rather_than_the_command(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "no")
    asked: list[Any] = []

    async def human(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params)
        return types.ElicitResult(action="accept")

    result = run(setup.call, "legacy", human)
    assert text(result) == "deleted /srv/a" and len(asked) == 1 and not setup.seen.exists()


def test_cancelling_the_call_kills_the_command(spawn_guard, tmp_path: Path) -> None:
    setup = Setup(tmp_path, "hang")
    proc = spawn_guard(SERVER, policy(), extra=("--approval-command", setup.approval_command), env=setup.env)
    proc.initialize()
    proc.send({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
               "params": {"name": "delete_file", "arguments": {"path": "a"}}})
    deadline = time.monotonic() + TIMEOUT
    while not setup.pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(setup.pidfile.read_text())
    proc.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}})
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)
    answer = proc.request(6, "ping", timeout=TIMEOUT)
    assert answer["id"] == 6 and [m for m in proc.other if m.get("id") == 5] == []
    assert setup.ran() == 0


def test_a_command_that_does_not_exist_is_an_error_not_a_no(spawn_guard, tmp_path: Path) -> None:
    calls_log = tmp_path / "calls.jsonl"
    proc = spawn_guard(SERVER, policy(), extra=("--approval-command", str(tmp_path / "no-such-approver")),
                       env={"CALLS_LOG": str(calls_log)})
    proc.initialize()
    answer = proc.request(5, "tools/call", {"name": "delete_file", "arguments": {"path": "a"}}, timeout=TIMEOUT)
    said = answer["result"]["content"][0]["text"]
    assert answer["result"]["isError"] is True
    assert ("the approval request failed (asked through the approval command): the approval command could not "
            "be run (the shell's exit status 127: not found" in said)
    assert not calls_log.exists()
