"""The policy's approval keys (per rule "approval": timeout, remember; top-level "approval_command"), and
what check and explain say about the tools that ask for approval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from wireclient import guard_command

from mcp_guard.policy import Approval, PolicyError, loads

SERVER = [sys.executable, str(Path(__file__).resolve().parent / "servers" / "policy_tiny_server.py")]
POLICY = {"version": "1", "approval_command": "notify-send-and-wait",
          "rules": {"delete_everything": {"action": "require_approval", "reason": "really?",
                                          "approval": {"timeout": 30, "remember": "session"}},
                    "echo": {"action": "allow"}, "read_note": {"action": "allow"},
                    "add": {"action": "require_approval"}}}


def mcp_guard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "MCP_GUARD_APPROVAL_COMMAND"} | (env or {})
    return subprocess.run([*guard_command(), *args], capture_output=True, text=True, timeout=60, env=environment)


def test_the_keys_load() -> None:
    policy = loads(json.dumps(POLICY))
    rules = {rule.key: rule for rule in policy.rules}
    assert rules["delete_everything"].approval == Approval(30.0, "session")
    assert rules["add"].approval == Approval(120.0, "none")
    assert policy.approval_command == "notify-send-and-wait"


@pytest.mark.parametrize(("approval", "problem"), [
    ({"remember": "forever"}, "'forever' is not one of 'none', 'arguments', 'session'"),
    ({"timeout": 0}, "0 is less than or equal to the minimum of 0"),
    ({"timout": 5}, "unknown key 'timout' (did you mean 'timeout'?"),
])
def test_bad_approval_settings_are_refused_with_their_place(approval: dict[str, Any], problem: str) -> None:
    doc = {"version": "1", "rules": {"x": {"action": "require_approval", "approval": approval}}}
    with pytest.raises(PolicyError) as caught:
        loads(json.dumps(doc), "p.json")
    assert problem in str(caught.value) and "$.rules.x.approval" in str(caught.value)


def test_explain_says_how_approval_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(POLICY))
    proc = mcp_guard("explain", "--policy", str(path), "delete_everything")
    assert proc.returncode == 1, proc.stderr
    assert ("how:      asked through the client when it supports elicitation, else the approval command "
            "('notify-send-and-wait'); waits 30 s; remembered for the session") in proc.stdout.splitlines()
    without = dict(POLICY)
    del without["approval_command"]
    path.write_text(json.dumps(without))
    proc = mcp_guard("explain", "--policy", str(path), "add")
    assert "else refused (no --approval-command" in proc.stdout
    proc = mcp_guard("explain", "--policy", str(path), "add", env={"MCP_GUARD_APPROVAL_COMMAND": "from-env"})
    assert "else the approval command ('from-env')" in proc.stdout


def test_check_lists_the_tools_that_ask_and_through_what(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(POLICY))
    proc = mcp_guard("check", str(path), "--", *SERVER)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    start = lines.index("needs approval (2):")
    assert lines[start + 1].split()[0] == "add"
    assert lines[start + 1].endswith("approval: client (elicitation), else command 'notify-send-and-wait'; "
                                     "120 s; every call asked")
    assert lines[start + 2].endswith("reason: really?; approval: client (elicitation), else command "
                                     "'notify-send-and-wait'; 30 s; remembered for the session")


def test_check_warns_about_approval_settings_on_a_rule_that_never_asks(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": "1", "rules": {"x": {"action": "allow", "approval": {"timeout": 5}}}}))
    proc = mcp_guard("check", str(path))
    assert proc.returncode == 1
    assert ("rules.x has approval settings, but its action is 'allow': only a require_approval rule asks anyone"
            in proc.stdout)
