"""Default policy discovery, through the binary: with no --policy and no MCP_GUARD_POLICY, `run`, `check`
and `explain` use ./mcp-guard.json, ./mcp-guard.yaml, ./mcp-guard.yml, then
$XDG_CONFIG_HOME/mcp-guard/policy.{json,yaml,yml}; found nowhere, nothing starts.

Every test sets both the working directory and XDG_CONFIG_HOME, so a real ~/.config never takes part."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from wireclient import guard_command

TINY = [sys.executable, str(Path(__file__).parent / "servers" / "policy_tiny_server.py")]


def policy(hidden: str) -> str:
    return json.dumps({"version": "1", "default": "allow", "hide": [hidden]})


def guard(args: list[str], cwd: Path, config: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GUARD_")}
    env["XDG_CONFIG_HOME"] = str(config)
    proc = subprocess.run([*guard_command(), *args], input=stdin, capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def places(tmp_path: Path) -> tuple[Path, Path]:
    project = tmp_path / "project"
    project.mkdir()
    config = tmp_path / "config"
    (config / "mcp-guard").mkdir(parents=True)
    return project, config


def decided_by(project: Path, config: Path) -> str:
    """Which hidden tool `explain` sees: each candidate file hides a tool named after itself."""
    for name in ("mcp-guard.json", "mcp-guard.yaml", "mcp-guard.yml", "user.json", "user.yaml"):
        proc = guard(["explain", "--json", name], project, config)
        if proc.returncode == 1 and json.loads(proc.stdout)["action"] == "hide":
            return name
    return "none"


def test_discovery_order(tmp_path: Path) -> None:
    project, config = places(tmp_path)
    (config / "mcp-guard" / "policy.yaml").write_text(policy("user.yaml"))
    assert decided_by(project, config) == "user.yaml"
    (config / "mcp-guard" / "policy.json").write_text(policy("user.json"))
    assert decided_by(project, config) == "user.json"
    (project / "mcp-guard.yml").write_text(policy("mcp-guard.yml"))
    assert decided_by(project, config) == "mcp-guard.yml"
    (project / "mcp-guard.yaml").write_text(policy("mcp-guard.yaml"))
    assert decided_by(project, config) == "mcp-guard.yaml"
    (project / "mcp-guard.json").write_text(policy("mcp-guard.json"))
    assert decided_by(project, config) == "mcp-guard.json"
    # A named policy always wins over a found one.
    named = tmp_path / "named.json"
    named.write_text(policy("named"))
    proc = guard(["explain", "--policy", str(named), "--json", "named"], project, config)
    assert proc.returncode == 1 and json.loads(proc.stdout)["action"] == "hide"


def test_explain_says_which_policy_it_found(tmp_path: Path) -> None:
    project, config = places(tmp_path)
    (project / "mcp-guard.json").write_text(policy("x"))
    proc = guard(["explain", "--json", "x"], project, config)
    assert "mcp-guard.json (found: no --policy named one)" in proc.stderr
    assert json.loads(proc.stdout)["action"] == "hide"  # stdout holds the JSON alone


def test_run_uses_the_found_policy_and_says_so(tmp_path: Path) -> None:
    project, config = places(tmp_path)
    found = config / "mcp-guard" / "policy.json"
    found.write_text(policy("echo"))
    stdin = "".join(json.dumps(m) + "\n" for m in [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}])
    proc = guard(["run", *TINY], project, config, stdin)
    assert proc.returncode == 0, proc.stderr
    assert f"policy {found}: 1 hidden, 0 rule(s), default allow (found there: no --policy named one)" in proc.stderr
    answers = {m["id"]: m for m in map(json.loads, proc.stdout.splitlines())}
    assert "echo" not in [tool["name"] for tool in answers[2]["result"]["tools"]]


def test_check_without_a_file_checks_the_found_policy(tmp_path: Path) -> None:
    project, config = places(tmp_path)
    (project / "mcp-guard.yaml").write_text("version: '1'\ndefault: allow\nhide: [x]\n")
    proc = guard(["check"], project, config)
    assert proc.returncode == 0, proc.stderr
    assert "checking ./mcp-guard.yaml (found: none named)" in proc.stderr
    assert proc.stdout.strip() == "./mcp-guard.yaml: OK"


def test_found_nowhere_is_one_line_naming_the_places_and_the_ways_out(tmp_path: Path) -> None:
    project, config = places(tmp_path)
    marker = tmp_path / "started"
    server = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    for args in (["run", *server], ["explain", "tool"], ["check"], ["call", "tool", *server]):
        proc = guard(args, project, config)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("mcp-guard: error: no policy: none named and none found in "
                                   f"./mcp-guard.{{json,yaml,yml}} or {config}/mcp-guard/policy.{{json,yaml,yml}}")
        assert "MCP_GUARD_POLICY" in lines[0]
        if args[0] == "run":
            assert "--policy FILE" in lines[0] and "--no-policy" in lines[0]
    assert not marker.exists()


def test_a_found_policy_that_is_broken_stops_run(tmp_path: Path) -> None:
    project, config = places(tmp_path)
    (project / "mcp-guard.json").write_text('{"version": "1", "default": "alow"}')
    proc = guard(["run", sys.executable, "-c", "pass"], project, config)
    assert proc.returncode == 2 and proc.stderr.startswith("mcp-guard: error: policy error: ./mcp-guard.json:1:")
