"""Issue 14, `mcp-guard check` and `mcp-guard explain` a newcomer can read and CI can trust, through the
real binary: every problem in one run, at the right line; exit 0 / 1 / 2; a table grouped by what the
policy does; warnings for destructive tools allowed by default and for constraints on arguments a tool
does not take; explain's --json, exit statuses and "no such tool on this server"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SERVERS
from wireclient import guard_command

REPLAY = [sys.executable, str(SERVERS / "replay_server.py")]  # the real llm-cli-gateway's 64 tools
ERROR = "mcp-guard: error: "


POLICY_SCHEMA = json.loads((Path(__file__).parent.parent / "mcp_guard" / "policy.schema.json").read_text())


def mcp_guard(*args: str, cwd: Path | None = None, merge: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GUARD_")}
    proc = subprocess.run([*guard_command(), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merge else subprocess.PIPE, text=True, timeout=90,
                          stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    assert "Traceback" not in proc.stdout + (proc.stderr or "")
    return proc


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def line_of(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


BROKEN = """{
  "version": "1",
  "defualt": "deny",
  "hide": ["admin_[x"],
  "rules": {
    "llm_job_cancel": {"action": "nope"},
    "x": {"rate_limt": {"max": 1, "window": 1}},
    "y": {"rate_limit": {"max": -1, "window": 1}}
  }
}
"""


def test_check_reports_every_problem_in_one_run_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", BROKEN)
    proc = mcp_guard("check", path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert all(line.startswith(ERROR) for line in lines), lines
    expected = [
        (line_of(BROKEN, '"defualt"'), "at $: unknown key 'defualt' (did you mean 'default'?"),
        (line_of(BROKEN, "admin_[x"), "the glob 'admin_[x' has a [ that is never closed"),
        (line_of(BROKEN, '"nope"'), "'nope' is not one of 'allow'"),
        (line_of(BROKEN, '"rate_limt"'), "unknown key 'rate_limt' (did you mean 'rate_limit'?"),
        (line_of(BROKEN, '"max": -1'), "-1 is less than the minimum of 0"),
    ]
    assert len(lines) == len(expected) + 1, lines
    for line, (number, fragment) in zip(lines, expected, strict=False):
        assert line.startswith(f"{ERROR}policy error: {path}:{number}: "), line
        assert fragment in line, line
    assert lines[-1] == f"{ERROR}{path}: 5 problems"


def test_run_reports_the_first_problem_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", BROKEN)
    proc = mcp_guard("run", "--policy", path, sys.executable, "-c", "pass")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{ERROR}policy error: {path}:3: at $: unknown key 'defualt' (did you mean 'default'? known keys: "
        f"{', '.join(sorted(POLICY_SCHEMA['properties']))})"]


@pytest.mark.parametrize("key", ["admin_[x", "tool_[!", "a[b"])
def test_an_unclosed_bracket_in_a_glob_is_an_error(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, "p.json", json.dumps({"version": "1", "rules": {key: {"action": "deny"}}}))
    proc = mcp_guard("check", path)
    assert proc.returncode == 2
    assert "has a [ that is never closed; write [[] to match a literal [" in proc.stderr


@pytest.mark.parametrize(("text", "fragment"), [
    ("version: '1'\ndefault: no\n", "at $.default: False is not one of"),
    ("version: '1'\nhide: [yes]\n", "at $.hide[0]: True is not of type 'string'"),
    ("version: '1'\nrules:\n  off: {action: deny}\n", "p.yaml:3: the key False is a boolean, not a name"),
])
def test_yaml_booleans_are_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, "p.yaml", text)
    proc = mcp_guard("check", path)
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert "YAML reads unquoted yes/no/on/off/true/false as booleans: quote it" in proc.stderr


def test_an_unknown_extension_says_which_extensions_choose_the_format(tmp_path: Path) -> None:
    bad = write(tmp_path, "policy.yml.txt", "version: '1'\n")
    proc = mcp_guard("check", bad)
    assert proc.returncode == 2
    assert "a policy is read as YAML when its file name ends in .yaml or .yml, as JSON otherwise" in proc.stderr
    good = write(tmp_path, "policy.conf", '{"version": "1"}')
    proc = mcp_guard("check", good)
    assert proc.returncode == 1
    assert f"{good}: warning: the file name ends in neither .json nor .yaml/.yml, so it is read as JSON" in proc.stdout


def test_exit_statuses_clean_warnings_invalid(tmp_path: Path) -> None:
    assert mcp_guard("check", write(tmp_path, "ok.json", '{"version": "1"}')).returncode == 0
    warned = write(tmp_path, "warn.json", '{"version": "1", "rules": {"t": {"rate_limit": {"max": 1, "window": 0}}}}')
    assert mcp_guard("check", warned).returncode == 1
    assert mcp_guard("check", write(tmp_path, "bad.json", "{")).returncode == 2
    assert mcp_guard("check", str(tmp_path / "missing.json")).returncode == 2


# --- check FILE -- COMMAND -----------------------------------------------------------------------

NOISY = r'''
import runpy, sys
print("noisy server: starting up", file=sys.stderr, flush=True)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def test_the_servers_stderr_does_not_interleave_with_the_table(tmp_path: Path) -> None:
    noisy = write(tmp_path, "noisy.py", NOISY)
    policy = write(tmp_path, "p.json", json.dumps({"version": "1", "default": "deny",
                                                   "rules": {"*_status": {"action": "allow"}}}))
    proc = mcp_guard("check", policy, sys.executable, noisy, *REPLAY[1:], merge=True)  # one stream, as a terminal
    lines = proc.stdout.splitlines()
    start = lines.index("The server offers 64 tool(s); the agent will see 64:")
    table = lines[start + 1:]
    end = next(i for i, line in enumerate(table) if not line.startswith("  ") and not line.endswith("):"))
    assert all("noisy" not in line for line in lines[:start + 1 + end])
    assert table[end:end + 2] == ["The server's stderr while listing:", "  | noisy server: starting up"]


def test_the_table_groups_tools_by_what_the_policy_does(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", json.dumps({
        "version": "1", "default": "allow",
        "hide": ["session_clear_all"],
        "rules": {
            "llm_job_cancel": {"action": "deny", "reason": "ask the user"},
            "session_delete": {"action": "require_approval", "reason": "cannot be undone"},
            "ask_model": {"rate_limit": {"max": 20, "window": 60}},
            "claude_request": {"arguments": {"type": "object", "properties": {
                "dangerouslySkipPermissions": {"type": "boolean", "const": False}}}},
            "list_models": {"action": "allow"},
        }}))
    proc = mcp_guard("check", policy, *REPLAY)
    out = proc.stdout
    assert "hidden (1):\n  session_clear_all " in out
    assert "[rule: session_clear_all]" in out
    assert "denied (1):\n  llm_job_cancel" in out and "[rule: llm_job_cancel]; reason: ask the user" in out
    assert "needs approval (1):\n  session_delete" in out and "; reason: cannot be undone" in out
    assert "limited (1):\n  ask_model" in out
    assert "[rule: ask_model]; rate limit: at most 20 call(s) per 60 s, per session" in out
    assert "constrained (1):\n  claude_request" in out
    assert "[rule: claude_request]; argument constraint: a JSON Schema (dangerouslySkipPermissions)" in out
    assert "allowed by a rule (1):\n  list_models" in out
    assert "allowed by default (58):\n" in out
    groups = [line for line in out.splitlines() if line.endswith("):") and not line.startswith(" ")]
    assert groups == ["hidden (1):", "denied (1):", "needs approval (1):", "limited (1):", "constrained (1):",
                      "allowed by a rule (1):", "allowed by default (58):"]


def test_destructive_tools_allowed_by_default_are_warned_about(tmp_path: Path) -> None:
    fixture = json.loads((SERVERS.parents[1].parent / "shared" / "fixtures" /
                          "llm-cli-gateway-3.1.0-rc.8-tools-list.json").read_text())["tools"]

    def destructive(tool: dict) -> bool:
        hints = tool.get("annotations") or {}
        return hints.get("readOnlyHint") is not True and hints.get("destructiveHint", True) is not False

    policy = write(tmp_path, "p.json", json.dumps({"version": "1", "hide": ["session_clear_all"],
                                                   "rules": {"*_request": {"rate_limit": {"max": 5, "window": 60}}}}))
    proc = mcp_guard("check", policy, *REPLAY)
    assert proc.returncode == 1
    warning = next(line for line in proc.stdout.splitlines() if "marks destructive" in line)
    expected = [t["name"] for t in fixture if destructive(t) and t["name"] != "session_clear_all"
                and not t["name"].endswith("_request")]
    assert f"{len(expected)} tool(s) the server marks destructive are allowed by default, with no rule: " \
           f"{', '.join(expected)} " in warning
    assert "list_models" not in warning and "config_publish" not in warning  # read-only / destructiveHint false
    # A default that does not allow, or a rule for each, ends the warning.
    quiet = write(tmp_path, "q.json", json.dumps({"version": "1", "default": "deny",
                                                  "rules": {"list_models": {"action": "allow"}}}))
    assert "marks destructive" not in mcp_guard("check", quiet, *REPLAY).stdout


def test_a_constraint_on_an_argument_the_tool_does_not_take_is_a_warning(tmp_path: Path) -> None:
    """The review's most dangerous silent mistake: the rule looks right, and one matching tool takes its
    input under another name, unconstrained."""
    policy = write(tmp_path, "p.json", json.dumps({"version": "1", "rules": {"*_result": {"arguments": {
        "type": "object", "properties": {"jobId": {"type": "string", "pattern": "^job-[0-9]+\\Z"}}}}}}))
    proc = mcp_guard("check", policy, *REPLAY)
    found = [line for line in proc.stdout.splitlines() if "does not take" in line]
    assert found == [f"{policy}: warning: rules.*_result constrains 'jobId', which llm_request_result does not take "
                     "(its arguments: correlationId, maxChars, includePrompt): llm_request_result's real "
                     "arguments are unconstrained"]
    assert proc.returncode == 1


# --- explain -------------------------------------------------------------------------------------

EXPLAINED = {"version": "1", "default": "allow", "hide": ["session_clear_all"],
             "rules": {"llm_job_cancel": {"action": "deny", "reason": "ask the user"},
                       "*_request": {"rate_limit": {"max": 10, "window": 60}},
                       "session_delete": {"action": "require_approval"}}}


@pytest.mark.parametrize(("tool", "status", "action"), [
    ("codex_request", 0, "allow"), ("list_models", 0, "allow"), ("llm_job_cancel", 1, "deny"),
    ("session_clear_all", 1, "hide"), ("session_delete", 1, "require_approval")])
def test_explain_json_is_one_object_and_the_status_says_the_decision(tmp_path: Path, tool: str, status: int,
                                                                    action: str) -> None:
    policy = write(tmp_path, "p.json", json.dumps(EXPLAINED))
    proc = mcp_guard("explain", "--json", "--policy", policy, tool)
    assert proc.returncode == status
    assert json.loads(proc.stdout)["action"] == action  # the whole of stdout is one JSON object
    assert proc.stdout.count("\n") == 1 and proc.stderr == ""
    human = mcp_guard("explain", "--policy", policy, tool)
    assert human.returncode == status and not human.stdout.lstrip().startswith("{")


def test_explain_bad_input_is_2(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", json.dumps(EXPLAINED))
    assert mcp_guard("explain", "--json", "--policy", policy, "x", "--args", "[]").returncode == 2
    assert mcp_guard("explain", "--policy", write(tmp_path, "bad.json", "{"), "x").returncode == 2


def test_explain_says_limits_are_per_session(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", json.dumps(EXPLAINED))
    proc = mcp_guard("explain", "--policy", policy, "codex_request")
    assert "limit:    rate limit: at most 10 call(s) per 60 s, per session" in proc.stdout.splitlines()


def test_explain_with_a_server_names_a_tool_it_does_not_offer(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", json.dumps(EXPLAINED))
    proc = mcp_guard("explain", "--policy", policy, "llm_job_cancle", *REPLAY)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"{ERROR}no such tool on this server: 'llm_job_cancle' (did you mean "
                                   "'llm_job_cancel'?); it offers 64 tool(s)")
    proc = mcp_guard("explain", "--json", "--policy", policy, "llm_job_cancel", "--", *REPLAY)
    assert proc.returncode == 1 and json.loads(proc.stdout)["rule"] == "llm_job_cancel"


def test_a_glob_constraining_each_tools_own_flags_is_not_warned_about(tmp_path: Path) -> None:
    """One rule for several tools may constrain the union of their flags: each tool has some of them."""
    flags = ["dangerouslySkipPermissions", "dangerouslyBypassApprovalsAndSandbox", "yolo", "force", "permissionMode"]
    policy = write(tmp_path, "p.json", json.dumps({"version": "1", "rules": {"*_request": {
        "rate_limit": {"max": 10, "window": 60},
        "arguments": {"type": "object", "properties": {flag: {"not": {"const": True}} for flag in flags}}}}}))
    proc = mcp_guard("check", policy, *REPLAY)
    assert "does not take" not in proc.stdout
    assert "limited (7):" in proc.stdout


def test_explain_names_the_variable_a_missing_policy_came_from(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GUARD_")}
    proc = subprocess.run([*guard_command(), "explain", "x"], capture_output=True, text=True, timeout=60,
                          env={**env, "MCP_GUARD_POLICY": "p/none.json"}, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"{ERROR}policy error: p/none.json: no such file (the path came from "
                                   f"$MCP_GUARD_POLICY, resolved in {tmp_path})")


@pytest.mark.parametrize(("text", "fragment"), [
    ("version: '1'\nrules:\n  ? [a, b]\n  : {}\n", "p.yaml:3: a key here is a collection, not a name"),
    ("version: '1'\nrules:\n  1: {}\n", "p.yaml:3: the key 1 is a number, not a name (quote it)"),
])
def test_yaml_keys_that_are_not_names_are_errors_not_tracebacks(tmp_path: Path, text: str, fragment: str) -> None:
    proc = mcp_guard("check", write(tmp_path, "p.yaml", text))
    assert proc.returncode == 2 and fragment in proc.stderr
