"""The policy commands of the CLI: `mcp-guard check`, `mcp-guard explain`, `mcp-guard schema`, and the
example policies in examples/policies/ (each must pass `check`, also against the real tool names)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import EXAMPLES, SERVERS, SHARED
from wireclient import guard_command

from mcp_guard.engine import SessionState, ToolCall, decide, visible
from mcp_guard.policy import load

TINY = [sys.executable, str(SERVERS / "policy_tiny_server.py")]
TINY_TOOLS = ["echo", "add", "read_note", "delete_everything"]
POLICIES = EXAMPLES / "policies"
FIXTURE = SHARED / "fixtures" / "llm-cli-gateway-3.1.0-rc.8-tools-list.json"
MY_EXAMPLES = ["llm-cli-gateway.json", "read-only.json", "allow-list.json"]


def mcp_guard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MCP_GUARD_POLICY", "MCP_GUARD_AUDIT")}
    return subprocess.run([*guard_command(), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)


def write_policy(tmp_path: Path, body: dict[str, Any], name: str = "policy.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"version": "1", **body}, indent=2))
    return str(path)


def warnings(proc: subprocess.CompletedProcess[str], path: str) -> list[str]:
    prefix = f"{path}: warning: "
    return [line[len(prefix):] for line in proc.stdout.splitlines() if line.startswith(prefix)]


def fixture_tools() -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["tools"]
    return tools


REPLAY = r'''
import json, sys
tools = json.load(open(sys.argv[1]))["tools"]
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "llm-cli-gateway-replay", "version": "3.1.0-rc.8"}}
    elif msg["method"] == "tools/list":
        result = {"tools": tools}
    else:
        result = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
'''


@pytest.fixture
def gateway_replay(tmp_path: Path) -> list[str]:
    """A server that answers tools/list with the real llm-cli-gateway 3.1.0-rc.8 listing."""
    script = tmp_path / "replay.py"
    script.write_text(REPLAY)
    return [sys.executable, str(script), str(FIXTURE)]


# --- check: lints --------------------------------------------------------------------------------

LINTS = [
    pytest.param({"hide": ["llm_job_*"], "rules": {"llm_job_*": {"action": "allow"}}},
                 ["rules.llm_job_* never decides anything: hide['llm_job_*'] takes precedence"],
                 id="shadowed-glob-rule-by-hide"),
    pytest.param({"hide": ["llm_job_cancel"], "rules": {"llm_job_cancel": {"action": "require_approval"}}},
                 ["rules.llm_job_cancel never decides anything: hide['llm_job_cancel'] takes precedence"],
                 id="shadowed-exact-rule-by-hide"),
    pytest.param({"rules": {"a*": {"action": "allow"}, "a**": {"action": "deny"}}},
                 ["rules.a* never decides anything: rules.a** takes precedence"], id="shadowed-by-longer-glob"),
    pytest.param({"default": "deny", "rules": {"x": {"action": "deny"}}},
                 ["default is 'deny' and no rule allows anything: every tool is refused"],
                 id="default-deny-nothing-allowed"),
    pytest.param({"default": "hide"},
                 ["default is 'hide' and no rule allows anything: every tool is hidden"],
                 id="default-hide-nothing-allowed"),
    pytest.param({"default": "deny", "hide": ["x"]},
                 ["default is 'deny' and no rule allows anything"], id="default-deny-only-hides"),
    pytest.param({"rules": {"t": {"rate_limit": {"max": 5, "window": 0}}}},
                 ["rules.t.rate_limit has window 0, so it limits nothing"], id="rate-limit-window-0"),
    pytest.param({"rules": {"t": {"budget": {"max": 5, "window": 0, "cost": "/n"}}}},
                 ["rules.t.budget has window 0, so it limits nothing"], id="budget-window-0"),
    pytest.param({"rules": {"t": {"rate_limit": {"max": 0, "window": 60}}}},
                 ["rules.t.rate_limit has max 0: every call is refused"], id="rate-limit-max-0"),
    pytest.param({"rules": {"t": {"action": "deny", "rate_limit": {"max": 5, "window": 60}}}},
                 ["rules.t has action 'deny', so its limits and argument constraints never apply"],
                 id="deny-with-rate-limit"),
    pytest.param({"rules": {"t": {"action": "deny", "budget": {"max": 5, "window": 60, "cost": "/n"}}}},
                 ["rules.t has action 'deny'"], id="deny-with-budget"),
    pytest.param({"rules": {"t": {"action": "deny", "arguments": {"type": "object"}}}},
                 ["rules.t has action 'deny'"], id="deny-with-arguments"),
    pytest.param({"rules": {"t": {"action": "hide", "rate_limit": {"max": 5, "window": 60}}}},
                 ["rules.t has action 'hide'"], id="hide-with-rate-limit"),
]


@pytest.mark.parametrize(("body", "expected"), LINTS)
def test_check_lints(tmp_path: Path, body: dict[str, Any], expected: list[str]) -> None:
    path = write_policy(tmp_path, body)
    proc = mcp_guard("check", path)
    found = warnings(proc, path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(found) == len(expected), found
    for fragment, warning in zip(expected, found, strict=True):
        assert fragment in warning
    assert proc.stdout.splitlines()[-1] == f"{path}: {len(found)} warning(s)"


def test_check_counts_several_warnings(tmp_path: Path) -> None:
    path = write_policy(tmp_path, {"default": "deny", "rules": {
        "a": {"action": "deny", "rate_limit": {"max": 1, "window": 0}}}})
    proc = mcp_guard("check", path)
    assert proc.returncode == 1
    assert len(warnings(proc, path)) == 3
    assert proc.stdout.splitlines()[-1] == f"{path}: 3 warning(s)"


@pytest.mark.parametrize("body", [
    {},
    {"default": "deny", "rules": {"list_models": {"action": "allow"}}},
    {"default": "hide", "rules": {"x": {"action": "require_approval"}}},
    {"hide": ["llm_job_*"], "rules": {"llm_job_status": {"action": "allow"}}},  # exact beats glob: not shadowed
    {"rules": {"llm_*": {"action": "deny"}, "llm_job_*": {"action": "allow"}}},
    {"rules": {"t": {"rate_limit": {"max": 1, "window": 0.5}}}},
])
def test_check_clean_policy(tmp_path: Path, body: dict[str, Any]) -> None:
    path = write_policy(tmp_path, body)
    proc = mcp_guard("check", path)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout == f"{path}: OK\n"


def test_check_yaml(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: '1'\ndefault: deny\nrules:\n  list_models: {}\n")
    proc = mcp_guard("check", str(path))
    assert proc.returncode == 0 and proc.stdout == f"{path}: OK\n"


@pytest.mark.parametrize(("text", "fragment"), [
    ('{"version": "1", "rules": {"x": {"rate_limt": {"max": 1, "window": 1}}}}', "unknown key 'rate_limt'"),
    ("{", "not valid JSON"),
    (None, "no such file"),
])
def test_check_invalid_file(tmp_path: Path, text: str | None, fragment: str) -> None:
    path = tmp_path / "bad.json"
    if text is not None:
        path.write_text(text)
    proc = mcp_guard("check", str(path))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"mcp-guard: error: policy error: {path}")
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "OK" not in proc.stdout


def test_check_no_false_shadow_warning_for_character_class(tmp_path: Path) -> None:
    path = write_policy(tmp_path, {"rules": {"tool_[0-9]": {"action": "deny"}, "tool_0": {"action": "allow"}}})
    proc = mcp_guard("check", path)
    assert warnings(proc, path) == []


def test_check_max_zero_window_zero_is_not_called_harmless(tmp_path: Path) -> None:
    path = write_policy(tmp_path, {"rules": {"t": {"rate_limit": {"max": 0, "window": 0}}}})
    assert load(path) and decide(load(path), ToolCall("t", {}), SessionState(), 0.0).action == "deny"
    found = warnings(mcp_guard("check", path), path)
    assert not any("limits nothing" in warning for warning in found), found
    assert any("max 0" in warning for warning in found), found


# --- check -- COMMAND ----------------------------------------------------------------------------

def test_check_against_a_server(tmp_path: Path) -> None:
    path = write_policy(tmp_path, {
        "hide": ["delete_*"],
        "rules": {
            "echo": {"rate_limit": {"max": 5, "window": 60}},
            "add": {"action": "deny"},
            "read_not": {"action": "allow"},  # a typo: matches no tool
            "admin_*": {"action": "deny"},  # matches no tool either
        },
    })
    proc = mcp_guard("check", path, "--", *TINY)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = warnings(proc, path)
    assert found == [
        "rules.read_not matches none of the server's 4 tools (a typo, or a tool this server version does not have?)",
        "rules.admin_* matches none of the server's 4 tools (a typo, or a tool this server version does not have?)",
        # The tiny server's tools carry no annotations: the spec's default is destructive.
        "1 tool(s) the server marks destructive are allowed by default, with no rule: read_note "
        "(destructiveHint, true when a tool that is not read-only does not say)",
    ]
    lines = proc.stdout.splitlines()
    start = lines.index("The server offers 4 tool(s); the agent will see 3:")
    assert lines[start + 1:start + 9] == [
        "hidden (1):",
        "  delete_everything  [rule: delete_*]",
        "denied (1):",
        "  add                [rule: add]",
        "limited (1):",
        "  echo               [rule: echo]; rate limit: at most 5 call(s) per 60 s, per session",
        "allowed by default (1):",
        "  read_note          [default]",
    ]
    assert lines[-1] == f"{path}: 3 warning(s)"


def test_check_against_a_server_clean(tmp_path: Path) -> None:
    path = write_policy(tmp_path, {"default": "hide", "rules": {"echo": {}, "read_*": {"action": "require_approval"}}})
    proc = mcp_guard("check", path, "--", *TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "The server offers 4 tool(s); the agent will see 2:" in proc.stdout
    assert ("needs approval (1):\n  read_note          [rule: read_*]; approval: client (elicitation), else "
            "refused; 120 s; every call asked\n") in proc.stdout
    assert "hidden (2):\n  add                [default]\n" in proc.stdout
    assert proc.stdout.splitlines()[-1] == f"{path}: OK"


def test_check_with_a_server_that_cannot_start(tmp_path: Path) -> None:
    path = write_policy(tmp_path, {})
    proc = mcp_guard("check", path, "--", str(tmp_path / "no-such-server"))
    assert proc.returncode == 2
    assert "cannot list the server's tools" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- explain -------------------------------------------------------------------------------------

def explain(path: str, tool: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The human report and the --json record; the exit status says allowed (0) or refused (1)."""
    proc = mcp_guard("explain", "--policy", path, tool, *extra)
    as_json = mcp_guard("explain", "--json", "--policy", path, tool, *extra)
    assert proc.returncode == as_json.returncode, proc.stderr + as_json.stderr
    record = json.loads(as_json.stdout)
    assert proc.returncode == (0 if record["action"] == "allow" else 1), proc.stderr
    return proc, record


EXPLAINED = {
    "hide": ["llm_job_cancel"],
    "rules": {
        "llm_job_*": {"action": "allow"},
        "llm_*": {"action": "deny", "reason": "not the llm tools"},
        "*_request": {"rate_limit": {"max": 5, "window": 60}},
        "run": {"arguments": {"type": "object", "properties": {"cmd": {"enum": ["ls"]}}, "required": ["cmd"]}},
        "spend": {"budget": {"max": 10, "window": 60, "cost": "/amount"}},
    },
    "default": "require_approval",
}


@pytest.mark.parametrize(("tool", "args", "action", "rule", "rule_line", "reason"), [
    ("llm_job_cancel", None, "hide", "llm_job_cancel", "hide['llm_job_cancel']", "Unknown tool"),
    ("llm_job_status", None, "allow", "llm_job_*", "rules.llm_job_*", None),
    ("llm_process_health", None, "deny", "llm_*", "rules.llm_*", "not the llm tools"),
    ("codex_request", None, "allow", "*_request", "rules.*_request", None),
    ("other", None, "require_approval", None, "default", "calls to other need a human's approval"),
    ("run", '{"cmd": "ls"}', "allow", "run", "rules.run", None),
    ("run", '{"cmd": "rm"}', "deny", "run", "rules.run", "argument cmd: the value is not one of ['ls']"),
    ("run", None, "deny", "run", "rules.run", "the arguments: 'cmd' is a required property"),
    ("spend", '{"amount": 11}', "deny", "spend", "rules.spend", "cost 11 is more than the whole budget of 10 per 60 s"),
    ("spend", '{}', "deny", "spend", "rules.spend", "the call has no cost at /amount in its arguments"),
])
def test_explain(tmp_path: Path, tool: str, args: str | None, action: str, rule: str | None, rule_line: str,
                 reason: str | None) -> None:
    path = write_policy(tmp_path, EXPLAINED)
    proc, record = explain(path, tool, *(["--args", args] if args is not None else []))
    assert record == {"tool": tool, "action": action, "rule": rule, "reason": reason}
    lines = proc.stdout.splitlines()
    assert f"tool:     {tool}" in lines
    assert any(line.startswith(f"decision: {action}") for line in lines)
    assert f"rule:     {rule_line}" in lines
    if reason is not None:
        assert f"reason:   {reason}" in lines


def test_explain_shows_limits_and_other_matches(tmp_path: Path) -> None:
    path = write_policy(tmp_path, EXPLAINED)
    proc, _ = explain(path, "llm_job_status")
    assert "also matched (less specific): rules.llm_*" in proc.stdout
    proc, _ = explain(path, "codex_request")
    assert "limit:    rate limit: at most 5 call(s) per 60 s, per session" in proc.stdout
    proc, _ = explain(path, "spend", "--args", '{"amount": 1}')
    assert ("limit:    budget: 10 per 60 s, per session; each call costs the number at /amount in its arguments"
            in proc.stdout)
    proc, _ = explain(path, "llm_job_cancel")
    assert "decision: hide (hidden from tools/list)" in proc.stdout


def test_explain_via_environment_variable(tmp_path: Path) -> None:
    path = write_policy(tmp_path, EXPLAINED)
    env = {**os.environ, "MCP_GUARD_POLICY": path}
    proc = subprocess.run([*guard_command(), "explain", "--json", "llm_job_status"], capture_output=True,
                          text=True, env=env, timeout=30)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["rule"] == "llm_job_*"


@pytest.mark.parametrize(("args", "fragment"), [
    ("{bad", "--args is not valid JSON"),
    ("[1, 2]", "--args must be a JSON object"),
    ('"text"', "--args must be a JSON object"),
])
def test_explain_bad_args(tmp_path: Path, args: str, fragment: str) -> None:
    proc = mcp_guard("explain", "--policy", write_policy(tmp_path, EXPLAINED), "run", "--args", args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mcp-guard: error: ") and fragment in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_explain_bad_policy(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"version": "1", "rules": {"x": {"rate_limt": {}}}}')
    proc = mcp_guard("explain", "--policy", str(path), "x")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"mcp-guard: error: policy error: {path}")


# --- schema --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def printed_schema() -> dict[str, Any]:
    proc = mcp_guard("schema")
    assert proc.returncode == 0
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_schema_is_a_draft_2020_12_schema(printed_schema: dict[str, Any]) -> None:
    assert printed_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(printed_schema)
    assert jsonschema.validators.validator_for(printed_schema) is jsonschema.Draft202012Validator


def test_schema_matches_the_packaged_one(printed_schema: dict[str, Any]) -> None:
    from mcp_guard.policy import schema

    assert printed_schema == schema()


def test_schema_refuses_unknown_keys(printed_schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(printed_schema)
    assert validator.is_valid({"version": "1", "rules": {"x": {"rate_limit": {"max": 1, "window": 1}}}})
    assert not validator.is_valid({"version": "1", "rules": {"x": {"rate_limt": {"max": 1, "window": 1}}}})
    assert not validator.is_valid({"version": "1", "rule": {}})


EXAMPLE_FILES = sorted(POLICIES.glob("*.json")) + sorted(POLICIES.glob("*.y*ml"))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_every_example_policy_validates_against_the_schema(printed_schema: dict[str, Any], path: Path) -> None:
    if path.suffix == ".json":
        data = json.loads(path.read_text())
    else:
        import yaml

        data = yaml.safe_load(path.read_text())
    jsonschema.Draft202012Validator(printed_schema).validate(data)


# --- the example policies ------------------------------------------------------------------------

def test_my_examples_exist() -> None:
    for name in MY_EXAMPLES:
        assert (POLICIES / name).is_file(), name


@pytest.mark.parametrize("name", MY_EXAMPLES)
def test_example_passes_check_without_warnings(name: str) -> None:
    path = str(POLICIES / name)
    proc = mcp_guard("check", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == f"{path}: OK\n"


@pytest.mark.parametrize("name", MY_EXAMPLES)
def test_example_matches_the_real_gateway_tools(name: str, gateway_replay: list[str]) -> None:
    """Against the real llm-cli-gateway listing: no rule names a tool the server does not have."""
    path = str(POLICIES / name)
    proc = mcp_guard("check", path, "--", *gateway_replay)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "The server offers 64 tool(s)" in proc.stdout
    assert proc.stdout.splitlines()[-1] == f"{path}: OK"


def annotation(tool: dict[str, Any], hint: str) -> bool:
    return bool((tool.get("annotations") or {}).get(hint))


def test_read_only_example_allows_exactly_the_read_only_tools() -> None:
    p = load(POLICIES / "read-only.json")
    assert p.default == "deny"
    tools = fixture_tools()
    assert len(tools) == 64
    for tool in tools:
        decision = decide(p, ToolCall(tool["name"], {}), SessionState(), 0.0)
        assert decision.allowed == annotation(tool, "readOnlyHint"), tool["name"]
    assert not decide(p, ToolCall("some_new_tool", {}), SessionState(), 0.0).allowed


def test_llm_cli_gateway_example() -> None:
    p = load(POLICIES / "llm-cli-gateway.json")
    by_name = {tool["name"]: tool for tool in fixture_tools()}

    def action(name: str, arguments: Any = None) -> str:
        return decide(p, ToolCall(name, arguments if arguments is not None else {}), SessionState(), 0.0).action

    assert action("llm_job_cancel") in ("hide", "require_approval")
    assert action("session_delete") in ("hide", "require_approval")
    assert action("session_clear_all") == "hide" and not visible(p, "session_clear_all")
    # Every read-only tool stays usable.
    for name, tool in by_name.items():
        if annotation(tool, "readOnlyHint"):
            assert action(name) == "allow", name
    # Every tool that starts a model run is rate-limited.
    for name in by_name:
        if name.endswith(("_request", "_request_async")):
            rule = next(r for r in p.rules if r.key == decide(p, ToolCall(name, {}), SessionState(), 0.0).rule)
            assert rule.rate_limit is not None and rule.rate_limit.max > 0, name
    # A burst of requests is cut off by the shared glob limit.
    state = SessionState()
    allowed = 0
    for i in range(30):
        decision = decide(p, ToolCall("codex_request" if i % 2 else "gemini_request", {}), state, float(i) / 100)
        if decision.allowed:
            state.record(decision.charges)
            allowed += 1
    assert allowed == 10
    # claude_request may not switch its own permission checks off.
    assert action("claude_request", {"prompt": "x", "dangerouslySkipPermissions": True}) == "deny"
    assert action("claude_request", {"prompt": "x", "permissionMode": "bypassPermissions"}) == "deny"
    assert action("claude_request", {"prompt": "x", "permissionMode": "plan"}) == "allow"
    # No destructive tool is plainly allowed without a limit.
    for name, tool in by_name.items():
        if annotation(tool, "destructiveHint") and action(name) == "allow":
            rule_key = decide(p, ToolCall(name, {}), SessionState(), 0.0).rule
            rule = next(r for r in p.rules if r.key == rule_key)
            assert rule.rate_limit is not None, name


def test_allow_list_example() -> None:
    p = load(POLICIES / "allow-list.json")
    names = [tool["name"] for tool in fixture_tools()]
    shown = [name for name in names if visible(p, name)]
    assert sorted(shown) == sorted(rule.key for rule in p.rules)
    assert len(shown) < 10

    def call(name: str, arguments: Any) -> str:
        return decide(p, ToolCall(name, arguments), SessionState(), 0.0).action

    assert call("ask_model", {"question": "hi", "model": "claude"}) == "allow"
    assert call("ask_model", {"question": "hi", "model": "grok"}) == "deny"
    assert call("claude_request", {"prompt": "x", "maxBudgetUsd": 0.5}) == "allow"
    assert call("claude_request", {"prompt": "x"}) == "deny"
    assert call("claude_request", {"prompt": "x", "maxBudgetUsd": 0.5, "dangerouslySkipPermissions": True}) == "deny"
    assert call("llm_job_cancel", {"jobId": "j"}) == "hide"


def test_check_shows_an_argument_constrained_tool_as_allowed_not_denied(tmp_path: Path) -> None:
    """`check -- COMMAND` shows what the rule says; a schema that requires an argument must not make an
    allowed tool look denied (a call with no arguments would be refused, but that is not the tool's fate)."""
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"version": "1", "rules": {"llm_job_status": {"arguments": {
        "type": "object", "required": ["jobId"]}}}}))
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(guard_command() + ["check", str(policy), "--", sys.executable,
                                               str(root / "examples" / "llm_gateway_server.py")],
                            capture_output=True, text=True, timeout=60)
    # 1: the example server's other tools are unannotated, so destructive by the spec's default.
    assert result.returncode == 1 and "marks destructive are allowed by default" in result.stdout, result.stderr
    lines = result.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("  llm_job_status "))
    group = next(line for line in reversed(lines[:row]) if not line.startswith("  "))
    assert group == "constrained (1):", result.stdout
