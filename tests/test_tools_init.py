"""`mcp-guard tools` and `mcp-guard init`, through the real binary in front of real servers: the example
server (MCP SDK) and the replayed llm-cli-gateway 3.1.0-rc.8 listing (64 tools)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wireclient import WireProcess, guard_command, guard_run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = [sys.executable, str(ROOT / "examples" / "llm_gateway_server.py")]
REPLAY = [sys.executable, str(Path(__file__).resolve().parent / "servers" / "replay_server.py")]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "llm-cli-gateway-3.1.0-rc.8-tools-list.json"


def guard(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*guard_command(), *args], capture_output=True, text=True, timeout=90, cwd=cwd)


def test_tools_table_on_the_example_server_fits_100_columns() -> None:
    result = guard("tools", "--", *EXAMPLE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    assert lines[1].split()[:4] == ["TOOL", "RISK", "CATEGORY", "WHY"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[2:13]}
    assert rows["llm_job_cancel"] == ["high", "destructive"]
    assert rows["llm_job_list"] == ["low", "read"]
    assert "the server's own claims" in " ".join(lines)
    assert "Traceback" not in result.stderr


def test_tools_json_on_the_replayed_gateway() -> None:
    if not FIXTURE.exists():
        pytest.skip("the shared llm-cli-gateway fixture is not there")
    result = guard("tools", "--json", *REPLAY)  # no `--`: the server command starts at the first word
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["server"] == {"name": "llm-cli-gateway-replay", "version": "3.1.0-rc.8"}
    tools = {tool["name"]: tool for tool in report["tools"]}
    assert len(tools) == 64
    for name in ("llm_job_cancel", "session_clear_all"):
        assert tools[name]["category"] == "destructive"
        assert tools[name]["risk"] in ("high", "critical")
    assert tools["session_clear_all"]["risk"] == "critical"
    assert tools["session_list"]["category"] == "read" and tools["session_list"]["risk"] == "low"
    assert any("destructiveHint" in why for why in tools["llm_job_cancel"]["why"])
    assert any("cancel" in why for why in tools["llm_job_cancel"]["why"])


def test_tools_with_a_policy_says_what_it_does(tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow", "hide": ["llm_job_cancel"], "rules": {
        "llm_admin_stats": {"action": "deny"}, "llm_spend": {"action": "require_approval"},
        "llm_request": {"rate_limit": {"max": 2, "window": 60}}}}))
    result = guard("tools", "--policy", str(policy), "--", *EXAMPLE)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:4] for line in result.stdout.splitlines()[2:13]}
    assert rows["llm_job_cancel"][2] == "hidden"
    assert rows["llm_admin_stats"][2] == "denied"
    assert rows["llm_spend"][2] == "approval"
    assert rows["llm_request"][2] == "limited"
    assert rows["llm_job_list"][2] == "allowed"
    assert all(len(line) <= 100 for line in result.stdout.splitlines())


def test_tools_on_a_server_that_cannot_start_is_one_line() -> None:
    result = guard("tools", "--", "/nonexistent/server")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("mcp-guard: error: cannot list the server's tools")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("profile", ["strict", "balanced", "permissive"])
def test_each_init_profile_passes_check(tmp_path: Path, profile: str) -> None:
    if not FIXTURE.exists():
        pytest.skip("the shared llm-cli-gateway fixture is not there")
    out = tmp_path / f"{profile}.json"
    result = guard("init", "--profile", profile, "-o", str(out), "--", *REPLAY)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    policy = json.loads(out.read_text())
    assert "llm-cli-gateway-replay 3.1.0-rc.8" in policy["description"]
    # Each rule says why: `reason` (which an agent reads when the rule refuses), or on a hidden tool, whose
    # caller never sees a reason, `note`.
    assert policy["rules"] and all(rule.get("note" if rule["action"] == "hide" else "reason")
                                   for rule in policy["rules"].values())
    rules = policy["rules"]
    if profile == "strict":
        assert policy["default"] == "deny"
        assert rules["session_clear_all"]["action"] == "hide"
        assert rules["session_list"]["action"] == "allow"
        assert all(rule["action"] in ("hide", "allow") for rule in rules.values())
    elif profile == "balanced":
        assert rules["llm_job_cancel"]["action"] == "require_approval"
        assert "cancel" in rules["llm_job_cancel"]["reason"]
        assert "rate_limit" in rules["session_create"]
        assert "session_list" not in rules
    else:
        assert all("rate_limit" in rule for rule in rules.values())
        assert "session_clear_all" in rules and "session_create" not in rules
    check = guard("check", str(out), "--", *REPLAY)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.rstrip().endswith(": OK")


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "mcp-guard.json"
    out.write_text("{}")
    result = guard("init", "-o", str(out), "--", *EXAMPLE)
    assert result.returncode == 2
    assert result.stderr.strip() == f"mcp-guard: error: {out} exists; give --force to overwrite it"
    assert out.read_text() == "{}"
    forced = guard("init", "--force", "-o", str(out), "--", *EXAMPLE)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(out.read_text())["version"] == "1"


def test_init_defaults_to_the_file_run_finds(tmp_path: Path) -> None:
    result = guard("init", "--profile", "strict", "--", *EXAMPLE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mcp-guard.json").exists()


def _listed_and_called(policy: Path, tool: str, arguments: dict[str, object]) -> tuple[list[str], dict[str, object]]:
    proc = WireProcess(guard_run("--policy", str(policy), "--", *EXAMPLE))
    try:
        proc.initialize()
        listing = proc.request(1, "tools/list", {})
        names = [t["name"] for t in listing["result"]["tools"]]
        answer = proc.request(2, "tools/call", {"name": tool, "arguments": arguments})
        return names, answer
    finally:
        proc.kill()


def test_init_profiles_applied_end_to_end(tmp_path: Path) -> None:
    strict, balanced, permissive = (tmp_path / f"{p}.json" for p in ("strict", "balanced", "permissive"))
    for profile, path in (("strict", strict), ("balanced", balanced), ("permissive", permissive)):
        result = guard("init", "--profile", profile, "-o", str(path), "--", *EXAMPLE)
        assert result.returncode == 0, result.stderr

    names, answer = _listed_and_called(strict, "llm_job_cancel", {"jobId": "x"})
    assert "llm_job_cancel" not in names and "llm_job_list" in names
    assert "Unknown tool: llm_job_cancel" in json.dumps(answer)  # hidden: answered as the server does
    names, answer = _listed_and_called(strict, "llm_job_list", {})
    assert "error" not in answer and not answer["result"].get("isError")

    names, answer = _listed_and_called(balanced, "llm_job_cancel", {"jobId": "x"})
    assert "llm_job_cancel" in names
    text = json.dumps(answer)
    assert "approval" in text.lower()

    names, answer = _listed_and_called(permissive, "llm_job_list", {})
    assert "llm_job_cancel" in names
    assert "error" not in answer and not answer["result"].get("isError")


def test_the_readme_shows_real_tools_output() -> None:
    result = subprocess.run([*guard_command(), "tools", "--", "python", "examples/llm_gateway_server.py"],
                            capture_output=True, text=True, timeout=90, cwd=ROOT,
                            env={**os.environ,
                                 "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    table = "\n".join(result.stdout.splitlines()[:13])
    assert table in (ROOT / "README.md").read_text()
