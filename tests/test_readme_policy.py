"""The README's policy fits the server it names: every rule and hide entry matches a tool of the real
llm-cli-gateway (the recorded 3.1.0-rc.8 listing in ../shared/fixtures), and `mcp-guard check` against a
server serving that listing finds nothing to warn about. Copied as is, the policy does something."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT, SHARED
from test_cli_policy import REPLAY  # the recorded listing, served by a few lines of Python
from wireclient import guard_command

from mcp_guard.policy import loads

FIXTURE = SHARED / "fixtures" / "llm-cli-gateway-3.1.0-rc.8-tools-list.json"
README = ROOT / "README.md"

def readme_policy() -> str:
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(), re.DOTALL)
    policies = [block for block in blocks if '"version"' in block and '"rules"' in block]
    assert policies, "the README shows no policy"
    return policies[0]


def real_tools() -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["tools"]
    assert len(tools) == 64
    return tools


def test_every_readme_rule_and_hide_entry_matches_a_real_tool() -> None:
    policy = loads(readme_policy(), "README.md")
    names = [tool["name"] for tool in real_tools()]
    for rule in policy.rules:
        matched = [name for name in names if rule in policy.matching_rules(name)]
        assert matched, f"{rule.place} in the README matches none of llm-cli-gateway's tools"


def test_readme_policy_constrains_arguments_the_real_tool_has() -> None:
    policy = loads(readme_policy(), "README.md")
    by_name = {tool["name"]: tool for tool in real_tools()}
    constrained = [rule for rule in policy.rules if isinstance(rule.arguments, dict)]
    assert constrained, "the README's policy shows no `arguments` rule"
    for rule in constrained:
        for name, tool in by_name.items():
            if rule in policy.matching_rules(name):
                real = set(tool["inputSchema"].get("properties", {}))
                assert set(rule.arguments.get("properties", {})) <= real, (rule.key, name)


def test_readme_links_the_complete_example() -> None:
    text = README.read_text()
    assert "](examples/policies/llm-cli-gateway.json)" in text
    assert (ROOT / "examples" / "policies" / "llm-cli-gateway.json").is_file()


def test_check_finds_only_what_the_readme_says_about_its_policy(tmp_path: Path) -> None:
    """No rule that matches nothing, no constraint on an argument the tool lacks; the one warning is the
    one the README itself states (destructive tools the short policy leaves to the default)."""
    policy = tmp_path / "policy.json"
    policy.write_text(readme_policy())
    replay = tmp_path / "replay.py"
    replay.write_text(REPLAY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GUARD_")}
    proc = subprocess.run([*guard_command(), "check", str(policy), sys.executable, str(replay), str(FIXTURE)],
                          capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "The server offers 64 tool(s)" in proc.stdout
    found = [line for line in proc.stdout.splitlines() if line.startswith(f"{policy}: warning: ")]
    assert len(found) == 1 and "19 tool(s) the server marks destructive are allowed by default" in found[0]
    assert "19 other tools the server marks\ndestructive" in README.read_text()
    assert proc.stderr == ""
