"""Policy files that cannot be used, through the real CLI: `mcp-guard run --policy BAD -- COMMAND`.

Each must stop mcp-guard with exit status 2 and one line on stderr naming the file, the place (JSON
path, line where it can be found) and the problem; no traceback; and the server is never started (its
command would create a marker file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from wireclient import guard_command

VALID = {"version": "1", "default": "allow", "hide": ["llm_job_cancel"],
         "rules": {"*_request": {"rate_limit": {"max": 5, "window": 60}}}}


def run_guard(tmp_path: Path, policy: str | None, env: dict[str, str] | None = None,
              timeout: float = 20) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / "server-started"
    server = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    args = [*guard_command(), "run"]
    if policy is not None:
        args += ["--policy", policy]
    args += ["--", *server]
    full_env = {k: v for k, v in os.environ.items() if k not in ("MCP_GUARD_POLICY", "MCP_GUARD_AUDIT")}
    full_env.update(env or {})
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=tmp_path)
    return proc, marker


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and "warning: other distributions" not in line]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def assert_refused(tmp_path: Path, policy_path: Path | str, *fragments: str,
                   env: dict[str, str] | None = None, via_env: bool = False) -> str:
    if via_env:
        proc, marker = run_guard(tmp_path, None, env={**(env or {}), "MCP_GUARD_POLICY": str(policy_path)})
    else:
        proc, marker = run_guard(tmp_path, str(policy_path), env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    line = error_line(proc)
    assert line.startswith(f"mcp-guard: error: policy error: {policy_path}"), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not marker.exists(), "the server was started although the policy is unusable"
    assert proc.stdout == ""
    return line


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def pretty(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"


# --- the valid case first: the same harness does start the server ---------------------------------

@pytest.mark.parametrize(("name", "text"), [
    ("ok.json", pretty(VALID)),
    ("ok.yaml", "version: '1'\nhide: [llm_job_cancel]\nrules:\n  '*_request':\n"
                "    rate_limit: {max: 5, window: 60}\n"),
    ("ok.yml", "version: \"1\"\ndefault: deny\nrules:\n  list_models: {}\n"),
])
def test_valid_policy_starts_the_server(tmp_path: Path, name: str, text: str) -> None:
    proc, marker = run_guard(tmp_path, str(write(tmp_path, name, text)))
    assert marker.exists(), proc.stderr
    assert "policy error" not in proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_policy_from_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "env.json", pretty(VALID))
    proc, marker = run_guard(tmp_path, None, env={"MCP_GUARD_POLICY": str(path)})
    assert marker.exists() and proc.returncode == 0, proc.stderr


def test_bad_policy_from_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "env.json", pretty({"version": "1", "rules": {"x": {"action": "block"}}}))
    assert_refused(tmp_path, path, "at $.rules.x.action", "'block' is not one of", via_env=True)


def test_command_line_policy_wins_over_environment(tmp_path: Path) -> None:
    good = write(tmp_path, "good.json", pretty(VALID))
    bad = write(tmp_path, "bad.json", "{")
    proc, marker = run_guard(tmp_path, str(good), env={"MCP_GUARD_POLICY": str(bad)})
    assert marker.exists() and proc.returncode == 0, proc.stderr


# --- unusable files ----------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    assert_refused(tmp_path, tmp_path / "nope.json", "no such file")


def test_missing_file_via_environment(tmp_path: Path) -> None:
    assert_refused(tmp_path, tmp_path / "nope.json", "no such file", via_env=True)


def test_empty_file(tmp_path: Path) -> None:
    assert_refused(tmp_path, write(tmp_path, "empty.json", ""), ":1:", "not valid JSON")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"version": "1", "description": "caf\xe9"}')
    assert_refused(tmp_path, path, "not UTF-8")


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    text = '{\n  "version": "1",\n  "rules": {\n    "x": {"action": "deny",}\n  }\n}\n'
    assert_refused(tmp_path, write(tmp_path, "broken.json", text), "broken.json:4:", "not valid JSON",
                   "column")


def test_trailing_garbage(tmp_path: Path) -> None:
    assert_refused(tmp_path, write(tmp_path, "two.json", pretty(VALID) + "{}\n"), "not valid JSON")


def test_unknown_key_in_a_rule(tmp_path: Path) -> None:
    text = pretty({"version": "1", "rules": {
        "list_models": {"action": "allow"},
        "claude_request": {"rate_limt": {"max": 5, "window": 60}},
    }})
    # The line of the misspelled key itself.
    line_no = next(n for n, text_line in enumerate(text.splitlines(), 1) if '"rate_limt"' in text_line)
    line = assert_refused(tmp_path, write(tmp_path, "typo.json", text), f"typo.json:{line_no}:",
                          "at $.rules.claude_request", "unknown key 'rate_limt'")
    assert "rate_limit" in line  # the known keys are listed, so the typo is easy to see


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = pretty({"version": "1", "rule": {"x": {"action": "deny"}}})
    assert_refused(tmp_path, write(tmp_path, "top.json", text), "at $:", "unknown key 'rule'")


def test_unknown_key_in_a_rate_limit(tmp_path: Path) -> None:
    text = pretty({"version": "1", "rules": {"x": {"rate_limit": {"max": 5, "window": 60, "burst": 2}}}})
    assert_refused(tmp_path, write(tmp_path, "burst.json", text), "at $.rules.x.rate_limit",
                   "unknown key 'burst'")


@pytest.mark.parametrize(("body", "fragments"), [
    ({"version": "1", "rules": {"x": {"action": "block"}}}, ["at $.rules.x.action", "'block' is not one of"]),
    ({"version": "1", "default": "Deny"}, ["at $.default", "'Deny' is not one of"]),
    ({"version": "2"}, ["at $.version", "must be '1'"]),
    ({"version": 1}, ["at $.version", "must be '1'"]),
    ({"rules": {}}, ["'version' is a required property"]),
    ([], ["is not of type 'object'"]),
    ({"version": "1", "rules": {"x": {"rate_limit": {"max": -1, "window": 60}}}},
     ["at $.rules.x.rate_limit.max", "-1"]),
    ({"version": "1", "rules": {"x": {"rate_limit": {"max": 1.5, "window": 60}}}},
     ["at $.rules.x.rate_limit.max", "1.5"]),
    ({"version": "1", "rules": {"x": {"rate_limit": {"max": 5}}}}, ["at $.rules.x.rate_limit", "'window'"]),
    ({"version": "1", "rules": {"x": {"rate_limit": {"max": 5, "window": -1}}}},
     ["at $.rules.x.rate_limit.window"]),
    ({"version": "1", "rules": {"x": {"budget": {"max": 5, "window": 60, "cost": "amount"}}}},
     ["at $.rules.x.budget.cost", "amount"]),
    ({"version": "1", "rules": {"x": {"budget": {"max": 5, "window": 60}}}}, ["at $.rules.x.budget", "'cost'"]),
    ({"version": "1", "rules": {"x": {"reason": ""}}}, ["at $.rules.x.reason"]),
    ({"version": "1", "rules": {"x": "deny"}}, ["at $.rules.x", "'deny' is not of type 'object'"]),
    ({"version": "1", "hide": "llm_job_cancel"}, ["at $.hide"]),
    ({"version": "1", "hide": ["ok", 7]}, ["at $.hide[1]"]),
    ({"version": "1", "rules": {"x": {"arguments": 5}}}, ["at $.rules.x.arguments"]),
])
def test_schema_violations(tmp_path: Path, body: Any, fragments: list[str]) -> None:
    assert_refused(tmp_path, write(tmp_path, "bad.json", pretty(body)), *fragments)


@pytest.mark.parametrize(("key", "fragments"), [
    ("", ["at $.rules", "should be non-empty"]),
    ("x" * 513, ["at $.rules", "is too long"]),
])
def test_bad_rule_keys(tmp_path: Path, key: str, fragments: list[str]) -> None:
    body = {"version": "1", "rules": {key: {"action": "deny"}}}
    assert_refused(tmp_path, write(tmp_path, "key.json", pretty(body)), *fragments)


@pytest.mark.parametrize("where", ["rules", "hide"])
def test_empty_hide_entry(tmp_path: Path, where: str) -> None:
    body: dict[str, Any] = {"version": "1", "hide": [""]} if where == "hide" else \
        {"version": "1", "rules": {"": {}}}
    assert_refused(tmp_path, write(tmp_path, "empty-key.json", pretty(body)), "at $")


@pytest.mark.parametrize("where", ["rules", "hide"])
def test_glob_that_can_match_nothing_is_refused(tmp_path: Path, where: str) -> None:
    body: dict[str, Any] = ({"version": "1", "hide": ["llm_job_[z-a]*"]} if where == "hide" else
                            {"version": "1", "rules": {"llm_job_[z-a]*": {"action": "deny"}}})
    assert_refused(tmp_path, write(tmp_path, "glob.json", pretty(body)), "llm_job_[z-a]*", "glob")


def test_invalid_argument_schema(tmp_path: Path) -> None:
    text = pretty({"version": "1", "rules": {
        "ok": {"arguments": {"type": "object"}},
        "run": {"arguments": {"type": "object", "properties": {"cmd": {"type": "strnig"}}}},
    }})
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if '"strnig"' in line)
    assert_refused(tmp_path, write(tmp_path, "schema.json", text), f"schema.json:{line_no}:",
                   "not a valid JSON Schema", "at $.rules.run.arguments.properties.cmd.type", "strnig")


@pytest.mark.parametrize("arguments", [{"minLength": -1}, {"required": "cmd"}, {"$defs": 5}])
def test_more_invalid_argument_schemas(tmp_path: Path, arguments: Any) -> None:
    body = {"version": "1", "rules": {"run": {"arguments": arguments}}}
    assert_refused(tmp_path, write(tmp_path, "schema.json", pretty(body)), "not a valid JSON Schema",
                   "at $.rules.run.arguments")


@pytest.mark.parametrize("text", [
    '{"version": "1", "rules": {"x": {"action": "deny"}, "x": {"action": "allow"}}}',
    '{"version": "1", "default": "deny", "default": "allow"}',
    '{"version": "1", "rules": {"x": {"action": "deny", "action": "allow"}}}',
    '{"version": "1", "rules": {"x": {"arguments": {"type": "object", "type": "string"}}}}',
])
def test_duplicate_keys(tmp_path: Path, text: str) -> None:
    line = assert_refused(tmp_path, write(tmp_path, "dup.json", text), "appears twice")
    assert "ambiguous" in line


def test_nan_is_not_json(tmp_path: Path) -> None:
    text = '{"version": "1", "rules": {"x": {"budget": {"max": NaN, "window": 60, "cost": "/n"}}}}'
    assert_refused(tmp_path, write(tmp_path, "nan.json", text), "NaN")


# --- YAML ---------------------------------------------------------------------------------------

def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = "version: '1'\nrules:\n  x: {action: deny\n  y: {action: allow}\n"
    assert_refused(tmp_path, write(tmp_path, "bad.yaml", text), "not valid YAML", "bad.yaml:")


def test_yaml_unknown_key_names_path_and_line(tmp_path: Path) -> None:
    text = "version: '1'\nrules:\n  list_models: {}\n  claude_request:\n    rate_limt: {max: 5, window: 60}\n"
    assert_refused(tmp_path, write(tmp_path, "typo.yaml", text), "typo.yaml:5:",
                   "at $.rules.claude_request", "unknown key 'rate_limt'")


def test_yaml_version_must_be_a_string(tmp_path: Path) -> None:
    assert_refused(tmp_path, write(tmp_path, "v.yml", "version: 1\n"), "at $.version", "must be '1'")


def test_yaml_invalid_argument_schema(tmp_path: Path) -> None:
    text = "version: '1'\nrules:\n  run:\n    arguments: {type: strnig}\n"
    assert_refused(tmp_path, write(tmp_path, "s.yaml", text), "not a valid JSON Schema",
                   "at $.rules.run.arguments.type")


def test_yaml_duplicate_keys(tmp_path: Path) -> None:
    text = "version: '1'\nrules:\n  llm_job_cancel: {action: deny}\n  llm_job_cancel: {action: allow}\n"
    assert_refused(tmp_path, write(tmp_path, "dup.yaml", text), "llm_job_cancel", "twice")


def test_error_names_the_file_as_given(tmp_path: Path) -> None:
    sub = tmp_path / "policies"
    sub.mkdir()
    write(sub, "p.json", pretty({"version": "1", "rules": {"x": {"action": "nope"}}}))
    proc, marker = run_guard(tmp_path, "policies/p.json")
    assert proc.returncode == 2
    assert error_line(proc).startswith("mcp-guard: error: policy error: policies/p.json")
    assert not marker.exists()
