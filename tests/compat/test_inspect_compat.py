"""`mcp-guard tools`, `init` and `pin` in front of server-everything (the TypeScript SDK's reference
server, a third party's tool definitions and annotations), through the real binary."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .compat import LlmCliGateway, Tools, guard_bin


def guard(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([guard_bin(), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_tools_classes_server_everything(tools: Tools) -> None:
    result = guard("tools", "--json", "--", *tools.everything)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["server"].get("name")
    classed = {tool["name"]: tool for tool in report["tools"]}
    assert "echo" in classed
    for tool in classed.values():
        assert tool["risk"] in ("critical", "high", "medium", "low")
        assert tool["category"] in ("destructive", "execute", "network", "write", "read")
        assert tool["why"]
    table = guard("tools", "--", *tools.everything)
    assert table.returncode == 0, table.stderr
    assert all(len(line) <= 100 for line in table.stdout.splitlines())


@pytest.mark.parametrize("profile", ["strict", "balanced", "permissive"])
def test_init_passes_check_on_server_everything(tools: Tools, tmp_path: Path, profile: str) -> None:
    out = tmp_path / "policy.json"
    result = guard("init", "--profile", profile, "-o", str(out), "--", *tools.everything)
    assert result.returncode == 0, result.stderr
    check = guard("check", str(out), "--", *tools.everything)
    assert check.returncode == 0, check.stdout + check.stderr


def test_pin_matches_server_everything_on_the_next_start(tools: Tools, tmp_path: Path) -> None:
    result = guard("pin", "-o", str(tmp_path / "tools.lock"), "--", *tools.everything)
    assert result.returncode == 0, result.stderr
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "pin": "tools.lock"}))
    check = guard("check", str(policy), "--", *tools.everything)
    assert "differ from the pin" not in check.stdout, check.stdout


def test_tools_and_strict_init_on_the_real_llm_cli_gateway(llm_cli_gateway: LlmCliGateway, tmp_path: Path) -> None:
    env = llm_cli_gateway.env(tmp_path)
    result = guard("tools", "--json", "--", *llm_cli_gateway.argv, env=env)
    assert result.returncode == 0, result.stderr
    classed = {tool["name"]: tool for tool in json.loads(result.stdout)["tools"]}
    for name in ("llm_job_cancel", "session_clear_all"):
        assert classed[name]["category"] == "destructive" and classed[name]["risk"] in ("high", "critical")
    assert (classed["session_list"]["category"], classed["session_list"]["risk"]) == ("read", "low")
    out = tmp_path / "strict.json"
    made = guard("init", "--profile", "strict", "-o", str(out), "--", *llm_cli_gateway.argv, env=env)
    assert made.returncode == 0, made.stderr
    assert llm_cli_gateway.version in json.loads(out.read_text())["description"]
    check = guard("check", str(out), "--", *llm_cli_gateway.argv, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
