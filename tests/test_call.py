"""`mcp-guard call`, through the binary in front of the real example server: one exit status per outcome
(0 ran and succeeded, 1 the server answered with an error, 3 refused, 2 bad input), the text or --json,
and nothing on stdout but the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wireclient import guard_command

ROOT = Path(__file__).resolve().parent.parent
SERVER = [sys.executable, str(ROOT / "examples" / "llm_gateway_server.py")]
POLICY = ROOT / "examples" / "policies" / "quickstart.json"


def call(tmp_path: Path, *args: str, server: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GUARD_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    proc = subprocess.run([*guard_command(), "call", *args, "--", *(SERVER if server is None else server)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert "Traceback (most recent call last):\n  File \"" + str(ROOT / "mcp_guard") not in proc.stderr
    return proc


def test_allowed_and_succeeded_is_0_with_the_text(tmp_path: Path) -> None:
    proc = call(tmp_path, "--policy", str(POLICY), "llm_request", "--args", '{"prompt": "hi", "model": "demo"}')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[demo] echo: hi\n"


def test_json_prints_the_whole_result(tmp_path: Path) -> None:
    proc = call(tmp_path, "--policy", str(POLICY), "--json", "llm_request", "--args", '{"prompt": "hi"}')
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["content"][0]["text"] == "[example-model] echo: hi" and not result.get("isError")


def test_server_error_is_1(tmp_path: Path) -> None:
    proc = call(tmp_path, "--policy", str(POLICY), "llm_job_status", "--args", '{"jobId": "job-999"}')
    assert proc.returncode == 1, proc.stderr
    assert "llm_job_status" in proc.stdout  # the server's own error text
    assert "refused" not in proc.stderr


@pytest.mark.parametrize(("tool", "args", "said"), [
    ("llm_job_cancel", '{"jobId": "job-1"}', "refused: llm_job_cancel hidden by the policy"),
    ("llm_admin_stats", None, "refused: llm_admin_stats denied: Admin tools are for operators"),
    ("llm_job_status", '{"jobId": "../x"}', "refused: llm_job_status denied: argument jobId"),
])
def test_refused_is_3(tmp_path: Path, tool: str, args: str | None, said: str) -> None:
    proc = call(tmp_path, "--policy", str(POLICY), tool, *(["--args", args] if args else []))
    assert proc.returncode == 3, proc.stderr
    assert said in proc.stderr


def test_needs_approval_and_rate_limited_are_3(tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow", "rules": {
        "llm_job_cancel": {"action": "require_approval", "reason": "ask first"},
        "llm_request": {"rate_limit": {"max": 0, "window": 60}}}}))
    proc = call(tmp_path, "--policy", str(policy), "llm_job_cancel", "--args", '{"jobId": "job-1"}')
    assert proc.returncode == 3 and "refused: llm_job_cancel needs approval: ask first" in proc.stderr
    proc = call(tmp_path, "--policy", str(policy), "--json", "llm_request", "--args", '{"prompt": "x"}')
    assert proc.returncode == 3 and "refused: llm_request rate limited: rate limit reached" in proc.stderr
    # --json shows mcp-guard's refusal whole, decision record included.
    assert json.loads(proc.stdout)["_meta"]["mcp-guard/decision"]["action"] == "deny"


@pytest.mark.parametrize(("args", "said"), [
    (["--policy", "nope.json", "llm_request"], "policy error: nope.json: no such file"),
    (["--policy", str(POLICY), "llm_request", "--args", "{"], "--args is not valid JSON"),
    (["--policy", str(POLICY), "llm_request", "--args", "[1]"], "--args must be a JSON object"),
])
def test_bad_input_is_2(tmp_path: Path, args: list[str], said: str) -> None:
    proc = call(tmp_path, *args)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcp-guard: error: ") and said in lines[0], proc.stderr


def test_a_server_that_does_not_start_is_2(tmp_path: Path) -> None:
    proc = call(tmp_path, "--policy", str(POLICY), "llm_request", server=["definitely-not-a-command-xyz"])
    assert proc.returncode == 2 and proc.stdout == ""
    assert "mcp-guard: error: mcp-guard run did not start: command not found: definitely-not-a-command-xyz" \
        in proc.stderr


def test_discovered_policy_is_used(tmp_path: Path) -> None:
    (tmp_path / "mcp-guard.json").write_text(json.dumps({"version": "1", "default": "deny"}))
    proc = call(tmp_path, "llm_request", "--args", '{"prompt": "hi"}')
    assert proc.returncode == 3, proc.stderr
    assert f"policy {tmp_path / 'mcp-guard.json'}" in proc.stderr  # run's start-up line names it
