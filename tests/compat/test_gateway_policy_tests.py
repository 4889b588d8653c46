"""examples/llm-cli-gateway.tests.json run by the real `mcp-guard test` in front of the real llm-cli-gateway
3.1.0-rc.8 (built by tests/compat/install.sh), with a scratch HOME: every expectation holds, a wrong one
fails precisely, and a tee recorder shows that only the calls reported "allowed" reached the gateway.

No call starts a provider CLI: provider tools are only called without a prompt, which the gateway
refuses before launching anything.
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from .compat import PYTHON, ROOT, LlmCliGateway, guard_bin

TESTS = ROOT / "examples" / "llm-cli-gateway.tests.json"
TEE = ROOT / "tests" / "servers" / "tee_recorder.py"


def guard_test(gateway: LlmCliGateway, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in gateway.env(home).items() if not k.startswith("MCP_GUARD_")}
    environment.update(env)
    proc = subprocess.run([guard_bin(), "test", *args], capture_output=True, text=True, timeout=300,
                          env=environment, cwd=home)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_the_gateway_file_passes_and_allowed_is_what_reached_it(llm_cli_gateway: LlmCliGateway,
                                                                tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    record = tmp_path / "seen.jsonl"
    junit = tmp_path / "junit.xml"
    proc = guard_test(llm_cli_gateway, home, str(TESTS), "--junit", str(junit), "--",
                      PYTHON, str(TEE), *llm_cli_gateway.argv, RECORD_FILE=str(record))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    expected = json.loads(TESTS.read_text())["tests"]
    assert len(lines) == len(expected) + 2 and all(line.startswith("✓ ") for line in lines[1:-1]), proc.stdout
    assert lines[-1] == f"{len(expected)} passed, 0 failed"
    suites = ET.parse(junit).getroot()
    assert suites.get("tests") == str(len(expected)) and suites.get("failures") == "0"
    # What reached the gateway: the allowed calls by name (10 claude_request, process health, session
    # create), the hidden ones only as mcp-guard's probes, never a refused one.
    seen = [json.loads(line) for line in record.read_text().splitlines()]
    names = [m["params"]["name"] for m in seen if m.get("method") == "tools/call"]
    real = [name for name in names if name in {"claude_request", "llm_process_health", "session_create"}]
    assert real == ["llm_process_health", "session_create", *["claude_request"] * 10]
    refused = {"session_clear_all", "cli_upgrade", "llm_job_cancel", "session_delete", "config_sync",
               "gemini_request"}
    assert not refused & set(names)
    assert len(names) == len(real) + 2  # the two probes for the hidden tools


def test_a_wrong_expectation_against_the_gateway_is_reported_precisely(llm_cli_gateway: LlmCliGateway,
                                                                       tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    file = tmp_path / "wrong.tests.json"
    file.write_text(json.dumps({
        "policy": str(ROOT / "examples" / "policies" / "llm-cli-gateway.json"),
        "server": llm_cli_gateway.argv,
        "tests": [{"call": "session_delete", "args": {"sessionId": "x"}, "expect": "allowed"},
                  {"call": "llm_job_cancel", "expect": "hidden"},
                  {"list": True, "expect_absent": ["llm_job_cancel"]}]}))
    proc = guard_test(llm_cli_gateway, home, str(file))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # mcp-guard test's client cannot be asked (no elicitation, no approval command): the reason says how
    # approval could be given (docs/approval.md).
    nobody = ("approval is required, and nobody can be asked: this client does not support elicitation, and no "
              "approval command is set. Use a client that supports MCP elicitation, or start mcp-guard with "
              "--approval-command CMD (also $MCP_GUARD_APPROVAL_COMMAND, or the policy's \"approval_command\")")
    assert proc.stdout.splitlines()[1:] == [
        '✗ session_delete{"sessionId":"x"} -> allowed: expected allowed, happened needs_approval '
        f"[rule: session_delete] (deleting a session cannot be undone; ask the user: {nobody})",
        "✗ llm_job_cancel -> hidden: expected hidden, happened needs_approval [rule: llm_job_cancel] "
        f"(cancelling a running job throws away its work; ask the user to cancel it: {nobody})",
        "✗ tools/list: absent llm_job_cancel: expected absent, but listed: llm_job_cancel",
        "0 passed, 3 failed",
    ]
