"""Keywords in argument schemas say what they mean, or the policy does not load (issue 19 item 3).

A misspelled keyword (`enmu`), another draft's (`dependencies` in 2020-12) or a made-up one constrains
nothing; so does a draft named by `$schema` that is read as another. Through the binary: `check` reports
each as an error with the file, the line, the place and a "did you mean", and `run` stops with exit
status 2 before the server starts; a draft-07 `$schema` is honoured; annotation-only keywords are warned
about by `check` and at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from wireclient import WireProcess, guard_command

RECORDER = Path(__file__).resolve().parent / "servers" / "recording_server.py"


def mcp_guard(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MCP_GUARD_POLICY", "MCP_GUARD_AUDIT")}
    return subprocess.run([*guard_command(), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=env)


def write_policy(tmp_path: Path, arguments: Any) -> str:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"version": "1", "rules": {"run_command": {"arguments": arguments}}}, indent=2))
    return str(path)


CMD = {"type": "string", "enum": ["ls", "pwd"]}
BAD = [
    ({"type": "object", "properties": {"cmd": {"type": "string", "enmu": ["ls", "pwd"]}}},
     "$.rules.run_command.arguments.properties.cmd.enmu",
     "unknown JSON Schema keyword 'enmu' (did you mean 'enum'?): it would constrain nothing"),
    ({"type": "object", "properties": {"cmd": CMD}, "requried": ["cmd"]},
     "$.rules.run_command.arguments.requried",
     "unknown JSON Schema keyword 'requried' (did you mean 'required'?): it would constrain nothing"),
    ({"type": "object", "properties": {"cmd": CMD}, "additionalproperties": False},
     "$.rules.run_command.arguments.additionalproperties",
     "unknown JSON Schema keyword 'additionalproperties' (did you mean 'additionalProperties'?): it would "
     "constrain nothing"),
    ({"$defs": {"cmd": {"tpye": "string"}}, "properties": {"cmd": {"$ref": "#/$defs/cmd"}}},
     '$.rules.run_command.arguments["$defs"].cmd.tpye',
     "unknown JSON Schema keyword 'tpye' (did you mean 'type'?): it would constrain nothing"),
    ({"type": "object", "dependencies": {"force": ["reason"]}},
     "$.rules.run_command.arguments.dependencies",
     "'dependencies' is not a keyword of JSON Schema draft 2020-12, so it would constrain nothing (it is one of "
     "draft-04, draft-06, draft-07): use dependentRequired or dependentSchemas, or name that draft with "
     "\"$schema\""),
    ({"$schema": "http://json-schema.org/draft-03/schema#", "type": "object"},
     '$.rules.run_command.arguments["$schema"]',
     "$schema 'http://json-schema.org/draft-03/schema#' names no draft mcp-guard evaluates"),
    ({"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"c": CMD},
      "properties": {"cmd": {"$ref": "#/definitions/c", "maxLength": 2}}},
     "$.rules.run_command.arguments.properties.cmd.maxLength",
     "'maxLength' beside $ref is ignored in draft-07, so it would constrain nothing: put both in an allOf"),
]


@pytest.mark.parametrize(("arguments", "place", "problem"), BAD, ids=[case[1].rsplit(".", 1)[-1] for case in BAD])
def test_check_and_run_refuse_keywords_that_would_constrain_nothing(tmp_path, arguments, place, problem):
    path = write_policy(tmp_path, arguments)
    last_key = place.rsplit('["', 1)[-1][:-2] if place.endswith('"]') else place.rsplit(".", 1)[-1]
    line = next(number for number, text in enumerate(Path(path).read_text().splitlines(), 1)
                if json.dumps(last_key) + ":" in text)
    checked = mcp_guard("check", path)
    assert checked.returncode == 2, checked  # 2: invalid, as for run and explain
    assert checked.stderr.startswith(f"mcp-guard: error: policy error: {path}:{line}: at {place}: {problem}"), \
        checked.stderr
    marker = tmp_path / "server-started"
    ran = mcp_guard("run", "--policy", path, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert ran.returncode == 2, ran
    assert ran.stderr.startswith(f"mcp-guard: error: policy error: {path}:{line}: at {place}: {problem}"), ran.stderr
    assert not marker.exists(), "the server was started with a policy that does not load"


def test_property_names_and_defs_members_are_data_not_keywords(tmp_path):
    # A property may be called "enmu", "$ref" or "requried": names in `properties` are the caller's data.
    path = write_policy(tmp_path, {"type": "object", "properties": {
        "enmu": {"type": "string"}, "$ref": {"type": "string"}, "requried": {"type": "boolean"}},
        "$defs": {"format": {"type": "string"}}, "required": ["enmu"]})
    checked = mcp_guard("check", path)
    assert checked.returncode == 0 and checked.stdout.strip().endswith(f"{path}: OK"), checked


def test_a_draft_07_schema_is_evaluated_as_draft_07(tmp_path):
    # `dependencies` is draft-07's; read as 2020-12 it would be ignored and the call would pass.
    path = write_policy(tmp_path, {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                                   "dependencies": {"force": ["reason"]}})
    assert mcp_guard("check", path).returncode == 0
    record = tmp_path / "record.jsonl"
    proc = WireProcess([*guard_command(), "run", "--policy", path, "--", sys.executable, str(RECORDER)],
                       env={**os.environ, "RECORD_FILE": str(record), "TOOLS": "run_command"})
    try:
        proc.initialize()
        refused = proc.request(1, "tools/call", {"name": "run_command", "arguments": {"force": True}})
        assert refused["result"]["isError"] is True, refused
        assert refused["result"]["_meta"]["mcp-guard/decision"]["reason"] == \
            "the arguments: 'reason' is a dependency of 'force'"
        allowed = proc.request(2, "tools/call", {"name": "run_command",
                                                 "arguments": {"force": True, "reason": "tests"}})
        assert "mcp-guard/decision" not in json.dumps(allowed), allowed
    finally:
        proc.kill()


def test_annotation_only_keywords_are_warned_about_at_check_and_at_start(tmp_path):
    path = write_policy(tmp_path, {"type": "object", "properties": {
        "url": {"type": "string", "format": "uri"},
        "body": {"type": "string", "contentMediaType": "application/json"}}})
    checked = mcp_guard("check", path)
    assert checked.returncode == 1, checked
    warned = [line for line in checked.stdout.splitlines() if line.startswith(f"{path}: warning: ")]
    assert warned == [
        f"{path}: warning: rules.run_command.arguments.properties.url.format: 'format' is an annotation and "
        "constrains nothing (\"format\": \"uri\" accepts any string): use \"pattern\"",
        f"{path}: warning: rules.run_command.arguments.properties.body.contentMediaType: 'contentMediaType' is "
        "an annotation and constrains nothing: the content is not checked",
    ], checked.stdout
    proc = WireProcess([*guard_command(), "run", "--policy", path, "--", sys.executable, str(RECORDER)],
                       env={**os.environ, "TOOLS": "run_command"})
    try:
        proc.initialize()  # it starts: a warning, not an error
        assert "properties.url.format: 'format' is an annotation and constrains nothing" in proc.stderr
        assert "properties.body.contentMediaType: 'contentMediaType' is an annotation" in proc.stderr
    finally:
        proc.kill()
